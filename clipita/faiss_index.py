"""The approximate FAISS index ``clipita index --faiss true`` builds beside the exact one (HNSW or IVF-Flat, inner
product), filled chunk by chunk from the index shards."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

FAISS_NAME = "faiss.index"
FaissKind = Literal["hnsw", "ivf"]


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
