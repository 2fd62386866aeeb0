"""Error analysis of a category-to-image ranking: how far from the query are the wrongly retrieved products?

The CLIP-ITA paper's error analysis asks, for the products a model ranks on top that are *not* relevant: does the
mistake stay in the query's tree (same top-level category, e.g. "Shoes" answered with "Sandals", both under
"Footwear") or jump to another tree ("Shoes" answered with "Watches")? And how deep is the shared ancestry? A model
whose errors are near-misses in the taxonomy is closer to useful than its precision suggests.

For every wrong item we take the lowest common ancestor (LCA) of the query node and the product's category path:
its depth is the length of their common prefix (0 = different trees). The **depth gap** is
``query_depth - lca_depth``: 1 means the product sits under the query's parent (a sibling branch), ``query_depth``
means another tree. Under strict relevance a product *below* the query is also wrong; its LCA is the query, gap 0.

Example:
    >>> # table: 0 "A", 1 "B", 2 "A > x", 3 "A > y"; products: "A > x", "A > y", "B"
    >>> product_category_ids = torch.tensor([[0, 2], [0, 3], [1, -1]])
    >>> counts = error_analysis(torch.tensor([2]), torch.tensor([[1, 2, 0]]), product_category_ids, ks=(1, 3))
    >>> counts["rank1/wrong"], counts["rank1/wrong_same_tree"], counts["rank1/wrong_depth_gap=1"]
    (1, 1, 1)
    >>> counts["top3/wrong"], counts["top3/wrong_different_tree"], counts["top3/wrong_depth_gap=2"]
    (2, 1, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from .ranking import PAD_INDEX


def node_ancestors(product_category_ids: Tensor, num_nodes: int | None = None) -> Tensor:
    """``[T, L]`` ancestor ids of every category node that occurs on some product's path (``-1`` rows otherwise).

    Every prefix of a product's path is a node, so the products themselves tell each node's ancestry: node
    ``category_ids[p, j]`` has ancestors ``category_ids[p, :j + 1]``. Use ``CategoryTree.ancestor_matrix`` instead
    when the tree is at hand (it also covers nodes no product reaches).

    Example:
        >>> node_ancestors(torch.tensor([[0, 2], [1, -1]])).tolist()
        [[0, -1], [1, -1], [0, 2]]
    """
    ids = product_category_ids.long()
    n, depth = ids.shape
    size = int(ids.max()) + 1 if num_nodes is None else num_nodes
    table = torch.full((size, depth), -1, dtype=torch.long, device=ids.device)
    for j in range(depth):
        rows = ids[:, j] >= 0
        prefix = torch.full((int(rows.sum()), depth), -1, dtype=torch.long, device=ids.device)
        prefix[:, : j + 1] = ids[rows, : j + 1]
        table[ids[rows, j]] = prefix
    return table


def error_analysis(
    query_ids: Tensor,
    topk_indices: Tensor,
    product_category_ids: Tensor,
    query_depths: Tensor | None = None,
    query_ancestors: Tensor | None = None,
    relevance: Literal["hierarchical", "strict"] = "hierarchical",
    ks: Sequence[int] = (1, 10),
    query_mask: Tensor | None = None,
) -> dict[str, int]:
    """Count the wrong items among each query's top ranks by tree distance to the query.

    Args:
        query_ids: ``[Q]`` category-table row of each query.
        topk_indices: ``[Q, K]`` ranked product indices, best first (e.g. ``CategoryRetrievalMetrics.ranking()``);
            ``PAD_INDEX`` / negative entries (empty slots) are ignored.
        product_category_ids: ``[N, L]`` ancestor table ids of every gallery product, ``-1`` padded.
        query_depths: ``[Q]`` depth of each query (1 = top level); default: from the ancestors. When given it
            must agree with them.
        query_ancestors: ``[Q, L]`` ancestor ids of each query, root first (``CategoryTree.ancestor_matrix`` of
            the query paths). Default: read off the products' paths (:func:`node_ancestors`); queries that no
            product's path contains are then skipped and counted in ``"skipped_queries"``.
        relevance: what counts as a correct item: ``"hierarchical"`` (query on the product's path) or
            ``"strict"`` (query is the product's leaf).
        ks: cut-offs; ``1`` gives keys ``"rank1/..."``, ``k > 1`` gives ``"top{k}/..."``.
        query_mask: ``[Q]`` bool, analyse only these queries (e.g. ``num_relevant > 0``).

    Returns:
        ``{"queries", "skipped_queries"}`` plus, per cut-off prefix: ``judged`` (ranked items looked at),
        ``wrong``, ``wrong_same_tree``, ``wrong_different_tree`` and ``wrong_depth_gap={g}`` for
        ``g = 0..L`` (``query_depth - lca_depth``; zero counts included so CSV columns are stable).
    """
    qids = torch.as_tensor(query_ids, dtype=torch.long)
    cats = torch.as_tensor(product_category_ids, dtype=torch.long).to(qids.device)
    top = torch.as_tensor(topk_indices, dtype=torch.long).to(qids.device)
    depth_levels = cats.shape[1]
    keep = (
        torch.ones_like(qids, dtype=torch.bool) if query_mask is None else query_mask.to(qids.device).bool()
    )
    if query_ancestors is None:
        table = node_ancestors(cats, num_nodes=max(int(cats.max()), int(qids.max())) + 1)
        anc = table[qids]
        skipped = keep & ~(anc >= 0).any(dim=1)
        keep = keep & ~skipped
    else:
        anc = torch.as_tensor(query_ancestors, dtype=torch.long).to(qids.device)
        skipped = torch.zeros_like(keep)
        if anc.shape[1] < depth_levels:
            anc = torch.nn.functional.pad(anc, (0, depth_levels - anc.shape[1]), value=-1)
        anc = anc[:, :depth_levels]
    depth = (anc >= 0).sum(dim=1)
    if query_depths is not None:
        given = torch.as_tensor(query_depths, dtype=torch.long).to(qids.device)
        if bool((given[keep] != depth[keep]).any()):
            raise ValueError("query_depths disagree with the query ancestors")

    anc, depth, top = anc[keep], depth[keep], top[keep]
    qid = qids[keep]
    out: dict[str, int] = {"queries": int(keep.sum()), "skipped_queries": int(skipped.sum())}
    for k in ks:
        prefix = "rank1" if k == 1 else f"top{k}"
        idx = top[:, :k]
        valid = (idx >= 0) & (idx != PAD_INDEX)
        paths = cats[idx.clamp(min=0, max=cats.shape[0] - 1)]  # [Q', k, L]
        shared = (paths == anc[:, None, :]) & (anc[:, None, :] >= 0)
        lca_depth = shared.sum(dim=2)
        if relevance == "hierarchical":
            correct = lca_depth == depth[:, None]
        elif relevance == "strict":
            leaf_level = ((paths >= 0).sum(dim=2) - 1).clamp(min=0)
            leaf = paths.gather(2, leaf_level.unsqueeze(2)).squeeze(2)
            correct = leaf == qid[:, None]
        else:
            raise ValueError(f"unknown relevance {relevance!r}; expected 'hierarchical' or 'strict'")
        wrong = valid & ~correct
        gap = depth[:, None] - lca_depth
        out[f"{prefix}/judged"] = int(valid.sum())
        out[f"{prefix}/wrong"] = int(wrong.sum())
        out[f"{prefix}/wrong_same_tree"] = int((wrong & (lca_depth > 0)).sum())
        out[f"{prefix}/wrong_different_tree"] = int((wrong & (lca_depth == 0)).sum())
        for g in range(depth_levels + 1):
            out[f"{prefix}/wrong_depth_gap={g}"] = int((wrong & (gap == g)).sum())
    return out
