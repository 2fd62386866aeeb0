"""Optuna sweeps over ``clipita fit`` configs: search spaces, studies, trials and reports (``clipita sweep``)."""

from __future__ import annotations

from .space import Param, SearchSpace, SearchSpaceError, format_override_value
from .spec import SweepSpec, load_sweep_spec

__all__ = [
    "Param",
    "SearchSpace",
    "SearchSpaceError",
    "SweepSpec",
    "format_override_value",
    "load_sweep_spec",
]
