"""``refit_after_choice``: the adaptive recipe chooses its scorer on pseudo-novel validation, then trains again on
every training leaf and keeps that choice; the tested checkpoint knows every training leaf and carries the choice."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from clipita.experiment import fit_and_test
from clipita.refit import chosen_retrieval, fit_args
from lightning_modules import load_model
from lightning_modules.scorer_choice import CHOICE_KEY

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_refit_after_choice_trains_on_every_leaf_and_keeps_the_choice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fit_and_test(
        str(REPO / "experiments" / "clip_ita_adaptive.yaml"),
        tiny_overrides(
            {
                "data.work_dir": str(tmp_path / "work"),
                "data.sample_products": 240,
                "data.pseudo_novel_fraction": 0.25,
                "trainer.max_epochs": 1,
                "trainer.logger.init_args.save_dir": str(tmp_path / "runs"),
                "trainer.enable_model_summary": False,
                "refit_after_choice": True,
            }
        ),
    )
    first = result.choice_run
    assert first is not None and first.trainer is not result.trainer
    held = set(first.datamodule.manifest.pseudo_novel_categories)
    assert held and not held & set(first.module.net.trained_categories)
    assert not result.datamodule.manifest.pseudo_novel_categories
    dm = result.datamodule
    every_leaf = set(dm.protocol("leaf").seen_paths)
    assert held <= every_leaf
    # the same test split, so the refit's numbers compare with the choosing fit's
    assert list(dm.datasets["test"].product_id) == list(first.datamodule.datasets["test"].product_id)

    chosen = chosen_retrieval(first.module, first.best_checkpoint)
    assert CHOICE_KEY in chosen
    loaded = load_model(result.best_checkpoint)
    assert "_refit" in result.best_checkpoint
    assert loaded.retrieval == chosen  # kept, not re-chosen
    assert set(loaded.trained_categories) == every_leaf and held <= set(loaded.trained_categories)
    assert "test/all/map@10" in result.test and "val/chosen/all/map@10" in result.val


def test_fit_args_drop_the_subcommand_and_the_resume_path():
    tokens = [
        "fit",
        "--config",
        "a.yaml",
        "--ckpt_path",
        "last",
        "--ckpt_path=x",
        "--trainer.max_epochs",
        "2",
    ]
    assert fit_args(tokens, "fit") == ["--config", "a.yaml", "--trainer.max_epochs", "2"]
