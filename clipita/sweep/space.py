"""Search spaces: the ``search_space`` block of a sweep YAML, sampled through an Optuna trial into ``--key value``
overrides of ``clipita fit``.

Every entry is keyed by the config key it sets (``model.temperature``, ``data.batch_size``, ``seed_everything``)::

    model.temperature: {type: float, low: 0.02, high: 0.2, log: true}
    model.hidden_dim: {type: int, low: 256, high: 1024, step: 256}
    model.loss: {type: categorical, choices: [info_nce, multi_positive]}
    model.modalities: {type: categorical, choices: [[image, title, attributes], [image, attributes]]}
    model.fusion_weights: {type: simplex, keys: [image, title, attributes], when: {model.fusion: weighted_sum}}

``simplex`` draws weights uniformly on the probability simplex (a flat Dirichlet): one Optuna float ``u_k`` in
``(0, 1]`` per key, ``e_k = -log(u_k)`` (an exponential draw), ``w_k = e_k / sum(e)``. The sampler sees independent
floats, the model always gets weights that are >= 0 and sum to one. ``when`` makes an entry conditional on values
sampled earlier in the block (or fixed in ``overrides``); inactive entries are neither sampled nor passed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

PARAM_TYPES = ("float", "int", "categorical", "simplex")
_KEYS_BY_TYPE: dict[str, set[str]] = {
    "float": {"type", "low", "high", "log", "step", "when"},
    "int": {"type", "low", "high", "log", "step", "when"},
    "categorical": {"type", "choices", "when"},
    "simplex": {"type", "keys", "when"},
}
SIMPLEX_LOW = 1e-6  # u_k's lower bound: e_k = -log(u_k) stays finite (<= 13.8)


class SearchSpaceError(ValueError):
    """A search-space entry is malformed (named by its key)."""


def format_override_value(value: Any) -> str:
    """Render a Python value as a ``clipita fit`` command-line value (parsed back as YAML by jsonargparse).

    Floats always keep a decimal point (``1.0e-05``: YAML 1.1 reads ``1e-05`` as a string); dicts and lists are
    JSON (a subset of YAML); booleans are ``true``/``false``; None is ``null``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def _encode_choice(choice: Any) -> Any:
    """Optuna stores None/bool/int/float/str choices; lists and dicts travel as their JSON text."""
    if choice is None or isinstance(choice, (bool, int, float, str)):
        return choice
    return json.dumps(choice)


@dataclass
class Param:
    """One search-space entry.

    Args:
        key: the ``clipita fit`` config key it sets (dotted).
        type: ``float``, ``int``, ``categorical`` or ``simplex``.
        low: lower bound (float/int).
        high: upper bound (float/int).
        log: sample on a log scale (float/int).
        step: discretisation step (float/int).
        choices: the values of a categorical (any YAML value; lists/dicts are allowed).
        keys: the component names of a simplex (e.g. the modalities).
        when: condition ``{other_key: value or [values]}`` on earlier entries or fixed overrides.
    """

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    when: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, key: str, spec: Mapping[str, Any]) -> Param:
        if not isinstance(spec, Mapping):
            raise SearchSpaceError(f"search_space.{key}: expected a mapping with a 'type', got {spec!r}")
        kind = spec.get("type")
        if kind not in PARAM_TYPES:
            raise SearchSpaceError(
                f"search_space.{key}: type must be one of {list(PARAM_TYPES)}, got {kind!r}"
            )
        unknown = set(spec) - _KEYS_BY_TYPE[kind]
        if unknown:
            raise SearchSpaceError(
                f"search_space.{key}: unknown option(s) {sorted(unknown)} for type {kind}; "
                f"allowed: {sorted(_KEYS_BY_TYPE[kind])}"
            )
        when = {
            k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in (spec.get("when") or {}).items()
        }
        param = cls(key=key, type=kind, when=when)
        if kind in ("float", "int"):
            if "low" not in spec or "high" not in spec:
                raise SearchSpaceError(f"search_space.{key}: {kind} needs 'low' and 'high'")
            cast = float if kind == "float" else int
            try:
                param.low, param.high = cast(spec["low"]), cast(spec["high"])
            except (TypeError, ValueError) as err:
                raise SearchSpaceError(f"search_space.{key}: low/high must be numbers ({err})") from err
            param.log = bool(spec.get("log", False))
            param.step = None if spec.get("step") is None else cast(spec["step"])
            if param.low > param.high:
                raise SearchSpaceError(f"search_space.{key}: low {param.low} > high {param.high}")
            if param.log and param.low <= 0:
                raise SearchSpaceError(f"search_space.{key}: a log scale needs low > 0, got {param.low}")
            if param.log and param.step is not None and not (kind == "int" and param.step == 1):
                raise SearchSpaceError(f"search_space.{key}: {kind} cannot have both 'log' and 'step'")
            if param.step is not None and param.step <= 0:
                raise SearchSpaceError(f"search_space.{key}: step must be > 0, got {param.step}")
        elif kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise SearchSpaceError(f"search_space.{key}: categorical needs a non-empty 'choices' list")
            param.choices = list(choices)
        else:
            keys = spec.get("keys")
            if not isinstance(keys, list) or len(keys) < 2 or len(set(keys)) != len(keys):
                raise SearchSpaceError(
                    f"search_space.{key}: simplex needs 'keys': a list of >= 2 distinct names"
                )
            param.keys = [str(k) for k in keys]
        return param

    # ------------------------------------------------------------------------------------------------ sampling
    def optuna_names(self) -> list[str]:
        """The Optuna parameter names this entry owns."""
        return [f"{self.key}.{k}" for k in self.keys] if self.type == "simplex" else [self.key]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The Optuna distribution of each parameter name (for enqueue checks and docs)."""
        D = optuna.distributions
        if self.type == "float":
            return {self.key: D.FloatDistribution(self.low, self.high, log=self.log, step=self.step)}
        if self.type == "int":
            return {
                self.key: D.IntDistribution(
                    int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
                )
            }
        if self.type == "categorical":
            return {self.key: D.CategoricalDistribution([_encode_choice(c) for c in self.choices])}
        return {name: D.FloatDistribution(SIMPLEX_LOW, 1.0) for name in self.optuna_names()}

    def sample(self, trial: optuna.trial.BaseTrial) -> Any:
        """Draw this entry's value through ``trial`` (a stored value is returned as is when re-sampled)."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        if self.type == "categorical":
            encoded = [_encode_choice(c) for c in self.choices]
            picked = trial.suggest_categorical(self.key, encoded)
            return self.choices[encoded.index(picked)]
        u = {k: trial.suggest_float(f"{self.key}.{k}", SIMPLEX_LOW, 1.0) for k in self.keys}
        return simplex_from_uniforms(u)

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether every ``when`` condition holds for the values chosen so far."""
        return all(k in values and values[k] in allowed for k, allowed in self.when.items())


def simplex_from_uniforms(u: Mapping[str, float]) -> dict[str, float]:
    """Map uniforms in ``(0, 1]`` to a point on the simplex via exponential draws (a flat Dirichlet sample)."""
    e = {k: -math.log(max(float(v), SIMPLEX_LOW)) for k, v in u.items()}
    total = sum(e.values())
    if total <= 0:  # every u_k == 1: the simplex's centre
        return {k: 1.0 / len(e) for k in e}
    return {k: v / total for k, v in e.items()}


class SearchSpace:
    """An ordered list of :class:`Param` entries (conditions may only look backwards)."""

    def __init__(self, params: list[Param]) -> None:
        self.params = params
        seen: set[str] = set()
        for p in params:
            if p.key in seen:
                raise SearchSpaceError(f"search_space.{p.key} appears twice")
            seen.add(p.key)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None, fixed: Mapping[str, Any] = ()) -> SearchSpace:
        """Build from the YAML block; ``fixed`` (the sweep's fixed overrides) may be referenced by ``when``."""
        if not spec:
            raise SearchSpaceError("search_space is empty: name at least one config key to search")
        if not isinstance(spec, Mapping):
            raise SearchSpaceError(
                f"search_space must be a mapping of config keys, got {type(spec).__name__}"
            )
        params = [Param.from_spec(str(k), v) for k, v in spec.items()]
        fixed_keys = set(fixed)
        earlier: set[str] = set()
        for p in params:
            if p.key in fixed_keys:
                raise SearchSpaceError(f"search_space.{p.key} is also fixed in overrides: keep one")
            for k in p.when:
                if k not in earlier and k not in fixed_keys:
                    raise SearchSpaceError(
                        f"search_space.{p.key}: 'when' names {k!r}, which is neither an earlier search_space "
                        "entry nor a fixed override"
                    )
            earlier.add(p.key)
        return cls(params)

    def sample(self, trial: optuna.trial.BaseTrial, fixed: Mapping[str, Any] = ()) -> dict[str, Any]:
        """The active entries' values for this trial, in search-space order."""
        values: dict[str, Any] = dict(fixed)
        chosen: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.key] = chosen[p.key] = p.sample(trial)
        return chosen

    def has_non_float(self) -> list[str]:
        """Keys CMA-ES cannot model jointly (categoricals and conditional entries)."""
        return [p.key for p in self.params if p.type == "categorical" or p.when]

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for p in self.params:
            out.update(p.distributions())
        return out


def to_overrides(values: Mapping[str, Any]) -> list[str]:
    """``{key: value}`` -> ``["--key", "value", ...]`` for ``fit_and_test``."""
    out: list[str] = []
    for key, value in values.items():
        out += [f"--{key}", format_override_value(value)]
    return out
