from __future__ import annotations

import pytest
import torch

from lightning_modules.taxonomy_scoring import TaxonomyRows, apply_taxonomy

TRAINED = [("A",), ("A", "x"), ("A", "y"), ("B",), ("B", "z")]


def test_rows_find_closest_trained_ancestor_and_trained_descendants():
    rows = TaxonomyRows.of([("A", "new"), ("A",), ("C", "q"), None, ("B", "z")], TRAINED)
    assert rows.parent == [0, -1, -1, -1, 3]
    assert rows.descendants == [[], [1, 2], [], [], []]


def test_parent_term_only_for_novel_and_descendant_mean_for_inner_nodes():
    trained_q = torch.eye(5)
    queries = torch.zeros(3, 5)
    rows = TaxonomyRows.of([("A", "new"), ("A",), ("B", "z")], TRAINED)
    novel = torch.tensor([True, False, False])
    out = apply_taxonomy(queries, trained_q, rows, novel, parent_weight=0.5, descendant_weight=2.0)
    assert torch.equal(out[0], 0.5 * trained_q[0])  # novel leaf borrows its trained parent "A"
    assert torch.equal(out[1], trained_q[1] + trained_q[2])  # 2.0 * mean of x and y
    assert torch.equal(out[2], torch.zeros(5))  # a trained leaf: no parent term, no descendants
    assert torch.equal(queries, torch.zeros(3, 5))  # input untouched


def test_zero_weights_return_the_queries_and_negative_weights_are_refused():
    q = torch.randn(2, 4)
    rows = TaxonomyRows.of([("A", "x"), ("B",)], TRAINED)
    assert apply_taxonomy(q, torch.randn(5, 4), rows, torch.tensor([False, False])) is q
    with pytest.raises(ValueError, match="novel_parent_weight"):
        apply_taxonomy(q, torch.randn(5, 4), rows, torch.tensor([False, False]), parent_weight=-1)
