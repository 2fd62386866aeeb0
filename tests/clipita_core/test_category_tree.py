"""The category tree: every prefix is a node, in (depth, path) order, and its texts follow the text style."""

from __future__ import annotations

import pytest

from clipita_core.paths import category_text_of
from clipita_core.tree import CategoryTree

PATHS = [("Apparel", "Topwear", "Shirts"), ("Footwear", "Shoes"), ("Apparel", "Bottomwear")]


def test_every_prefix_is_a_node_in_depth_then_path_order():
    tree = CategoryTree.from_paths(PATHS)
    assert tree.paths == [
        ("Apparel",),
        ("Footwear",),
        ("Apparel", "Bottomwear"),
        ("Apparel", "Topwear"),
        ("Footwear", "Shoes"),
        ("Apparel", "Topwear", "Shirts"),
    ]
    assert tree.depth.tolist() == [1, 1, 2, 2, 2, 3] and tree.max_depth == 3
    assert [tree.paths[i] for i in tree.leaves] == sorted(PATHS, key=lambda p: (len(p), p))
    assert tree.parent(tree.index(("Apparel", "Topwear"))) == tree.index(("Apparel",))
    assert tree.parent(0) == -1


def test_ancestor_matrix_pads_with_minus_one():
    tree = CategoryTree.from_paths(PATHS)
    matrix = tree.ancestor_matrix([("Footwear", "Shoes"), ("Apparel", "Topwear", "Shirts")])
    assert matrix.tolist() == [
        [tree.index(("Footwear",)), tree.index(("Footwear", "Shoes")), -1],
        tree.ancestor_ids(("Apparel", "Topwear", "Shirts")),
    ]


@pytest.mark.parametrize("style", ["leaf", "path"])
def test_texts_are_each_nodes_category_text(style):
    tree = CategoryTree.from_paths(PATHS)
    assert tree.texts(style) == [category_text_of(p, style) for p in tree.paths]
    assert len(set(tree.texts("path"))) == len(tree)


def test_bad_input_is_refused_with_the_path():
    with pytest.raises(ValueError, match="empty category path"):
        CategoryTree.from_paths([()])
    with pytest.raises(ValueError, match="unique"):
        CategoryTree([("A",), ("A",)])
    with pytest.raises(KeyError, match="'Apparel > Hats' is not in the tree"):
        CategoryTree.from_paths(PATHS).index(("Apparel", "Hats"))
    with pytest.raises(ValueError, match="unknown category text style"):
        CategoryTree([]).texts("name")


def test_json_round_trip():
    tree = CategoryTree.from_paths(PATHS)
    assert CategoryTree.from_json(tree.to_json()).paths == tree.paths
