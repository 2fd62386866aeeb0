"""Hierarchy consistency of a category-to-image ranking: are the products a model retrieves for a leaf also the
ones it retrieves for the leaf's ancestors?

A taxonomy says every "Sneakers" product is a "Shoes" product and a "Footwear" product. A consistent retrieval
model agrees: what it ranks on top for "Sneakers" it also ranks high for "Shoes" and for "Footwear". Per-query
metrics cannot see this (each query is scored alone); this measure can. It transfers the idea of ProTeCt's
*hierarchical consistent accuracy* (HCA: a prediction counts only when it is right at every level of the taxonomy)
from classification to retrieval.

**Definition.** Let ``T_k(q)`` be the top ``k`` products of query ``q``'s ranking, ``R(a)`` the number of products
of the gallery relevant to an ancestor ``a`` (hierarchical relevance: the products under ``a``), ``K`` the ranking
depth kept, and ``k'(a) = min(K, max(k, R(a)))`` -- the ancestor's R-precision cut-off, at least ``k``. For a leaf
query ``q`` with strict ancestors ``A(q)`` (its path without itself; at least one) and ``T_k(q)`` not empty,

    HC@k(q) = |{p in T_k(q) : p in T_{k'(a)}(a) for every a in A(q)}| / |T_k(q)|

the share of the leaf's top-``k`` products that every ancestor also retrieves within its own cut-off. A model that
ranks each node's products first everywhere scores 1 (the leaf's top ``k`` are its products, which fill the first
``R(a)`` places of each ancestor's ranking). ``HC@k`` is NaN for inner nodes, top-level leaves and empty rankings.
When ``R(a) > K`` the cut-off is ``K`` and ``HC@k`` a lower bound. A product retrieved for the leaf but *wrong* for
it still counts as consistent when the ancestors retrieve it too: this measures agreement across levels, not
accuracy (P@k and mAP@k do that).

**Per tree.** :func:`per_tree_consistency` averages ``HC@k`` over the leaves of each top-level category (a tree of
the forest); a row's single number is the mean over trees (macro: every tree weighs the same).

References:
    Tz-Ying Wu, Chih-Hui Ho, Nuno Vasconcelos. *ProTeCt: Prompt Tuning for Taxonomic Open Set Classification.*
    CVPR 2024 (hierarchical consistent accuracy, HCA).

Example:
    >>> # table: 0 "A", 1 "B", 2 "A > x", 3 "A > y"; products 0, 1: "A > x", 2: "A > y", 3: "B"
    >>> ranking = torch.tensor([[0, 3, 2, 1], [3, 0, 1, 2], [1, 0, 2, 3], [2, 0, 1, 3]])  # per row, best first
    >>> ancestors = torch.tensor([[0, -1], [1, -1], [0, 2], [0, 3]])
    >>> hc = hierarchy_consistency(ranking, ancestors, torch.tensor([3, 1, 2, 1]), k=1)
    >>> hc.tolist()  # "A"'s top R(A) = 3 is {0, 3, 2}: it misses product 1, the top of "A > x"
    [nan, nan, 0.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .ranking import PAD_INDEX


def hierarchy_consistency(
    ranking: Tensor,
    query_ancestors: Tensor,
    num_relevant: Tensor,
    k: int = 10,
    leaf_mask: Tensor | None = None,
) -> Tensor:
    """``[Q]`` HC@k of every leaf query (NaN elsewhere); see the module docstring for the definition.

    Args:
        ranking: ``[Q, K]`` ranked product indices per category-table row, best first (``PAD_INDEX`` or negative =
            empty slot), e.g. ``CategoryRetrievalMetrics.ranking()[1]`` with every table row a query.
        query_ancestors: ``[Q, L]`` the table ids of each row's path, root first, the row itself last, ``-1``
            padded (``CategoryTree.ancestor_matrix``).
        num_relevant: ``[Q]`` relevant products per row in the gallery (``R``).
        k: the leaf's cut-off.
        leaf_mask: ``[Q]`` which rows are leaves (default: rows that are no other row's ancestor).
    """
    ranking = torch.as_tensor(ranking, dtype=torch.long).cpu()
    anc = torch.as_tensor(query_ancestors, dtype=torch.long).cpu()
    r = torch.as_tensor(num_relevant, dtype=torch.long).cpu()
    q, depth_k = ranking.shape
    if anc.shape[0] != q or r.shape != (q,):
        raise ValueError(
            f"ranking has {q} rows but query_ancestors {anc.shape[0]} and num_relevant {tuple(r.shape)}"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if leaf_mask is None:
        depth = (anc >= 0).sum(dim=1)
        inner = torch.zeros(q, dtype=torch.bool)
        for row in range(q):
            parents = anc[row, : max(0, int(depth[row]) - 1)]
            inner[parents[parents >= 0]] = True
        leaf_mask = ~inner
    leaf_mask = torch.as_tensor(leaf_mask, dtype=torch.bool).cpu()
    out = torch.full((q,), float("nan"), dtype=torch.float64)
    for row in leaf_mask.nonzero().flatten().tolist():
        path = anc[row][anc[row] >= 0]
        ancestors = path[:-1].tolist()
        top = ranking[row, :k]
        top = top[(top >= 0) & (top != PAD_INDEX)]
        if not ancestors or top.numel() == 0:
            continue
        consistent = torch.ones(top.numel(), dtype=torch.bool)
        for a in ancestors:
            cutoff = min(depth_k, max(k, int(r[a])))
            retrieved = ranking[a, :cutoff]
            consistent &= torch.isin(top, retrieved[(retrieved >= 0) & (retrieved != PAD_INDEX)])
        out[row] = consistent.double().mean()
    return out


def per_tree_consistency(values: Tensor, roots: Sequence[str]) -> dict[str, float]:
    """Mean HC@k of the leaves of each tree (``roots[i]``: the top-level category of row ``i``; NaN rows ignored);
    trees with no measured leaf are left out."""
    values = torch.as_tensor(values, dtype=torch.float64)
    out: dict[str, float] = {}
    for root in sorted(set(roots)):
        rows = torch.tensor([x == root for x in roots], dtype=torch.bool)
        finite = values[rows & torch.isfinite(values)]
        if finite.numel():
            out[root] = float(finite.mean())
    return out


def macro_over_trees(per_tree: dict[str, float]) -> float:
    """The mean over trees of :func:`per_tree_consistency` (NaN when there is none)."""
    return float(sum(per_tree.values()) / len(per_tree)) if per_tree else float("nan")
