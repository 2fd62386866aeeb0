"""The adaptive recipe end to end on the sample: pseudo-novel validation leaves stay out of training, the scorer's
title weights are chosen on validation and travel in the checkpoint, ``load_model`` and ``clipita search`` score
with them exactly as the test did, and a catalogue without titles is fitted without them (no title tower, no title match)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides

from clipita.experiment import fit_and_test
from clipita.retrieval.index import index
from clipita.retrieval.search import Searcher
from clipita_core.paths import format_path
from lightning_modules import load_model
from lightning_modules.scorer_choice import CHOICE_KEY

REPO = Path(__file__).resolve().parents[2]


def fit_adaptive(tmp_path: Path, titles: str):
    return fit_and_test(
        str(REPO / "experiments" / "clip_ita_adaptive.yaml"),
        tiny_overrides(
            {
                "data.work_dir": str(tmp_path / "work"),
                "data.sample_products": 240,
                "data.sample_titles": titles,
                "data.pseudo_novel_fraction": 0.25,
                "trainer.max_epochs": 2,
                "trainer.logger.init_args.save_dir": str(tmp_path / "runs"),
                "trainer.enable_model_summary": False,
                "refit_after_choice": False,  # the choice itself (the refit: test_experiment_refit.py)
            }
        ),
    )


@pytest.mark.slow
def test_adaptive_recipe_chooses_stores_and_serves_the_same_scorer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fit_adaptive(tmp_path, "signal")
    manifest = result.datamodule.manifest
    held = set(manifest.pseudo_novel_categories)
    assert held and not held & set(manifest.split("train").category_paths)
    assert "val/specific_novel/map@10" in result.val and "val/chosen/all/map@10" in result.val
    net = result.module.net
    assert not held & set(net.trained_categories)  # novel to the model
    assert CHOICE_KEY in net.retrieval and net.retrieval[CHOICE_KEY]["novel_queries"] >= len(held)

    loaded = load_model(result.best_checkpoint)  # what index, search and gallery load
    assert loaded.retrieval == net.retrieval  # the test ran with the best checkpoint's choice
    result.module.eval()  # as during the test (dropout off)
    with torch.no_grad():
        test_queries = result.module.query_embeddings()
        assert torch.allclose(
            loaded.encode_query_texts(result.module.queries.texts, result.module.queries.paths),
            test_queries,
        )

    index(
        ckpt=result.best_checkpoint,
        output_dir=str(tmp_path / "index"),
        split="test",
        accelerator="cpu",
        progress=False,
    )
    searcher = Searcher.load(tmp_path / "index")
    paths = result.query_paths
    found = searcher.search([format_path(p) for p in paths], k=5)
    test_ids = list(result.datamodule.datasets["test"].product_id)
    ranking = result.module.rankings["test"]
    for q, hits in enumerate(found):
        expected = [test_ids[i] for i in ranking[q, :5].tolist() if i >= 0]
        scores = [h["score"] for h in hits["results"]]
        got = [h["id"] for h in hits["results"]]
        for a, b, s0, s1 in zip(expected, got, scores, scores[1:] + [float("-inf")], strict=False):
            assert a == b or abs(s0 - s1) < 1e-5, (format_path(paths[q]), expected, got)


@pytest.mark.slow
def test_adaptive_recipe_falls_back_to_the_towers_without_titles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fit_adaptive(tmp_path, "none")
    assert result.datamodule.modality_counts["title"]["present"] == 0
    loaded = load_model(result.best_checkpoint)
    # the recipe adapts to the catalogue: no title tower, no title match, so no title weight to choose or apply
    assert "title" not in loaded.modalities and not loaded.route_novel_categories
    retrieval = loaded.retrieval
    assert "seen_title_weight" not in retrieval and "novel_title_weight" not in retrieval
    assert retrieval[CHOICE_KEY]["titles_present"] == 0 and "title" not in retrieval[CHOICE_KEY]["signals"]
