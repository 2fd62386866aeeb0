"""The trained set of a model: sorted paths, and novelty by path or, without one, by the text in the model's style."""

from __future__ import annotations

import pytest

from lightning_modules.trained_categories import TrainedCategories


def test_paths_are_deduplicated_and_sorted() -> None:
    trained = TrainedCategories([["B", "x"], ("A",), ("B", "x")])
    assert trained.paths == [("A",), ("B", "x")]


def test_texts_are_matched_in_the_models_category_text_style() -> None:
    paths = [("Apparel",), ("Apparel", "Topwear")]
    by_leaf, by_path = TrainedCategories(paths, "leaf"), TrainedCategories(paths, "path")
    texts = ["Topwear", "Apparel > Topwear"]
    assert by_leaf.novel_mask(texts).tolist() == [False, True]
    assert by_path.novel_mask(texts).tolist() == [True, False]
    # a path, when given, decides whatever the text says
    assert by_leaf.novel_mask(["Topwear"], [("Footwear", "Topwear")]).tolist() == [True]


def test_an_empty_set_calls_nothing_novel_and_paths_must_match_texts() -> None:
    assert TrainedCategories().novel_mask(["anything", "else"]).tolist() == [False, False]
    with pytest.raises(ValueError, match="2 query texts but 1 paths"):
        TrainedCategories([("A",)]).novel_mask(["a", "b"], [("A",)])
