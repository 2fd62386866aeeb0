"""Every shipped sweep (``sweeps/*.yaml``) parses, samples, and names only options its recipe has."""

from __future__ import annotations

import inspect
from pathlib import Path

import optuna
import pytest

from clipita.experiment import read_fit_config, section
from clipita.sweep.spec import load_sweep_spec
from lightning_modules import ClipIta, ClipItaModule

REPO = Path(__file__).resolve().parents[3]
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def _options(cls) -> set[str]:
    return set(inspect.signature(cls).parameters)


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_shipped_sweeps_parse_sample_and_name_real_options(path, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = load_sweep_spec(str(path))
    base = read_fit_config(spec.base_config)
    loss_path = (section(base, "model").get("loss") or {}).get(
        "class_path", "lightning_modules.losses.InfoNCELoss"
    )
    module_name, name = loss_path.rsplit(".", 1)
    loss_cls = getattr(__import__(module_name, fromlist=[name]), name)
    study = optuna.create_study(direction=spec.direction)
    for params in spec.enqueue_params():
        study.enqueue_trial(params)
    for _ in range(3):  # the enqueued baseline, then sampled points
        trial = study.ask()
        values = spec.search_space.sample(trial)
        study.tell(trial, 0.0)
        for key in values:
            parts = key.split(".")
            if parts[:2] == ["model", "net"]:
                assert parts[2] in _options(ClipIta), key
            elif parts[:3] == ["model", "loss", "init_args"]:
                assert parts[3] in _options(loss_cls), key
            elif parts[0] == "model":
                assert parts[1] in _options(ClipItaModule), key
    assert spec.metric.startswith("val/")


def test_the_adaptive_sweep_scores_the_chosen_scorer():
    spec = load_sweep_spec(str(REPO / "sweeps" / "clip_ita_adaptive.yaml"))
    assert spec.base_config.endswith("clip_ita_adaptive.yaml")
    assert spec.metric == "val/chosen/all/map@10" and spec.overrides["refit_after_choice"] is False
    baseline = spec.search_space.sample(optuna.trial.FixedTrial(spec.enqueue_params()[0]))
    assert baseline["model.image_loss_weight"] == 1.0 and baseline["model.net.fusion"] == "concat"
