"""Hypothesis profiles: ``ci`` (default) is derandomised, so every run and every fresh clone draws the same
examples; ``fuzz`` explores (random seeds, 20x the examples, the example database kept).

Select ``fuzz`` with ``HYPOTHESIS_PROFILE=fuzz`` or by running the fuzz-marked tests: ``pytest -m fuzz``.
Property tests take their example count from :func:`examples` so the fuzz profile can scale it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_FACTOR = 20

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

_active = {"name": "ci"}


def load(name: str | None = None) -> str:
    """Load profile ``name`` (default: ``$HYPOTHESIS_PROFILE`` or ``ci``); returns the name loaded."""
    name = name or os.environ.get("HYPOTHESIS_PROFILE") or "ci"
    settings.load_profile(name)
    _active["name"] = name
    return name


def active() -> str:
    return _active["name"]


def examples(ci_examples: int) -> int:
    """Examples for a property test: ``ci_examples`` in CI, ``FUZZ_FACTOR`` times more when fuzzing."""
    return ci_examples * FUZZ_FACTOR if active() == "fuzz" else ci_examples


def ci_settings(ci_examples: int) -> settings:
    """``@ci_settings(60)``: the active profile with the example count of :func:`examples`."""
    return settings(max_examples=examples(ci_examples))
