"""The approximate FAISS index ``clipita index --faiss true`` builds beside the exact one (HNSW or IVF-Flat, inner
product), filled chunk by chunk from the index shards, and how a search uses it: as a candidate generator whose
best :func:`faiss_depth` products by the dense dot product are re-ranked with the model's full score
(:func:`rerank_topk`).

When the full score has a BM25 term (a checkpoint with a non-zero lexical weight), products that only a strong
lexical match lifts into the top ``k`` are not among the dense candidates. So the candidates are then the union of
FAISS's and the *lexical candidates* (:func:`lexical_candidates`): each query's best ``faiss_depth`` products by the
BM25 term alone, among the products holding at least one of its tokens (the only ones whose term is > 0). They are
found by a scan of the index's memory-mapped ``lexical_tokens`` (integer work, chunk by chunk, scoring only the rows
holding a query token), not an inverted index: the token arrays are already there, and nothing is added to the index
format. The union holds the exact top ``k`` whenever FAISS returns the dense top ``depth`` and a query's products with
a lexical match are at most ``depth``: a product with no match scores its dense part alone, so if it ranks in the
exact top ``k`` it ranks there by the dense part too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from clipita_core.index_info import FAISS_NAME
from lightning_modules.metrics.ranking import select_topk, truncate_ranking
from lightning_modules.scoring import LexicalQuery

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
            :class:`~clipita.retrieval.index_shards.ShardedRows`, read ``add_chunk`` rows at a time.
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


@dataclass(frozen=True)
class LexicalTerm:
    """The BM25 term of a batch of queries' full score, ``weight * bm25n`` (``ClipIta.score``'s lexical part), as
    lexical candidates rank by it.

    Attributes:
        signal: the model's :class:`~lightning_modules.lexical.LexicalSignal` (the frozen corpus statistics).
        query: the queries' lexical side, ``(vocabulary [V], idf weights [Q, V], weight [Q])``
            (``ClipIta.lexical_query``).
    """

    signal: Any
    query: LexicalQuery

    def __len__(self) -> int:
        return len(self.query[2])

    @property
    def vocab(self) -> np.ndarray:
        """The token ids of the queries whose lexical weight is non-zero: a product holding none of them has a zero
        term for every query."""
        vocab, idf, weight = self.query
        live = (idf[weight != 0] > 0).any(dim=0)
        return vocab[live].cpu().numpy()

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[Q, c]`` terms of products' token rows ``[c, L]`` (``-1`` padded)."""
        vocab, idf, weight = self.query
        return weight.float()[:, None] * self.signal.scores((vocab, idf), tokens).float()


def lexical_candidates(lexical: LexicalTerm, tokens: Any, depth: int, chunk_size: int = 65536) -> np.ndarray:
    """``[Q, depth']`` product rows (``-1`` = none): each query's best ``depth`` products by its BM25 term alone
    (under the tie rule: equal terms rank by lower row), among those whose term is > 0 (they hold one of its tokens;
    a query of lexical weight 0 gets none).

    ``tokens`` (the index's ``[N, L]`` token rows, memory-mapped) are read ``chunk_size`` rows at a time; a chunk's
    rows holding no query token are dropped by an integer test, only the rest are scored (``[Q, matches]``), and a
    running top ``depth`` per query is kept: memory ``O(Q * (depth + chunk_size))`` whatever the index size.
    """
    vocab = lexical.vocab
    live = (lexical.query[2] != 0).cpu()  # the queries with a BM25 term: only they are scored
    best_scores = torch.empty(int(live.sum()), 0)
    best_rows = torch.empty(int(live.sum()), 0, dtype=torch.long)
    for start in range(0, len(tokens) if len(vocab) else 0, chunk_size):
        block = np.asarray(tokens[start : start + chunk_size])
        hit = np.flatnonzero(np.isin(block, vocab).any(axis=1))
        if len(hit) == 0:
            continue
        term = lexical(torch.as_tensor(block[hit], dtype=torch.long)).cpu()[live]
        term = torch.where(term > 0, term, float("-inf"))
        values, positions = select_topk(term, min(depth, len(hit)))
        best_scores = torch.cat([best_scores, values], dim=1)
        best_rows = torch.cat([best_rows, torch.from_numpy(hit + start)[positions]], dim=1)
        best_scores, best_rows = truncate_ranking(best_scores, best_rows, k=depth)
    out = torch.full((len(lexical), best_rows.shape[1]), -1, dtype=torch.long)
    out[live] = torch.where(best_scores > float("-inf"), best_rows, -1)
    return out.numpy()


def union_candidates(*candidates: np.ndarray) -> np.ndarray:
    """The per-query union of candidate row arrays (``[Q, M_i]``, ``-1`` = none) as one ``[Q, sum M_i]`` array,
    each row listed once (repeats and missing ones as ``-1``)."""
    merged = np.sort(np.concatenate([np.asarray(c, dtype=np.int64) for c in candidates], axis=1), axis=1)
    repeat = np.zeros(merged.shape, dtype=bool)
    repeat[:, 1:] = merged[:, 1:] == merged[:, :-1]
    return np.where(repeat, -1, merged)


def with_lexical_candidates(
    candidates: np.ndarray, lexical: LexicalTerm, tokens: Any, depth: int, chunk_size: int = 65536
) -> np.ndarray:
    """FAISS's ``candidates`` (``[Q, M]``) joined by each query's :func:`lexical_candidates` (best ``depth``)."""
    return union_candidates(candidates, lexical_candidates(lexical, tokens, depth, chunk_size))
