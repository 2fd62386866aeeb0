"""A sweep's best config (``clipita.sweep.report``): the base, the overrides and the best values, runnable by
``clipita fit``."""

from __future__ import annotations

import optuna
import pytest
import yaml
from sweep_files import ALL, QUICKSTART, write_sweep

from clipita.cli import main
from clipita.sweep.report import write_best_config
from clipita.sweep.spec import load_sweep_spec


def test_best_yaml_merges_base_overrides_and_best_values(tmp_path, capsys):
    path = write_sweep(
        tmp_path / "s.yaml",
        base_config=str(QUICKSTART),
        overrides={"trainer.max_epochs": 4},
        search_space={
            "model.net.fusion": {"type": "categorical", "choices": ["concat", "weighted_sum"]},
            "model.net.fusion_weights": {
                "type": "simplex",
                "keys": ALL,
                "when": {"model.net.fusion": "weighted_sum"},
            },
            "model.loss.init_args.temperature": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        },
    )
    spec = load_sweep_spec(str(path))
    study = optuna.create_study(direction="maximize")
    dists = spec.search_space.distributions()
    for value, params in [
        (0.5, {"model.net.fusion": "concat", "model.loss.init_args.temperature": 0.1}),
        (
            0.7,
            {
                "model.net.fusion": "weighted_sum",
                "model.net.fusion_weights.image": 0.2,
                "model.net.fusion_weights.title": 0.5,
                "model.net.fusion_weights.attributes": 0.9,
                "model.loss.init_args.temperature": 0.03,
            },
        ),
    ]:
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={k: dists[k] for k in params},
                value=value,
                user_attrs={"best_epoch": 2},
            )
        )
    best = write_best_config(spec, study, tmp_path / "best.yaml", "memory")
    config = yaml.safe_load(best.read_text())
    assert config["trainer"]["max_epochs"] == 4
    net = config["model"]["net"]
    assert net["fusion"] == "weighted_sum" and config["model"]["loss"]["init_args"]["temperature"] == 0.03
    assert sum(net["fusion_weights"].values()) == pytest.approx(1.0)
    assert net["image_size"] == 128  # untouched base keys survive
    assert config["model"]["loss"]["class_path"] == "lightning_modules.losses.InfoNCELoss"
    assert config["trainer"]["logger"]["init_args"]["name"] == "s_best"  # its own versioned run folder
    assert "dirpath" not in config["trainer"]["callbacks"][0]["init_args"]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(best), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["net"]["fusion"] == "weighted_sum"
    assert printed["model"]["net"]["fusion_weights"] == pytest.approx(net["fusion_weights"])
    assert printed["model"]["loss"]["init_args"]["temperature"] == 0.03
