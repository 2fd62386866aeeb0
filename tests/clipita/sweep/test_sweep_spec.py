"""The sweep YAML (``clipita.sweep.spec``): its defaults, enqueued points, and the samplers and pruners it
makes (seeded workers, CMA-ES)."""

from __future__ import annotations

import math
import re

import optuna
import pytest
from optuna.trial import TrialState
from sweep_files import ALL, QUICKSTART, write_sweep

from clipita.cli import main
from clipita.sweep.command import apply_cli
from clipita.sweep.space import (
    SearchSpace,
    SearchSpaceError,
)
from clipita.sweep.spec import PRUNERS, SAMPLERS, load_sweep_spec, make_pruner, make_sampler


def test_sweep_yaml_defaults_enqueue_and_factories(tmp_path):
    path = write_sweep(
        tmp_path / "s.yaml",
        base_config=str(QUICKSTART),
        search_space={
            "model.net.fusion": {"type": "categorical", "choices": ["concat", "weighted_sum"]},
            "model.net.fusion_weights": {
                "type": "simplex",
                "keys": ALL,
                "when": {"model.net.fusion": "weighted_sum"},
            },
        },
        enqueue=[
            {
                "model.net.fusion": "weighted_sum",
                "model.net.fusion_weights": {"image": 2, "title": 1, "attributes": 1},
            }
        ],
    )
    spec = load_sweep_spec(str(path))
    assert (spec.metric, spec.direction, spec.sampler["name"], spec.pruner["name"]) == (
        "val/map@10",
        "maximize",
        "tpe",
        "median",
    )
    assert spec.study_name == "s" and spec.storage is None
    # an enqueued simplex point comes back exactly (after normalisation) through the sampler's parameters
    params = spec.enqueue_params()[0]
    values = spec.search_space.sample(optuna.trial.FixedTrial(params))
    assert values["model.net.fusion_weights"] == pytest.approx(
        {"image": 0.5, "title": 0.25, "attributes": 0.25}
    )
    assert isinstance(make_sampler({"name": "cmaes", "seed": 0}).wrapped, optuna.samplers.CmaEsSampler)
    assert isinstance(make_sampler({"name": "tpe"}), optuna.samplers.TPESampler)
    assert isinstance(make_pruner({"name": "threshold", "lower": 0.1}), optuna.pruners.ThresholdPruner)
    with pytest.raises(SearchSpaceError, match="unknown key"):
        load_sweep_spec(str(write_sweep(tmp_path / "bad.yaml", base_config=str(QUICKSTART), trials=3)))


def test_seeded_workers_sharing_a_study_do_not_duplicate_trials(tmp_path):
    """Two workers with the same sampler seed on one storage: distinct trials, yet one worker is reproducible."""
    space = SearchSpace.from_spec({"model.lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}})
    block = {"name": "tpe", "seed": 0, "n_startup_trials": 10}
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    workers = [
        optuna.create_study(storage=storage, study_name="s", sampler=make_sampler(block), load_if_exists=True)
        for _ in range(2)
    ]
    for _ in range(3):
        for study in workers:  # interleaved, as two processes would
            trial = study.ask()
            study.tell(trial, space.sample(trial)["model.lr"])
    lrs = [t.params["model.lr"] for t in workers[0].trials]
    assert len(set(lrs)) == 6
    alone = optuna.create_study(sampler=make_sampler(block))
    for _ in range(6):
        trial = alone.ask()
        alone.tell(trial, space.sample(trial)["model.lr"])
    assert [t.params["model.lr"] for t in alone.trials] == lrs  # trial n is seeded with seed + n


def test_cmaes_samples_float_and_int_parameters():
    pytest.importorskip("cmaes")
    space = SearchSpace.from_spec(
        {
            "model.loss.init_args.temperature": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
            "model.net.hidden_dim": {"type": "int", "low": 128, "high": 1024, "step": 128},
        }
    )
    study = optuna.create_study(sampler=make_sampler({"name": "cmaes", "seed": 0, "n_startup_trials": 2}))
    study.optimize(
        lambda t: -abs(math.log(space.sample(t)["model.loss.init_args.temperature"] / 0.05)), n_trials=8
    )
    assert len(study.trials) == 8 and all(t.state == TrialState.COMPLETE for t in study.trials)


def test_sampler_and_pruner_names_and_messages_come_from_their_registries(tmp_path):
    space = {"model.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}
    path = write_sweep(
        tmp_path / "s.yaml", base_config=str(QUICKSTART), search_space=space, sampler="annealing"
    )
    expected = f"unknown sampler 'annealing'; expected one of {list(SAMPLERS.names)}"
    with pytest.raises(SearchSpaceError, match=re.escape(f"sampler.name: {expected}")):
        load_sweep_spec(str(path))
    SAMPLERS.add("annealing", optuna.samplers.RandomSampler)  # one registry line makes it a valid name
    try:
        spec = load_sweep_spec(str(path))
        assert spec.sampler["name"] == "annealing"
        assert isinstance(make_sampler(spec.sampler), optuna.samplers.RandomSampler)
    finally:
        SAMPLERS.remove("annealing")
    with pytest.raises(
        SearchSpaceError, match=re.escape("--pruner: unknown pruner 'sometimes'; expected one of")
    ):
        apply_cli(spec, pruner="sometimes")
    assert apply_cli(spec, pruner=PRUNERS.names[-1]).pruner == {"name": PRUNERS.names[-1]}


def test_sweep_help_lists_every_registered_sampler_and_pruner(capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # the help wraps lines
    for name in (*SAMPLERS.names, *PRUNERS.names):
        assert f"'{name}'" in out, name
