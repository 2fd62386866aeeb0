"""Hierarchy consistency (HC@k) on a hand-built tree and rankings, counted by hand."""

from __future__ import annotations

import math

import pytest
import torch

from clipita_core.tree import CategoryTree
from lightning_modules.metrics import (
    PAD_INDEX,
    hierarchy_consistency,
    macro_over_trees,
    per_tree_consistency,
)

# three levels, two trees; products 0-3 "A > x > 1", 4-5 "A > x > 2", 6-7 "A > y > 3", 8-9 "B > z > 4"
TREE = CategoryTree.from_paths([("A", "x", "1"), ("A", "x", "2"), ("A", "y", "3"), ("B", "z", "4")])
PRODUCT_PATHS = [("A", "x", "1")] * 4 + [("A", "x", "2")] * 2 + [("A", "y", "3")] * 2 + [("B", "z", "4")] * 2


def row(path):
    return TREE.index(path)


def relevant_counts() -> torch.Tensor:
    counts = torch.zeros(len(TREE), dtype=torch.long)
    for p in PRODUCT_PATHS:
        for d in range(1, len(p) + 1):
            counts[row(p[:d])] += 1
    return counts


def test_hand_counted_consistency() -> None:
    k = 2
    ranking = torch.full((len(TREE), 10), PAD_INDEX, dtype=torch.long)
    order = {
        ("A",): [0, 1, 2, 4, 5, 6, 8, 7, 3, 9],  # R = 8: its top 8 miss product 3
        ("A", "x"): [0, 1, 2, 3, 4, 6, 5],  # R = 6, cut-off 6: {0, 1, 2, 3, 4, 6}
        ("A", "y"): [6, 7, 0],  # R = 2 < k: cut-off k = 2: {6, 7}
        ("B",): [8, 9],
        ("B", "z"): [9, 8],
        ("A", "x", "1"): [3, 0, 1],  # top 2 {3, 0}: 3 is outside "A"'s cut-off -> 1 of 2 consistent
        ("A", "x", "2"): [4, 5],  # 5 is outside "A > x"'s cut-off -> 1 of 2
        ("A", "y", "3"): [7, 6],  # both within "A"'s and "A > y"'s cut-offs -> 1
        ("B", "z", "4"): [8, 9],  # both within "B" (R = 2) and "B > z" -> 1
    }
    for path, products in order.items():
        ranking[row(path), : len(products)] = torch.tensor(products)
    anc = torch.as_tensor(TREE.ancestor_matrix(TREE.paths))
    hc = hierarchy_consistency(ranking, anc, relevant_counts(), k=k)
    expected = {("A", "x", "1"): 0.5, ("A", "x", "2"): 0.5, ("A", "y", "3"): 1.0, ("B", "z", "4"): 1.0}
    for i, path in enumerate(TREE.paths):
        if path in expected:
            assert hc[i].item() == pytest.approx(expected[path]), path
        else:
            assert math.isnan(hc[i].item()), path  # inner nodes are not measured
    roots = [p[0] for p in TREE.paths]
    trees = per_tree_consistency(hc, roots)
    assert trees == pytest.approx({"A": 2 / 3, "B": 1.0})
    assert macro_over_trees(trees) == pytest.approx(5 / 6)  # every tree weighs the same (micro would be 0.75)


def test_perfect_ranking_is_fully_consistent_and_empty_rankings_are_skipped() -> None:
    r = relevant_counts()
    ranking = torch.full((len(TREE), 10), PAD_INDEX, dtype=torch.long)
    for i, path in enumerate(TREE.paths):
        mine = [p for p, q in enumerate(PRODUCT_PATHS) if q[: len(path)] == path]
        rest = [p for p in range(len(PRODUCT_PATHS)) if p not in mine]
        ranking[i] = torch.tensor(mine + rest)
    anc = torch.as_tensor(TREE.ancestor_matrix(TREE.paths))
    hc = hierarchy_consistency(ranking, anc, r, k=3)
    leaves = torch.zeros(len(TREE), dtype=torch.bool)
    leaves[TREE.leaves] = True
    assert torch.equal(torch.isfinite(hc), leaves) and bool((hc[leaves] == 1).all())
    ranking[row(("A", "x", "1"))] = PAD_INDEX
    assert math.isnan(hierarchy_consistency(ranking, anc, r, k=3)[row(("A", "x", "1"))].item())
    with pytest.raises(ValueError, match="rows"):
        hierarchy_consistency(ranking[:3], anc, r)
