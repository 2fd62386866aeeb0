"""Search spaces (``clipita.sweep.space``): sampling on the simplex and log scales, conditional entries, the
override values, bad spaces named."""

from __future__ import annotations

import json
import math

import optuna
import pytest
import yaml
from sweep_files import ALL

from clipita.sweep.space import (
    SearchSpace,
    SearchSpaceError,
    format_override_value,
    to_overrides,
)


def sample_many(space: SearchSpace, n: int, fixed: dict | None = None) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial, fixed or {}))
        study.tell(trial, 0.0)
    return out


def test_fusion_weights_are_sampled_on_the_simplex():
    space = SearchSpace.from_spec({"model.net.fusion_weights": {"type": "simplex", "keys": ALL}})
    draws = [v["model.net.fusion_weights"] for v in sample_many(space, 400)]
    for w in draws:
        assert set(w) == set(ALL)
        assert all(x >= 0 for x in w.values())
        assert math.isclose(sum(w.values()), 1.0, abs_tol=1e-9)
    # a flat Dirichlet: every component has mean 1/3 and reaches both ends of the simplex
    for key in ALL:
        values = [w[key] for w in draws]
        assert abs(sum(values) / len(values) - 1 / 3) < 0.05
        assert min(values) < 0.05 and max(values) > 0.8
    assert to_overrides({"model.net.fusion_weights": draws[0]})[1].startswith('{"image": ')


def test_log_scales_spread_over_decades():
    space = SearchSpace.from_spec(
        {
            "model.lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
            "model.net.hidden_dim": {"type": "int", "low": 16, "high": 1024, "log": True},
            "model.loss.init_args.lambda_weight": {"type": "float", "low": 0.0, "high": 1.0},
        }
    )
    dists = space.distributions()
    assert (
        dists["model.lr"].log
        and dists["model.net.hidden_dim"].log
        and not dists["model.loss.init_args.lambda_weight"].log
    )
    draws = sample_many(space, 400)
    lrs = [d["model.lr"] for d in draws]
    assert all(1e-5 <= x <= 1e-1 for x in lrs)
    below_geometric_middle = sum(x < 1e-3 for x in lrs) / len(lrs)  # log-uniform: half; uniform: ~1%
    assert 0.4 < below_geometric_middle < 0.6
    dims = [d["model.net.hidden_dim"] for d in draws]
    assert all(isinstance(x, int) and 16 <= x <= 1024 for x in dims)
    assert 0.35 < sum(x < 128 for x in dims) / len(dims) < 0.65


def test_conditional_entries_and_list_choices():
    space = SearchSpace.from_spec(
        {
            "model.net.fusion": {"type": "categorical", "choices": ["concat", "weighted_sum"]},
            "model.net.fusion_weights": {
                "type": "simplex",
                "keys": ALL,
                "when": {"model.net.fusion": "weighted_sum"},
            },
            "model.net.modalities": {"type": "categorical", "choices": [ALL, ["image", "attributes"]]},
        }
    )
    for values in sample_many(space, 60):
        assert ("model.net.fusion_weights" in values) == (values["model.net.fusion"] == "weighted_sum")
        assert values["model.net.modalities"] in (ALL, ["image", "attributes"])
    fixed = optuna.trial.FixedTrial({"model.net.fusion": "concat", "model.net.modalities": json.dumps(ALL)})
    assert to_overrides(space.sample(fixed)) == [
        "--model.net.fusion",
        "concat",
        "--model.net.modalities",
        '["image", "title", "attributes"]',
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e-5, "1.0e-05"), (0.07, "0.07"), (True, "true"), (None, "null"), (512, "512"), ({"a": 1}, '{"a": 1}')],
)
def test_override_values_read_back_as_yaml(value, text):
    assert format_override_value(value) == text
    assert yaml.safe_load(text) == value


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"model.lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log scale needs low > 0"),
        ({"model.lr": {"type": "float", "low": 1.0, "high": 0.1}}, "low 1.0 > high 0.1"),
        ({"model.lr": {"type": "uniform", "low": 0, "high": 1}}, "type must be one of"),
        ({"model.lr": {"type": "float", "low": 0, "high": 1, "lgo": True}}, "unknown option(s) ['lgo']"),
        (
            {"model.net.fusion_weights": {"type": "simplex", "keys": ["image"]}},
            "a list of >= 2 distinct names",
        ),
        (
            {
                "model.net.fusion_weights": {
                    "type": "simplex",
                    "keys": ALL,
                    "when": {"model.net.fusion": "weighted_sum"},
                }
            },
            "'when' names 'model.net.fusion'",
        ),
        ({"model.loss": {"type": "categorical", "choices": []}}, "non-empty 'choices'"),
    ],
)
def test_bad_search_spaces_name_the_entry(spec, needle):
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace.from_spec(spec)
    assert needle in str(info.value)
