"""Score-based baselines: valid scores, BM25 on a hand-made case, and the same harness as the trained models."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from clipita.baselines import (
    BaselineNotRun,
    TestGallery,
    bm25_scores,
    evaluate_scores,
    image_zero_shot_scores,
    random_scores,
    run_baseline,
    title_zero_shot_chunks,
    title_zero_shot_scores,
)
from clipita.baselines.bm25 import bm25_texts
from clipita_core.tree import CategoryTree
from lightning_modules.metrics import CategoryRetrievalMetrics

PRODUCTS = [  # (title, category path)
    ("Nike Men Running Sports Shoes", ("Footwear", "Shoes", "Sports Shoes")),
    ("Bata Women Leather Sandals", ("Footwear", "Sandals", "Flat Sandals")),
    ("Casio Digital Watch Black", ("Accessories", "Watches", "Digital Watches")),
    ("Titan Analog Watch Gold", ("Accessories", "Watches", "Analog Watches")),
    ("Puma Unisex Sports Shoe White", ("Footwear", "Shoes", "Sports Shoes")),
    ("Fossil Brown Leather Wallet", ("Accessories", "Wallets", "Wallets")),
]


def make_gallery(
    feature_dim: int = 8, seed: int = 0, unseen: tuple[str, ...] = ("Analog Watches",)
) -> TestGallery:
    """A hand-made gallery: the category table of ``PRODUCTS``, leaf-name queries, random text features."""
    tree = CategoryTree.from_paths([p for _, p in PRODUCTS])
    depth = torch.as_tensor(tree.depth)
    leaves = torch.zeros(len(tree), dtype=torch.bool)
    leaves[tree.leaves] = True
    unseen_mask = torch.tensor([p[-1] in unseen and leaves[i].item() for i, p in enumerate(tree.paths)])
    groups = {
        "all": torch.ones(len(tree), dtype=torch.bool),
        "general": depth == 1,
        "level-2": depth == 2,
        "specific": leaves,
        "specific_seen": leaves & ~unseen_mask,
        "specific_unseen": leaves & unseen_mask,
    }
    g = torch.Generator().manual_seed(seed)
    return TestGallery(
        tree=tree,
        query_texts=tree.texts("leaf"),
        query_text_features=torch.randn(len(tree), feature_dim, generator=g),
        settings=groups,
        product_ids=[f"p{i}" for i in range(len(PRODUCTS))],
        titles=[t for t, _ in PRODUCTS],
        category_ids=torch.from_numpy(tree.ancestor_matrix([p for _, p in PRODUCTS])),
        title_features=torch.randn(len(PRODUCTS), feature_dim, generator=g),
        metric_kwargs={"ks": (1, 5, 10), "max_rank": 10},
        split_seed=0,
    )


def test_bm25_ranks_the_title_containing_the_category_word_first():
    titles = ["Blue cotton shirt", "Leather belt brown", "Casio digital watch", "Red running shirt slim"]
    scores = bm25_texts(["Watches", "Belts", "Shirts", "Sofas"], titles)
    assert scores.shape == (4, 4)
    assert scores[0].argmax().item() == 2  # "Watches" -> the watch (plural stem)
    assert scores[1].argmax().item() == 1
    assert set(torch.nonzero(scores[2]).flatten().tolist()) == {0, 3}  # both shirts, nothing else
    assert torch.all(scores[3] == 0)  # no shared term: every product ties at 0


def test_bm25_on_a_gallery_ranks_the_matching_products_first():
    gallery = make_gallery()
    scores = bm25_scores(gallery)
    sports = gallery.query_texts.index("Sports Shoes")
    top2 = scores[sports].topk(2).indices.tolist()
    assert sorted(top2) == [0, 4]  # the two sports shoes
    result = evaluate_scores(scores, gallery)
    assert result.per_query["p@1"][sports] == 1.0
    assert result.per_query["map@10"][sports] == 1.0


@pytest.mark.parametrize("kind", ["random", "bm25", "title_zero_shot"])
def test_baselines_produce_valid_scores_and_metrics(kind):
    gallery = make_gallery()
    result = run_baseline(kind, gallery)
    q, n = gallery.num_queries, gallery.num_products
    assert result.ranking.shape == (q, 10)
    assert sorted(result.ranking[0, :n].tolist()) == list(range(n))  # every product ranked once
    for name in ("p@1", "p@10_ceiling", "map@10", "r_precision", "mrr", "ndcg@10", "recall@10"):
        values = result.per_query[name]
        assert values.shape == (q,)
        finite = values[torch.isfinite(values)]
        assert finite.numel() == q  # every category has a product in this gallery
        assert torch.all((finite >= 0) & (finite <= 1 + 1e-6)), name
    for group in ("all", "general", "level-2", "specific", "specific_seen", "specific_unseen"):
        assert not math.isnan(result.metrics[f"{group}/map@10"])
    assert result.metrics["specific_unseen/num_queries"] == 1


def test_random_scores_are_seeded_per_split():
    gallery = make_gallery()
    a, b = random_scores(gallery, seed=3), random_scores(gallery, seed=3)
    assert torch.equal(a, b)
    gallery.split_seed = 1
    assert not torch.equal(a, random_scores(gallery, seed=3))


def test_title_zero_shot_is_the_cosine_of_the_frozen_features():
    gallery = make_gallery()
    gallery.title_features[3] = 5.0 * gallery.query_text_features[2]  # product 3 points where query 2 does
    scores = title_zero_shot_scores(gallery)
    assert scores.shape == (gallery.num_queries, gallery.num_products)
    assert scores[2].argmax().item() == 3
    assert scores[2, 3].item() == pytest.approx(1.0, abs=1e-5)
    assert torch.all(scores.abs() <= 1 + 1e-5)


def test_title_zero_shot_needs_cached_title_features():
    gallery = make_gallery()
    gallery.title_features = None
    with pytest.raises(ValueError, match="title features"):
        title_zero_shot_scores(gallery)


@pytest.mark.parametrize("kind", ["bm25", "title_zero_shot"])
def test_title_baselines_are_not_run_on_a_catalogue_without_titles(kind):
    gallery = make_gallery()
    gallery.titles = [""] * len(gallery.titles)
    with pytest.raises(BaselineNotRun, match="the catalogue has no titles"):
        run_baseline(kind, gallery)


def test_image_zero_shot_is_not_run_without_an_image_text_model():
    with pytest.raises(BaselineNotRun, match="no image-text model offline"):
        image_zero_shot_scores(make_gallery())
    with pytest.raises(BaselineNotRun, match="no image-text model offline"):
        run_baseline(
            "image_zero_shot", make_gallery(), {"model": "ViT-B-32", "pretrained": "/no/such/weights.pt"}
        )


def test_scores_go_through_the_same_harness_as_embeddings():
    """A baseline's scores and a model's embeddings with the same dot products give identical metrics."""
    gallery = make_gallery()
    products = torch.randn(gallery.num_products, 8, generator=torch.Generator().manual_seed(1))
    scores = gallery.query_text_features @ products.T
    from_scores = evaluate_scores(scores, gallery)
    metric = CategoryRetrievalMetrics(**gallery.metric_kwargs)
    metric.set_queries(gallery.query_text_features, gallery.settings)
    metric.update(products, gallery.category_ids)
    from_embeddings = metric.compute_per_query()
    for name, values in from_embeddings.items():
        assert torch.allclose(from_scores.per_query[name].double(), values.double(), equal_nan=True), name
    assert torch.equal(from_scores.ranking, metric.ranking()[1])


def test_bad_scores_and_unknown_baselines_are_refused():
    gallery = make_gallery()
    with pytest.raises(ValueError, match=r"\[Q, N\]"):
        evaluate_scores(torch.zeros(2, 2), gallery)
    with pytest.raises(ValueError, match="finite"):
        evaluate_scores(torch.full((gallery.num_queries, gallery.num_products), float("nan")), gallery)
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baseline("tf_idf", gallery)


class _TitleColumn:
    """A stand-in for the feature store's ``FeatureSplit``: title rows read on demand, reads counted."""

    def __init__(self, features: torch.Tensor) -> None:
        self.columns = {"title": None}
        self.features = features.to(torch.float16)
        self.rows_read: list[int] = []

    def read(self, array: str, indices):
        assert array == "title"
        self.rows_read.append(len(indices))
        return self.features[torch.as_tensor(indices)].numpy()


def test_title_zero_shot_streams_the_gallery_and_scores_like_the_whole_matrix():
    in_memory = make_gallery()
    column = _TitleColumn(in_memory.title_features)
    in_memory.title_features = column.features.float()  # the same float16-rounded rows, held whole
    streamed = dataclasses.replace(in_memory, title_features=None, features=column)
    assert streamed.has_title_features
    whole = run_baseline("title_zero_shot", in_memory)
    chunks = title_zero_shot_chunks(streamed, chunk_size=3)
    result = evaluate_scores(chunks, streamed)
    assert column.rows_read and max(column.rows_read) == 3  # never more than a chunk of titles in memory
    assert torch.equal(result.ranking, whole.ranking)
    for name, values in whole.per_query.items():
        assert torch.equal(result.per_query[name], values) or torch.allclose(
            result.per_query[name], values, equal_nan=True, atol=1e-7
        ), name
    assert result.metrics == pytest.approx(whole.metrics, nan_ok=True)
    with pytest.raises(ValueError, match="covered 3 products"):
        evaluate_scores(iter([torch.zeros(streamed.num_queries, 3)]), streamed)


@pytest.mark.slow
def test_tiny_leaderboard_baselines_are_unchanged_by_streaming(tmp_path, monkeypatch):
    """On the tiny config: the streamed gallery (title features read chunk by chunk from the feature store) gives
    the same title zero-shot and BM25 results as the whole gallery in memory (the path before streaming)."""
    import numpy as np
    from conftest import tiny_overrides

    from clipita.baselines import load_test_gallery
    from datamodules.feature_split import FeatureSplit

    repo = Path(__file__).resolve().parents[3]
    streamed = load_test_gallery(
        str(repo / "experiments" / "quickstart.yaml"),
        tiny_overrides({"data.work_dir": str(tmp_path / "work")}),
    )
    assert isinstance(streamed.features, FeatureSplit) and streamed.title_features is None
    titles = torch.from_numpy(streamed.features.read("title", np.arange(streamed.num_products))).float()
    in_memory = dataclasses.replace(
        streamed, title_features=titles, features=None
    )  # FeatureSplit.tensors' rows

    def whole_split(self):
        raise AssertionError("the streamed gallery loaded the whole feature split")

    monkeypatch.setattr(FeatureSplit, "tensors", property(whole_split))
    for kind in ("title_zero_shot", "bm25", "random"):
        before, after = run_baseline(kind, in_memory), run_baseline(kind, streamed)
        assert torch.equal(before.ranking, after.ranking), kind
        assert after.metrics == pytest.approx(before.metrics, nan_ok=True, abs=1e-7), kind
    chunked = evaluate_scores(title_zero_shot_chunks(streamed, chunk_size=7), streamed)
    assert torch.equal(chunked.ranking, run_baseline("title_zero_shot", in_memory).ranking)
