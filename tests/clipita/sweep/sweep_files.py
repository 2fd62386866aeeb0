"""The sweep tests' shared pieces: the quickstart recipe a sweep starts from, the modalities, and a sweep YAML
written from keyword arguments."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
ALL = ["image", "title", "attributes"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write_sweep(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
