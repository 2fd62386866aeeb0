"""Exact chunked top-k retrieval under one tie rule: the ranking every retrieval path shares.

:func:`running_topk` scores queries against a gallery chunk by chunk and keeps, per query, the ``k`` best products,
so memory is ``O(Q * (k + chunk))`` however large the gallery is. :func:`select_topk` and :func:`truncate_ranking`
are its building blocks (the retrieval metric and the search index use them too); :func:`score_chunk` is the dot
product they rank. The metrics computed from a ranking are in :mod:`.retrieval_functional`.

Tie rule
--------
Equal scores are ranked by **product index, lower first** (the order products arrived in, or the global index the
caller gives). The rule is applied everywhere (inside a chunk, across chunks, across merged DDP ranks), so a
ranking is a pure function of the scores and the indices: batch boundaries never change a metric. How this
compares with torchmetrics' ranking is in :mod:`.retrieval_functional`.

Example:
    >>> q = torch.tensor([[1.0, 0.0]])
    >>> products = torch.tensor([[0.1, 0.0], [0.9, 0.0], [0.5, 0.0], [0.9, 0.0]])
    >>> scores, index = running_topk(q, products, k=3, chunk_size=2)
    >>> index.tolist()  # 1 and 3 tie at 0.9: the lower index ranks first
    [[1, 3, 2]]
"""

from __future__ import annotations

import torch
from torch import Tensor

PAD_INDEX = torch.iinfo(torch.int64).max
"""Index of an empty ranking slot (fewer products than ``k`` seen so far). Its score is ``-inf``; it loses every
tie, so a real product scored ``-inf`` still ranks above padding."""


def ranking_order(scores: Tensor, index: Tensor) -> Tensor:
    """Permutation sorting each row by score descending, ties by index ascending (the tie rule).

    Two stable sorts: first by index, then (stable) by score, so equal scores keep ascending index order.

    Args:
        scores: ``[Q, M]`` scores.
        index: ``[Q, M]`` or ``[M]`` product indices (the tie-break key).

    Returns:
        ``LongTensor [Q, M]``: ``scores.gather(1, perm)`` is the ranking.

    Example:
        >>> ranking_order(torch.tensor([[0.5, 0.9, 0.9]]), torch.tensor([7, 9, 8])).tolist()
        [[2, 1, 0]]
    """
    index = index.expand_as(scores)
    by_index = torch.argsort(index, dim=1, stable=True)
    by_score = torch.argsort(scores.gather(1, by_index), dim=1, descending=True, stable=True)
    return by_index.gather(1, by_score)


def _exact_topk(scores: Tensor, k: int, index: Tensor) -> tuple[Tensor, Tensor]:
    """Top-``k`` columns of every row under the tie rule; ``index`` is ``[M]`` or ``[Q, M]``."""
    m = scores.shape[1]
    if k >= m:
        perm = ranking_order(scores, index)
        return scores.gather(1, perm), perm
    values, positions = torch.topk(scores, k + 1, dim=1)
    # topk's values are exact and sorted; only equal values can be in the wrong order (or, at the boundary, the
    # wrong subset). Rows with an equal neighbour among the k + 1 are redone exactly: every item scoring at least
    # the k-th value is a candidate (topk of the largest such count takes them all), then lexsort the candidates.
    tied = (values[:, 1:] == values[:, :-1]).any(dim=1)
    values, positions = values[:, :k], positions[:, :k]
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        sub = scores[rows]
        num_candidates = int((sub >= values[rows, k - 1 :]).sum(dim=1, dtype=torch.int32).max())
        cand_values, cand_positions = torch.topk(sub, num_candidates, dim=1)
        cand_index = index[cand_positions] if index.dim() == 1 else index[rows].gather(1, cand_positions)
        perm = ranking_order(cand_values, cand_index)[:, :k]
        positions = positions.index_copy(0, rows, cand_positions.gather(1, perm))
        values = values.index_copy(0, rows, cand_values.gather(1, perm))
    return values, positions


def truncate_ranking(scores: Tensor, index: Tensor, *carry: Tensor, k: int) -> tuple[Tensor, ...]:
    """Rank the rows of an unordered candidate pool by the tie rule and keep the best ``k`` of each.

    This is the merge step of a streaming top-k: concatenate the running buffer with the new chunk's best (or the
    buffers of several DDP ranks) along dim 1 and truncate. Uses ``torch.topk`` and falls back to the full stable
    lexsort only on rows with equal scores (see :func:`select_topk`).

    Args:
        scores: ``[Q, M]`` candidate scores.
        index: ``[Q, M]`` their product indices.
        *carry: further ``[Q, M]`` tensors permuted alongside (e.g. relevance flags).
        k: how many to keep (``min(k, M)`` are kept).

    Returns:
        ``(scores, index, *carry)``, each ``[Q, min(k, M)]``, best first.
    """
    index = index.expand_as(scores)
    values, perm = _exact_topk(scores, k, index)
    return (values, *(t.gather(1, perm) for t in (index, *carry)))


def select_topk(
    scores: Tensor, k: int, index: Tensor | None = None, floor: Tensor | None = None, block: int = 16
) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` of every row under the tie rule (score descending, then index ascending).

    ``torch.topk`` alone is exact on values but, among equal values, returns an unspecified subset in an
    unspecified order. We ask it for ``k + 1`` (sorted): when no two neighbours among them are equal, the top-``k``
    set is unique and already in order -- the common case on continuous scores, at the cost of one ``topk``.
    Rows with an equal pair are redone exactly: every item scoring at least the ``k``-th value is a candidate, and
    the candidates are sorted by (score desc, index asc) (:func:`ranking_order`).

    **Pruning with a floor** (streaming). A caller that already holds ``k`` items scoring ``>= floor[q]`` only needs
    this chunk's items scoring ``>= floor[q]``. Then the row is cut into blocks of ``block`` columns (strided:
    block ``j`` holds columns ``j, j + N // block, ...``), each block's maximum is taken (one cheap vectorised
    pass), and only blocks whose maximum reaches the floor are gathered and ranked. Past the first chunks of a stream that is a few percent of the columns, so ``topk`` over the whole
    chunk -- otherwise the main cost after the matmul -- is avoided. The result is then exact for every item scoring
    ``>= floor[q]``; slots after those hold lower-scoring items of the chunk, which a merge with the caller's ``k``
    items discards. Rows whose floor is ``-inf`` (buffer not yet full) prune nothing, and when too many blocks
    qualify the plain path runs.

    Args:
        scores: ``[Q, N]`` scores of one chunk.
        k: how many to keep; ``min(k, N)`` columns are returned.
        index: ``[N]`` tie-break key of the columns (default: column position).
        floor: ``[Q]`` score below which items are not needed, or None for the plain exact top-``k``.
        block: columns per block for the pruning.

    Returns:
        ``(values [Q, k'], positions [Q, k'])``: ``positions`` are column positions in ``scores``.

    Example:
        >>> select_topk(torch.tensor([[1.0, 3.0, 3.0, 3.0]]), 2)[1].tolist()
        [[1, 2]]
    """
    q, n = scores.shape
    if index is None:
        index = torch.arange(n, device=scores.device)
    num_blocks = n // block
    if floor is None or num_blocks < 8 or k >= n:
        return _exact_topk(scores, k, index)
    # Block j is the strided column set {j, j + num_blocks, j + 2 * num_blocks, ...}: its maximum is an elementwise
    # max of `block` contiguous row segments, which vectorises far better than reducing 16 adjacent columns.
    row_stride, col_stride = scores.stride()
    segments = scores.as_strided(
        (q, block, num_blocks), (row_stride, num_blocks * col_stride, col_stride), scores.storage_offset()
    )
    block_max = segments.amax(dim=1)  # [Q, num_blocks]; the tail (< block columns) is always a candidate
    needed = int((block_max >= floor[:, None]).sum(dim=1, dtype=torch.int32).max())
    needed = max(needed, -(-(k + 1) // block))
    if needed * block > n // 4:
        return _exact_topk(scores, k, index)
    _, blocks = torch.topk(block_max, needed, dim=1)  # a superset of the blocks reaching the floor
    offsets = torch.arange(block, device=scores.device) * num_blocks
    columns = (blocks.unsqueeze(2) + offsets).reshape(q, needed * block)
    tail = torch.arange(num_blocks * block, n, device=scores.device)
    if tail.numel():
        columns = torch.cat([columns, tail.expand(q, -1)], dim=1)
    values, picked = _exact_topk(scores.gather(1, columns), k, index[columns])
    return values, columns.gather(1, picked)


def score_chunk(query_emb: Tensor, product_emb: Tensor, out: Tensor | None = None) -> Tensor:
    """Dot-product scores ``query_emb @ product_emb.T`` in at least float32, optionally into a reused buffer.

    Reusing ``out`` matters on CPU: a fresh ``[Q, chunk]`` block is page-faulted in on every allocation (the C
    allocator hands large blocks back to the OS), which can cost more than the matmul itself. Autocast is switched
    off here, so a validation loop under ``bf16-mixed`` still ranks on float32 scores (fewer spurious ties).

    Args:
        query_emb: ``[Q, D]``.
        product_emb: ``[B, D]`` (float16 features are upcast chunk by chunk).
        out: a 1-D float buffer with at least ``Q * B`` elements, or None.

    Returns:
        ``[Q, B]`` scores (a view of ``out`` when given).
    """
    dtype = torch.promote_types(torch.promote_types(query_emb.dtype, product_emb.dtype), torch.float32)
    q, p = query_emb.to(dtype), product_emb.to(dtype)
    with torch.autocast(device_type=q.device.type, enabled=False):
        if (
            out is None
            or out.dtype != dtype
            or out.device != q.device
            or out.numel() < q.shape[0] * p.shape[0]
        ):
            return q @ p.T
        view = out[: q.shape[0] * p.shape[0]].view(q.shape[0], p.shape[0])
        return torch.matmul(q, p.T, out=view)


def running_topk(
    query_emb: Tensor, product_emb: Tensor, k: int, chunk_size: int = 65536, index_offset: int = 0
) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` products per query by dot product, streaming the gallery in chunks.

    For each chunk of ``chunk_size`` products: score ``[Q, chunk]``, keep its top ``k`` (:func:`select_topk`), merge
    with the running best (:func:`truncate_ranking`). Peak memory is one ``[Q, chunk]`` score block plus the
    ``[Q, 2k]`` merge, independent of the gallery size. Equal to a full sort of ``query_emb @ product_emb.T``
    with ties broken by lower product index.

    Args:
        query_emb: ``[Q, D]`` query embeddings.
        product_emb: ``[N, D]`` product embeddings (any indexable of rows: a tensor or a memory-mapped array
            converted chunk by chunk with ``torch.as_tensor``).
        k: ranking depth.
        chunk_size: products scored at once; memory ``~ 4 * Q * chunk_size`` bytes.
        index_offset: added to the returned indices (the gallery position of ``product_emb[0]``).

    Returns:
        ``(scores [Q, min(k, N)], indices [Q, min(k, N)])``, best first.

    Example:
        >>> s, i = running_topk(torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]]), k=2)
        >>> i.tolist()
        [[2, 1], [0, 1]]
    """
    if k < 1 or chunk_size < 1:
        raise ValueError(f"k and chunk_size must be >= 1, got k={k}, chunk_size={chunk_size}")
    nq, n = query_emb.shape[0], len(product_emb)
    best_scores = torch.empty(nq, 0, device=query_emb.device)
    best_index = torch.empty(nq, 0, dtype=torch.long, device=query_emb.device)
    scratch: Tensor | None = None
    for start in range(0, n, chunk_size):
        chunk = torch.as_tensor(product_emb[start : start + chunk_size], device=query_emb.device)
        if scratch is None and query_emb.device.type == "cpu":
            dtype = torch.promote_types(torch.promote_types(query_emb.dtype, chunk.dtype), torch.float32)
            scratch = torch.empty(nq * min(chunk_size, n), dtype=dtype)
        scores = score_chunk(query_emb, chunk, out=scratch)
        floor = best_scores[:, k - 1] if best_scores.shape[1] >= k else None
        values, positions = select_topk(scores, k, floor=floor)
        best_scores = torch.cat([best_scores, values.to(best_scores.dtype)], dim=1)
        best_index = torch.cat([best_index, positions + start], dim=1)
        best_scores, best_index = truncate_ranking(best_scores, best_index, k=k)
    return best_scores, best_index + index_offset
