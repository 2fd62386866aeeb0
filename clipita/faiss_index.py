"""The approximate FAISS index ``clipita index --faiss true`` builds beside the exact one (HNSW or IVF-Flat, inner
product), filled chunk by chunk from the index shards, and how a search uses it: as a candidate generator whose
best :func:`faiss_depth` products by the dense dot product are re-ranked with the model's full score
(:func:`rerank_topk`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from lightning_modules.metrics.retrieval_functional import truncate_ranking

FAISS_NAME = "faiss.index"
FaissKind = Literal["hnsw", "ivf"]
ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
FAISS_DEPTH_PER_RESULT = 10  # FAISS candidates re-ranked per requested result ...
FAISS_MIN_DEPTH = 200  # ... and at least this many


def faiss_depth(k: int, depth: int | None = None) -> int:
    """FAISS candidates re-ranked by the full score for ``k`` results: ``depth`` when given (at least ``k``), else
    ``max(10 k, 200)`` (``benchmarks/bench_faiss_rerank.py`` measures the recall of the exact top 10 per depth)."""
    if depth is not None and depth < 1:
        raise ValueError(f"faiss_depth must be >= 1, got {depth}")
    return max(k, depth if depth is not None else max(FAISS_DEPTH_PER_RESULT * k, FAISS_MIN_DEPTH))


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: ``~4 sqrt(n)``, but at least 39 training points per list, and >= 1."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def build_faiss_index(
    embeddings: np.ndarray,
    kind: FaissKind = "hnsw",
    hnsw_m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    nlist: int | None = None,
    nprobe: int | None = None,
    train_size: int = 100_000,
    seed: int = 0,
    add_chunk: int = 65536,
) -> tuple[Any, dict[str, Any]]:
    """An inner-product FAISS index over ``embeddings`` (float32 ``[N, D]``).

    Args:
        embeddings: the retrieval vectors (inner product = the model's dense score): an array or the index's
            :class:`~clipita.index_shards.ShardedRows`, read ``add_chunk`` rows at a time.
        kind: ``hnsw`` (``IndexHNSWFlat``: graph, no training) or ``ivf`` (``IndexIVFFlat``: k-means lists).
        hnsw_m: HNSW neighbours per node.
        ef_construction: HNSW build-time beam.
        ef_search: HNSW query-time beam (stored; ``clipita search --ef_search`` overrides).
        nlist: IVF lists (default :func:`default_nlist`).
        nprobe: IVF lists scanned per query (default ``max(1, nlist // 16)``, at least 8 when there are that many).
        train_size: IVF k-means sample size.
        seed: IVF training sample seed.
        add_chunk: rows added to the index at once.

    Returns:
        ``(index, params)``; ``params`` go into ``index.json``.
    """
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("a FAISS index needs faiss-cpu: pip install 'clipita[faiss]'") from exc
    n, d = embeddings.shape

    def add_all(index: Any) -> None:  # chunk by chunk: the float32 rows are never all resident
        for start in range(0, n, add_chunk):
            index.add(np.ascontiguousarray(embeddings[start : start + add_chunk], dtype=np.float32))

    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        add_all(index)
        params = {"kind": kind, "m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
    elif kind == "ivf":
        nlist = nlist or default_nlist(n)
        nprobe = nprobe or min(nlist, max(8, nlist // 16))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rows = np.arange(n)
        if n > train_size:
            rows = np.sort(np.random.default_rng(seed).choice(n, train_size, replace=False))
        index.train(np.ascontiguousarray(embeddings[rows], dtype=np.float32))
        add_all(index)
        index.nprobe = nprobe
        params = {"kind": kind, "nlist": nlist, "nprobe": nprobe}
    else:
        raise ValueError(f"unknown FAISS index kind {kind!r}; expected 'hnsw' or 'ivf'")
    params.update({"file": FAISS_NAME, "metric": "inner_product", "ntotal": int(index.ntotal)})
    return index, params


def rerank_topk(
    query_emb: torch.Tensor,
    candidates: np.ndarray,
    embeddings: Any,
    tokens: Any,
    k: int,
    score: ScoreFn | None,
    chunk_size: int = 65536,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each query's ``candidates`` (``[Q, M]`` product rows, ``-1`` = none) by ``score`` (a plain dot
    product when None), under the exact scan's tie rule (equal scores rank by lower row).

    The candidates of all queries are scored together, ``chunk_size`` distinct rows at a time (``[Q, chunk]``
    scores, as the exact scan), and each query keeps its own. Missing candidates stay row ``-1`` (score ``-inf``),
    ranked last.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    valid = candidates >= 0
    unique = np.unique(candidates[valid])
    position = np.searchsorted(unique, np.where(valid, candidates, 0))  # each candidate's place in ``unique``
    scores = torch.full(candidates.shape, float("-inf"))
    queries = query_emb.float()
    for start in range(0, len(unique), chunk_size):
        rows = unique[start : start + chunk_size]
        vectors = torch.as_tensor(np.asarray(embeddings[rows]), dtype=torch.float32)
        if score is None:
            chunk = queries @ vectors.T
        else:
            chunk = score(queries, vectors, torch.as_tensor(np.asarray(tokens[rows])))
        q, c = np.nonzero(valid & (position >= start) & (position < start + len(rows)))
        scores[q, c] = chunk.float().cpu()[q, position[q, c] - start]
    return truncate_ranking(scores, torch.from_numpy(candidates), k=min(k, candidates.shape[1]))
