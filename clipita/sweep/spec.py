"""The sweep YAML (``sweeps/*.yaml``): what to train, what to search, how to search it, where the study lives::

    base_config: experiments/clip_ita.yaml        # a `clipita fit` config (path relative to the working dir)
    overrides:                                    # fixed config keys for every trial
      trainer.max_epochs: 15
    search_space: {...}                           # see lightning_modules/sweeping/space.py
    objective: {metric: val/map@10, direction: maximize, reduce: best}
    sampler: {name: tpe, seed: 0}                 # a name in SAMPLERS (below), other keys go to the sampler
    pruner: {name: median, n_warmup_steps: 3}     # a name in PRUNERS (below), other keys go to the pruner
    n_trials: 30                                  # the study's total (trials already in it count)
    storage: null                                 # default sqlite:///<output_dir>/<study_name>/study.db
    study_name: null                              # default: the sweep YAML's file name
    output_dir: runs/sweeps
    enqueue: [{model.net.fusion: concat}]             # trials to run first (e.g. the baseline), user-facing values

``sweeps/README.md`` documents every key.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from clipita_core.registry import Registry

from .space import SearchSpace, SearchSpaceError, _encode_choice

SPEC_KEYS = {
    "base_config",
    "overrides",
    "search_space",
    "objective",
    "sampler",
    "pruner",
    "n_trials",
    "timeout",
    "storage",
    "study_name",
    "output_dir",
    "best_config",
    "enqueue",
    "heartbeat_interval",
    "retry_stale",
    "max_failures_in_a_row",
}
SAMPLERS: Registry[Callable[..., optuna.samplers.BaseSampler]] = Registry(
    "sampler",
    {
        "tpe": optuna.samplers.TPESampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "random": optuna.samplers.RandomSampler,
        "gp": optuna.samplers.GPSampler,
    },
)
PRUNERS: Registry[Callable[..., optuna.pruners.BasePruner]] = Registry(
    "pruner",
    {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "threshold": optuna.pruners.ThresholdPruner,
        "none": optuna.pruners.NopPruner,
    },
)
REDUCTIONS = ("best", "last")


@dataclass
class SweepSpec:
    """A parsed sweep YAML (every field documented in the module docstring)."""

    base_config: str | None
    search_space: SearchSpace
    overrides: dict[str, Any] = field(default_factory=dict)
    metric: str = "val/map@10"
    direction: str = "maximize"
    reduce: str = "best"
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    n_trials: int = 20
    timeout: float | None = None
    storage: str | None = None
    study_name: str = "sweep"
    output_dir: str = "runs/sweeps"
    best_config: str | None = None
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    heartbeat_interval: int = 60
    retry_stale: int = 1
    max_failures_in_a_row: int = 5
    source: str | None = None
    base_config_origin: str | None = None

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.study_name

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def enqueue_params(self) -> list[dict[str, Any]]:
        """``enqueue`` entries in Optuna's terms (simplex weights -> their uniforms, list choices -> JSON)."""
        by_key = {p.key: p for p in self.search_space.params}
        out = []
        for i, entry in enumerate(self.enqueue):
            params: dict[str, Any] = {}
            for key, value in entry.items():
                if key not in by_key:
                    raise SearchSpaceError(f"enqueue[{i}] names {key!r}, which is not in search_space")
                p = by_key[key]
                if p.type == "simplex":
                    if not isinstance(value, Mapping) or set(value) != set(p.keys):
                        raise SearchSpaceError(f"enqueue[{i}].{key}: give a weight for each of {p.keys}")
                    total = sum(float(v) for v in value.values())
                    for k, v in value.items():  # u = exp(-w): -log(u) / sum(-log(u)) gives w back
                        params[f"{key}.{k}"] = math.exp(-float(v) / total)
                elif p.type == "categorical":
                    params[key] = _encode_choice(value)
                else:
                    params[key] = value
            out.append(params)
        return out


def _resolve_base(path: str | None, sweep_file: Path) -> str | None:
    if path is None:
        return None
    candidate = Path(path)
    if candidate.is_absolute() or candidate.is_file():
        if not candidate.is_file():
            raise FileNotFoundError(f"base_config {path!r} does not exist")
        return str(candidate)
    for folder in sweep_file.resolve().parents:  # the sweep file's folder, then its parents (the repo root)
        if (folder / candidate).is_file():
            return str(folder / candidate)
    raise FileNotFoundError(
        f"base_config {path!r} is neither relative to the working directory nor to {sweep_file}'s folder or parents"
    )


def load_sweep_spec(path: str) -> SweepSpec:
    """Read and validate a sweep YAML; every error names the offending key."""
    sweep_file = Path(path)
    if not sweep_file.is_file():
        raise FileNotFoundError(f"sweep config {path!r} does not exist")
    raw = yaml.safe_load(sweep_file.read_text()) or {}
    if not isinstance(raw, Mapping):
        raise SearchSpaceError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise SearchSpaceError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    overrides = dict(raw.get("overrides") or {})
    objective = dict(raw.get("objective") or {})
    bad = set(objective) - {"metric", "direction", "reduce"}
    if bad:
        raise SearchSpaceError(f"{path}: objective has unknown key(s) {sorted(bad)}")
    spec = SweepSpec(
        base_config=_resolve_base(raw.get("base_config"), sweep_file),
        search_space=SearchSpace.from_spec(raw.get("search_space"), overrides),
        overrides=overrides,
        metric=str(objective.get("metric", "val/map@10")),
        direction=str(objective.get("direction", "maximize")),
        reduce=str(objective.get("reduce", "best")),
        sampler=_named(raw.get("sampler"), "tpe", SAMPLERS, "sampler"),
        pruner=_named(raw.get("pruner"), "median", PRUNERS, "pruner"),
        n_trials=int(raw.get("n_trials", 20)),
        timeout=None if raw.get("timeout") is None else float(raw["timeout"]),
        storage=raw.get("storage"),
        study_name=str(raw.get("study_name") or sweep_file.stem),
        output_dir=str(raw.get("output_dir") or "runs/sweeps"),
        best_config=raw.get("best_config"),
        enqueue=[dict(e) for e in raw.get("enqueue") or []],
        heartbeat_interval=int(raw.get("heartbeat_interval", 60)),
        retry_stale=int(raw.get("retry_stale", 1)),
        max_failures_in_a_row=int(raw.get("max_failures_in_a_row", 5)),
        source=str(sweep_file),
    )
    if spec.direction not in ("maximize", "minimize"):
        raise SearchSpaceError(
            f"{path}: objective.direction must be maximize or minimize, got {spec.direction!r}"
        )
    if spec.reduce not in REDUCTIONS:
        raise SearchSpaceError(
            f"{path}: objective.reduce must be one of {list(REDUCTIONS)}, got {spec.reduce!r}"
        )
    spec.enqueue_params()  # validate early
    return spec


def _named(block: Any, default: str, allowed: Registry, what: str) -> dict[str, Any]:
    if block is None:
        return {"name": default}
    if isinstance(block, str):
        block = {"name": block}
    block = dict(block)
    block.setdefault("name", default)
    try:
        allowed.check(block["name"])
    except ValueError as err:  # the registry's one message, naming the key
        raise SearchSpaceError(f"{what}.name: {err}") from None
    return block


# ------------------------------------------------------------------------------------------------- factories
class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Seed the wrapped sampler afresh for every trial with ``seed + trial.number``.

    With one fixed seed, every worker of a shared study would draw the same random start-up points (each process
    replays the same RNG stream): duplicate trials. The trial number is unique within a study (the storage assigns
    it), so this keeps workers apart and keeps a single worker's sweep reproducible. The wrapped samplers (TPE,
    CMA-ES, random, GP) read their history from the study, so rebuilding one per trial loses nothing but the RNG.

    Args:
        build: makes the wrapped sampler from a seed.
        seed: the base seed.
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._build, self._seed = build, int(seed)
        self._sampler = build(self._seed)

    @property
    def wrapped(self) -> optuna.samplers.BaseSampler:
        return self._sampler

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._sampler = self._build(self._seed + trial.number)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict
    ) -> dict[str, Any]:
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        param_name: str,
        param_distribution: optuna.distributions.BaseDistribution,
    ) -> Any:
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def make_sampler(
    block: Mapping[str, Any], search_space: SearchSpace | None = None
) -> optuna.samplers.BaseSampler:
    """Build the sampler named in ``block`` (other keys are its keyword arguments).

    A ``seed`` seeds each trial with ``seed + trial number`` (:class:`TrialSeededSampler`): reproducible with one
    worker, and no duplicate trials across workers.
    """
    kwargs = {k: v for k, v in block.items() if k != "name"}
    seed = kwargs.pop("seed", None)
    if seed is None:
        return _build_sampler(block["name"], kwargs, None, search_space)
    _build_sampler(block["name"], kwargs, int(seed), search_space)  # fail (and warn) once, up front
    return TrialSeededSampler(lambda s: _quiet(_build_sampler, block["name"], kwargs, s, None), int(seed))


def _quiet(fn: Callable, *args: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-argument warnings, once per trial otherwise
        return fn(*args)


def _build_sampler(
    name: str, kwargs: dict[str, Any], seed: int | None, search_space: SearchSpace | None
) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise SearchSpaceError(f"unknown sampler {name!r}; expected one of {list(SAMPLERS)}")
    if name == "cmaes" and search_space is not None and search_space.has_non_float():
        optuna.logging.get_logger("optuna").warning(
            "CMA-ES models only unconditional float/int parameters; %s fall back to its independent sampler",
            search_space.has_non_float(),
        )
    return SAMPLERS[name](**{**kwargs, "seed": seed})


def make_pruner(block: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """Build the pruner named in ``block`` (other keys are its keyword arguments)."""
    kwargs = {k: v for k, v in block.items() if k != "name"}
    if block["name"] not in PRUNERS:
        raise SearchSpaceError(f"unknown pruner {block['name']!r}; expected one of {list(PRUNERS)}")
    return PRUNERS[block["name"]](**kwargs)
