"""Helpers of the multi-process (gloo) CLI tests: the tiny config they share, ``clipita`` in a subprocess, and the
metrics a run's CSV logger wrote."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "quickstart.yaml"


def tiny(work_dir: Path) -> list[str]:
    """The shared tiny config with these tests' changes (more products in small shards; a tiny random image
    tower)."""
    return tiny_overrides(
        {
            "data.work_dir": str(work_dir),
            "data.sample_products": 240,
            "data.shard_size": 20,
            "model.net.image_model": "test_efficientnet",
            "model.net.image_weights": "none",
            "model.net.image_size": 32,
        }
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args: list[str], cwd: Path, torchrun: int = 0) -> subprocess.CompletedProcess:
    """``python -m clipita.cli *args`` on the CPU, one thread per process; fails the test on a non-zero exit.

    With ``torchrun=n`` the command is launched as n processes by torchrun (``torch.distributed.run``), as a cluster
    launcher would, instead of Lightning starting its own ranks."""
    launcher = []
    if torchrun:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(torchrun)]
        launcher += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    env = dict(
        os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"
    )
    result = subprocess.run(
        [sys.executable, *launcher, "-m", "clipita.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def ddp_args(ranks: int, prefix: str = "--trainer.") -> list[str]:
    """Run on ``ranks`` CPU processes (gloo DDP when more than one)."""
    return [f"{prefix}devices", str(ranks), f"{prefix}strategy", "ddp" if ranks > 1 else "auto"]


def logged_metrics(logs: Path, prefixes: tuple[str, ...] = ("val/",)) -> dict[str, float]:
    """``{name@step: value}`` of the metrics under ``prefixes`` in the one ``metrics.csv`` below ``logs``."""
    rows = list(csv.DictReader(next(logs.rglob("metrics.csv")).open()))
    return {
        f"{k}@{row['step']}": float(v) for row in rows for k, v in row.items() if k.startswith(prefixes) and v
    }
