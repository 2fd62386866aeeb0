"""Test categories never inform a choice (issue 20): under the catalogue's own split folders, a leaf with no train
product is a test-only (unseen) leaf, and none of its products reaches the validation split that every chooser
(scorer weights, tree terms, any mixing coefficient chosen on validation) reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from catalogue_shapes import TEST_ONLY, adaptive_overrides, folder_tree
from conftest import tiny_overrides

from clipita.experiment import fit_and_test
from lightning_modules.scorer_choice import CHOICE_KEY

REPO = Path(__file__).resolve().parents[2]
ADAPTIVE = str(REPO / "experiments" / "clip_ita_adaptive.yaml")


@pytest.mark.slow
def test_the_adaptive_choice_never_sees_a_test_only_leaf(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    schema = folder_tree(tmp_path / "cat", metadata=True, split_folders=True, test_only=True)
    result = fit_and_test(
        ADAPTIVE,
        tiny_overrides(adaptive_overrides(schema, tmp_path)),
        test=False,
    )
    manifest = result.datamodule.manifest
    assert set(manifest.unseen_categories) == TEST_ONLY
    held = manifest.pseudo_novel_categories
    assert len(held) == 2
    evidence = result.module.net.retrieval[CHOICE_KEY]
    # validation = the val folders of the six trained leaves (2 each) + the pseudo-novel leaves' train products (8)
    assert evidence["products"] == 6 * 2 + 8 * len(held), evidence["products"]
    # novel queries = the pseudo-novel leaves only: not the test-only leaves, nor 'Nut' (trained on no product)
    assert evidence["novel_queries"] == len(held), evidence["novel_queries"]
    assert evidence["tree"]["novel_parent_weight"]["queries"] == len(held)
