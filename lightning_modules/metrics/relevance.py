"""Which products are relevant to a category query, and how many a gallery holds (``R``).

A product ``p`` is relevant to query ``q`` when

* ``hierarchical`` (default): ``q`` is ``p``'s category *or any ancestor of it*, i.e. ``q in category_ids[p]``.
  "Apparel" retrieves shirts and shoes alike;
* ``strict``: ``q`` is exactly ``p``'s deepest category (its leaf).

On leaf queries the two coincide. On internal-node queries strict counts only products *labelled at that node*
(catalogues whose paths stop early), usually few or none -- queries left with ``R = 0`` are excluded by
:class:`.category_retrieval.CategoryRetrievalMetrics`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Relevance = Literal["hierarchical", "strict"]


def product_leaves(category_ids: Tensor) -> Tensor:
    """The deepest category of each product: the last non-padding entry of ``category_ids`` (``-1`` if none).

    Example:
        >>> product_leaves(torch.tensor([[0, 2, 5], [1, 3, -1]])).tolist()
        [5, 3]
    """
    depth = (category_ids >= 0).sum(dim=1)
    leaf = category_ids.gather(1, (depth - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    return torch.where(depth > 0, leaf, torch.full_like(leaf, -1))


def relevant_categories(category_ids: Tensor, relevance: Relevance = "hierarchical") -> Tensor:
    """``[B, L']`` the categories each product is relevant to (``-1`` = none), under a relevance definition.

    Args:
        category_ids: ``[B, L]`` ancestor table ids per product, root first, ``-1`` padded (the batch key).
        relevance: ``"hierarchical"`` -- the product's category and all its ancestors (``L' = L``);
            ``"strict"`` -- only its deepest category (``L' = 1``).
    """
    if relevance == "hierarchical":
        return category_ids
    if relevance == "strict":
        return product_leaves(category_ids).unsqueeze(1)
    raise ValueError(f"unknown relevance {relevance!r}; expected 'hierarchical' or 'strict'")


def count_relevant(relevant_to: Tensor, qids: Tensor, size: int) -> Tensor:
    """``[Q]`` relevant products in a chunk: a histogram of the categories products are relevant to
    (:func:`relevant_categories`), read at the queries' table rows ``qids``.

    ``size`` is ``max(query_ids) + 2``; the last bin collects padding and categories that are not queries.
    """
    ids = relevant_to.reshape(-1)
    ids = torch.where((ids >= 0) & (ids < size - 1), ids, torch.full_like(ids, size - 1))
    hist = torch.zeros(size, dtype=torch.long, device=ids.device).scatter_add_(0, ids, torch.ones_like(ids))
    return hist[qids]
