"""Training killed with SIGKILL mid-epoch resumes with `--ckpt_path last` and ends where an uninterrupted run ends.

Tolerance: exact up to 1e-6. Each epoch's shuffle order is a function of (seed, epoch) only (EpochSeededSampler), each
step's dropout and sampled training levels one of (seed, epoch, batch index) (ClipItaModule.on_train_batch_start,
lightning_modules/step_seed.py; a mid-epoch checkpoint of the streamed path: tests/lightning_modules/test_step_seed.py),
the resumed run restarts the killed epoch from the checkpoint written at the end of the previous one, and CPU kernels
are deterministic for these sizes - so the weights and metrics should match to float precision, not just
approximately. Checkpoints live in each run's own
version folder (``logs/quickstart/version_N/checkpoints``): ``--ckpt_path last`` finds the newest ``last.ckpt`` across
the run name's versions and the resumed run writes a new version.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import apply_tiny

from lightning_modules.checkpointing import find_last_checkpoint

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4


def _config(tmp_path: Path, name: str, work_dir: Path, sleep: float) -> Path:
    config = yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text())
    apply_tiny(
        config,
        {
            "trainer.max_epochs": EPOCHS,
            "trainer.logger.init_args.save_dir": str(tmp_path / name / "logs"),
            "data.work_dir": str(work_dir),
            "test_after_fit": False,
        },
    )
    assert not any("dirpath" in cb.get("init_args", {}) for cb in config["trainer"]["callbacks"])
    config["trainer"]["callbacks"].append(
        {"class_path": "reliability_callbacks.SleepEveryBatch", "init_args": {"seconds": sleep}}
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "clipita.cli", "fit", "--config", str(config), *extra]


def _env() -> dict:
    return dict(
        os.environ,
        PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}",
        HF_HUB_OFFLINE="1",
        CUDA_VISIBLE_DEVICES="",
    )


def _final_val(logs: Path) -> dict[str, float]:
    rows = []
    for metrics_csv in sorted(logs.rglob("metrics.csv")):
        with open(metrics_csv) as f:
            rows += [r for r in csv.DictReader(f) if r.get("val/map@10")]
    last = max(rows, key=lambda r: int(r["epoch"]))
    assert int(last["epoch"]) == EPOCHS - 1
    return {k: float(v) for k, v in last.items() if k.startswith("val/") and v}


def _head_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {
        k: v for k, v in state.items() if not k.startswith("net.text_encoder") and "image_encoder" not in k
    }


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    work = tmp_path / "work"
    straight = _config(tmp_path, "straight", work, sleep=0.0)
    done = subprocess.run(
        _command(straight), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]

    killed = _config(tmp_path, "killed", work, sleep=0.4)
    checkpoints = (
        tmp_path / "killed" / "logs" / "quickstart" / "version_0" / "checkpoints"
    )  # the run's own folder
    process = subprocess.Popen(
        _command(killed), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 600
    while time.time() < deadline and not list(checkpoints.glob("epoch=1-*.ckpt")):
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        time.sleep(0.2)
    time.sleep(1.0)  # a few batches into epoch 2
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not list(checkpoints.glob("epoch=3-*.ckpt"))

    resumed = subprocess.run(
        _command(killed, "--ckpt_path", "last"),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint" in resumed.stderr + resumed.stdout

    a, b = _final_val(tmp_path / "straight" / "logs"), _final_val(tmp_path / "killed" / "logs")
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    # the resumed run logs and checkpoints into a new version folder; the killed run's folder is left as it was
    assert (tmp_path / "killed" / "logs" / "quickstart" / "version_1" / "metrics.csv").is_file()
    wa = _head_weights(find_last_checkpoint(tmp_path / "straight" / "logs" / "quickstart"))
    wb = _head_weights(find_last_checkpoint(tmp_path / "killed" / "logs" / "quickstart"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=1e-6), key
