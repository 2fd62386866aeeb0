"""The CLIP-ITA error analysis: wrong top results by shared tree and depth gap to the query."""

from __future__ import annotations

import pytest
import torch

from clipita_core.tree import CategoryTree
from lightning_modules.metrics import PAD_INDEX, CategoryRetrievalMetrics
from lightning_modules.metrics.error_analysis import error_analysis, node_ancestors

PATHS = [
    ("Apparel", "Topwear", "Shirts"),
    ("Apparel", "Topwear", "Tshirts"),
    ("Apparel", "Bottomwear", "Jeans"),
    ("Footwear", "Shoes", "Sneakers"),
    ("Apparel", "Topwear"),  # labelled at an internal node
]


@pytest.fixture
def setup():
    tree = CategoryTree.from_paths(PATHS)
    cats = torch.as_tensor(tree.ancestor_matrix(PATHS))
    return tree, cats


def test_hand_counted(setup) -> None:
    tree, cats = setup
    shirts = tree.index(("Apparel", "Topwear", "Shirts"))
    topwear = tree.index(("Apparel", "Topwear"))
    queries = torch.tensor([shirts, topwear])
    # shirts query: Tshirts (sibling, gap 1), Jeans (gap 2), Sneakers (other tree, gap 3), Shirts (correct)
    # topwear query: Topwear-labelled (correct), Jeans (gap 1), Shirts (correct), padding (ignored)
    top = torch.tensor([[1, 2, 3, 0], [4, 2, 0, PAD_INDEX]])
    out = error_analysis(queries, top, cats, ks=(1, 4))
    assert out["queries"] == 2 and out["skipped_queries"] == 0
    assert out["rank1/judged"] == 2 and out["rank1/wrong"] == 1
    assert out["rank1/wrong_same_tree"] == 1 and out["rank1/wrong_depth_gap=1"] == 1
    assert out["top4/judged"] == 7 and out["top4/wrong"] == 4
    assert out["top4/wrong_same_tree"] == 3 and out["top4/wrong_different_tree"] == 1
    assert [out[f"top4/wrong_depth_gap={g}"] for g in range(4)] == [0, 2, 1, 1]


def test_strict_counts_descendants_as_gap_zero(setup) -> None:
    tree, cats = setup
    topwear = tree.index(("Apparel", "Topwear"))
    out = error_analysis(
        torch.tensor([topwear]), torch.tensor([[4, 0, 2]]), cats, relevance="strict", ks=(3,)
    )
    assert out["top3/wrong"] == 2
    assert out["top3/wrong_depth_gap=0"] == 1  # Shirts sits under Topwear: wrong under strict, LCA = query
    assert out["top3/wrong_depth_gap=1"] == 1


def test_explicit_ancestors_and_depths_agree_with_inferred(setup) -> None:
    tree, cats = setup
    queries = torch.arange(len(tree))
    top = torch.randint(0, len(PATHS), (len(tree), 3), generator=torch.Generator().manual_seed(0))
    inferred = error_analysis(queries, top, cats, ks=(1, 3))
    anc = torch.as_tensor(tree.ancestor_matrix(tree.paths))
    explicit = error_analysis(
        queries, top, cats, query_ancestors=anc, query_depths=torch.as_tensor(tree.depth), ks=(1, 3)
    )
    assert inferred == explicit
    with pytest.raises(ValueError, match="disagree"):
        error_analysis(queries, top, cats, query_depths=torch.ones(len(tree)))
    assert torch.equal(node_ancestors(cats, len(tree)), anc)


def test_unknown_queries_are_skipped_and_mask(setup) -> None:
    tree, cats = setup
    out = error_analysis(torch.tensor([0, 99]), torch.tensor([[3], [0]]), cats, ks=(1,))
    assert out["skipped_queries"] == 1 and out["queries"] == 1
    out = error_analysis(
        torch.tensor([0, 1]), torch.tensor([[3], [0]]), cats, ks=(1,), query_mask=torch.tensor([True, False])
    )
    assert out["queries"] == 1


def test_consistent_with_the_metric(setup) -> None:
    """The number of wrong rank-1 items equals (1 - P@1) * queries evaluated by the metric."""
    tree, cats = setup
    g = torch.Generator().manual_seed(0)
    queries, products = torch.randn(len(tree), 6, generator=g), torch.randn(len(PATHS), 6, generator=g)
    metric = CategoryRetrievalMetrics(ks=(1,), max_rank=5, ndcg_ks=(5,), recall_ks=(5,))
    metric.set_queries(queries)
    metric.update(products, cats)
    _, index, _ = metric.ranking()
    out = error_analysis(torch.arange(len(tree)), index, cats, ks=(1, 5), query_mask=metric.num_relevant > 0)
    p1 = metric.compute()["all/p@1"].item()
    assert out["rank1/wrong"] == round((1 - p1) * out["queries"])
