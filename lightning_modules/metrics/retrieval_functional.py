"""The ranking metrics computed from a top-K relevance matrix (P@k, AP@k, R-precision, MRR, Recall@k, nDCG@k).

Every metric here is a pure function of ``rel_topk`` (``BoolTensor [Q, K]``: is the product at rank ``i`` relevant
to query ``q``, best rank first) and ``num_relevant`` (``[Q]``: how many relevant products the whole gallery holds,
called ``R``). Nothing else is needed, which is what makes the evaluation stream over a catalogue: a metric keeps
the top-K flags and a count, never the ``[Q, N]`` score matrix. The ranking itself, and its tie rule (score
descending, then product index ascending), is :mod:`.ranking`.

What torchmetrics does, for comparison (``torchmetrics.functional.retrieval``, checked against 1.9):

* ``retrieval_precision``, ``retrieval_average_precision``, ``retrieval_reciprocal_rank`` rank with
  ``preds.topk`` and ``retrieval_r_precision``, ``retrieval_recall`` with ``argsort(descending=True)``: neither is
  stable, so with ties the result depends on an unspecified order (on CPU it is *not* index order). On tie-free
  scores, and on ties whose members share a relevance label, those functions and ours agree exactly.
* ``retrieval_normalized_dcg`` averages the gain over each tie group (the scikit-learn convention: the expected
  DCG over all orders of the tie). :func:`ndcg_at_k` does the same when given the scores, so it matches
  torchmetrics with or without ties.
* All but R-precision and nDCG also treat a document whose score is ``<= 0`` as *not relevant*
  (``torch.where(preds > 0, target, 0)``). We do not: a similarity below zero is still a rank. Compare with
  positive (shifted) scores.

Example:
    >>> rel = torch.tensor([[True, False, True]])
    >>> precision_at_k(rel, 3), average_precision_at_k(rel, torch.tensor([2]), 3)
    (tensor([0.6667]), tensor([0.8333]))
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

APNormalization = Literal["hits", "min_r_k"]


def _pad_to(rel_topk: Tensor, k: int) -> Tensor:
    """Relevance of the first ``k`` ranks; ranks past the kept ranking count as not relevant."""
    if rel_topk.shape[1] >= k:
        return rel_topk[:, :k]
    return torch.nn.functional.pad(rel_topk, (0, k - rel_topk.shape[1]), value=False)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    den = den.to(num.dtype)
    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))


def hits_at_k(rel_topk: Tensor, k: int) -> Tensor:
    """Number of relevant products among the first ``k`` ranks, ``[Q]`` float."""
    return _pad_to(rel_topk, k).float().sum(dim=1)


def precision_at_k(rel_topk: Tensor, k: int) -> Tensor:
    """P@k = hits in the top ``k`` / ``k`` (torchmetrics ``retrieval_precision(top_k=k)``, ``adaptive_k=False``).

    Args:
        rel_topk: ``[Q, K]`` relevance of the ranked products, best first.
        k: cut-off.

    Returns:
        ``[Q]`` float.

    Example:
        >>> precision_at_k(torch.tensor([[True, False, True]]), 2)
        tensor([0.5000])
    """
    return hits_at_k(rel_topk, k) / k


def precision_ceiling_at_k(num_relevant: Tensor, k: int) -> Tensor:
    """The best P@k any system can reach: ``min(R, k) / k``.

    A query with 2 relevant products cannot score P@10 above 0.2; report this next to P@k so a low number on
    small categories is read as a property of the catalogue, not of the model.

    Example:
        >>> precision_ceiling_at_k(torch.tensor([2, 50]), 10)
        tensor([0.2000, 1.0000])
    """
    return num_relevant.clamp(max=k).float() / k


def average_precision_at_k(
    rel_topk: Tensor, num_relevant: Tensor, k: int, normalization: APNormalization = "hits"
) -> Tensor:
    """AP@k: the mean of P@i over the ranks ``i <= k`` that hold a relevant product.

    Two normalisations are in use and they differ only in the denominator of that mean:

    * ``"hits"`` (default): divide by the number of relevant products *retrieved* in the top ``k``. This is
      exactly torchmetrics ``retrieval_average_precision(top_k=k)`` (and so ``RetrievalMAP(top_k=k)``): it takes
      the positions of the relevant items among the top ``k`` and averages ``j / position_j``. A system that puts
      one relevant product at rank 1 and nothing else scores 1.0.
    * ``"min_r_k"``: divide by ``min(R, k)``, the most hits possible. Missing relevant products are penalised
      (the recommender-systems ``apk`` convention). Always ``<=`` the ``"hits"`` value.

    Queries with no hit in the top ``k`` score 0 either way.

    Args:
        rel_topk: ``[Q, K]`` relevance of the ranked products, best first.
        num_relevant: ``[Q]`` ``R``, relevant products in the whole gallery (used by ``"min_r_k"``).
        k: cut-off.
        normalization: ``"hits"`` or ``"min_r_k"``.

    Returns:
        ``[Q]`` float.

    References:
        torchmetrics ``retrieval_average_precision``; Manning, Raghavan, Schuetze, *Introduction to Information
        Retrieval*, 8.4 (mean average precision).

    Example:
        >>> rel = torch.tensor([[False, True, False, True]])
        >>> average_precision_at_k(rel, torch.tensor([4]), 4)  # (1/2 + 2/4) / 2 hits
        tensor([0.5000])
        >>> average_precision_at_k(rel, torch.tensor([4]), 4, normalization="min_r_k")  # (1/2 + 2/4) / 4
        tensor([0.2500])
    """
    r = _pad_to(rel_topk, k).float()
    ranks = torch.arange(1, k + 1, device=r.device, dtype=r.dtype)
    summed = (r.cumsum(dim=1) / ranks * r).sum(dim=1)
    if normalization == "hits":
        return _safe_div(summed, r.sum(dim=1))
    if normalization == "min_r_k":
        return _safe_div(summed, num_relevant.clamp(max=k))
    raise ValueError(f"unknown AP normalization {normalization!r}; expected 'hits' or 'min_r_k'")


def r_precision(rel_topk: Tensor, num_relevant: Tensor) -> Tensor:
    """R-precision: hits among the first ``R`` ranks / ``R`` (torchmetrics ``retrieval_r_precision``).

    Cap: when ``R`` exceeds the kept ranking ``K = rel_topk.shape[1]`` only the first ``K`` ranks are seen, so the
    value is ``hits@K / R`` -- a lower bound of the true R-precision, whose maximum is ``K / R``. Keep ``K`` (the
    metric's ``max_rank``) at least as large as the biggest category you report R-precision on.

    Returns:
        ``[Q]`` float, 0 where ``R == 0``.

    Example:
        >>> r_precision(torch.tensor([[True, False, True, True]]), torch.tensor([3]))
        tensor([0.6667])
    """
    ranks = torch.arange(rel_topk.shape[1], device=rel_topk.device)
    within = ranks[None, :] < num_relevant[:, None]
    return _safe_div((rel_topk & within).float().sum(dim=1), num_relevant)


def reciprocal_rank(rel_topk: Tensor) -> Tensor:
    """Reciprocal rank of the first relevant product (torchmetrics ``retrieval_reciprocal_rank(top_k=K)``).

    Cap: a query whose first relevant product lies below the kept ranking ``K`` scores 0 (as if none existed), so
    MRR is MRR@K. With ``K = 1000`` the difference to the uncapped value is below ``1e-3`` per query.

    Returns:
        ``[Q]`` float.

    Example:
        >>> reciprocal_rank(torch.tensor([[False, False, True], [False, False, False]]))
        tensor([0.3333, 0.0000])
    """
    found = rel_topk.any(dim=1)
    first = rel_topk.float().argmax(dim=1).float()
    return torch.where(found, 1.0 / (first + 1.0), torch.zeros_like(first))


def recall_at_k(rel_topk: Tensor, num_relevant: Tensor, k: int) -> Tensor:
    """Recall@k = hits in the top ``k`` / ``R`` (torchmetrics ``retrieval_recall(top_k=k)``); 0 where ``R == 0``.

    Example:
        >>> recall_at_k(torch.tensor([[True, False, True]]), torch.tensor([4]), 2)
        tensor([0.2500])
    """
    return _safe_div(hits_at_k(rel_topk, k), num_relevant)


def tie_averaged_gains(rel_topk: Tensor, scores_topk: Tensor) -> Tensor:
    """Replace each rank's 0/1 gain by the mean gain of its tie group (runs of equal scores).

    This is the expected gain of that rank over all orders of the tie (scikit-learn's ``_tie_average_dcg``, which
    torchmetrics ``retrieval_normalized_dcg`` translates). Exact when every tie group is complete inside the
    ranking; a group that runs past the last kept rank is averaged over its kept members only.

    Example:
        >>> tie_averaged_gains(torch.tensor([[True, False, False]]), torch.tensor([[0.9, 0.9, 0.1]]))
        tensor([[0.5000, 0.5000, 0.0000]])
    """
    new_group = torch.ones_like(rel_topk)
    new_group[:, 1:] = scores_topk[:, 1:] != scores_topk[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1
    gains = torch.zeros(rel_topk.shape, dtype=torch.float32, device=rel_topk.device)
    counts = torch.zeros_like(gains)
    gains.scatter_add_(1, group, rel_topk.float())
    counts.scatter_add_(1, group, torch.ones_like(gains))
    return (gains / counts.clamp(min=1)).gather(1, group)


def ndcg_at_k(rel_topk: Tensor, num_relevant: Tensor, k: int, scores_topk: Tensor | None = None) -> Tensor:
    """nDCG@k with binary gains: ``DCG@k / IDCG@k`` (torchmetrics ``retrieval_normalized_dcg(top_k=k)``).

    ``DCG@k = sum_{i<k} gain_i / log2(i + 2)`` (rank ``i`` counted from 0), and the ideal ``IDCG@k`` puts all
    ``min(R, k)`` relevant products first. With ``scores_topk`` the gains are tie-averaged
    (:func:`tie_averaged_gains`) exactly as torchmetrics does, so the value does not depend on how ties were
    ordered; without it the ranking order is taken as is.

    Args:
        rel_topk: ``[Q, K]`` relevance of the ranked products, best first.
        num_relevant: ``[Q]`` ``R``.
        k: cut-off.
        scores_topk: ``[Q, K]`` the ranked scores (for tie averaging) or None.

    Returns:
        ``[Q]`` float, 0 where ``R == 0``.

    Example:
        >>> ndcg_at_k(torch.tensor([[False, True]]), torch.tensor([1]), 2)  # (1 / log2 3) / 1
        tensor([0.6309])
    """
    gains = rel_topk.float() if scores_topk is None else tie_averaged_gains(rel_topk, scores_topk)
    gains = _pad_to(gains, k)
    discount = 1.0 / torch.log2(torch.arange(k, device=gains.device, dtype=torch.float32) + 2.0)
    dcg = (gains * discount).sum(dim=1)
    ideal_cum = torch.cat([discount.new_zeros(1), discount.cumsum(dim=0)])
    idcg = ideal_cum[num_relevant.clamp(min=0, max=k).long()]
    return _safe_div(dcg, idcg)
