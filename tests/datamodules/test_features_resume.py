"""A SIGKILLed encode resumes where it stopped: finished feature shards are kept, only the others are encoded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datamodules.features import manifest_shards
from datamodules.sample_catalogue import generate_sample_catalogue
from datamodules.sharding import load_manifest, shard_catalogue

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import sys, time
from pathlib import Path
from datamodules import features
from datamodules.feature_encoding import encode_features
from datamodules.sharding import load_manifest
from lightning_modules.components import ImageEncoder, TextEncoder

shard_dir, root, slow = sys.argv[1], sys.argv[2], sys.argv[3] == "slow"
written = []
original = features.FeatureStore.write_shard
def counting(self, shard, ids, arrays):
    written.append((self.kind, shard))
    original(self, shard, ids, arrays)
features.FeatureStore.write_shard = counting

class SlowImages(ImageEncoder):
    def forward(self, images):
        if slow:
            time.sleep(0.4)  # the parent kills this process part-way through
        return super().forward(images)

image = SlowImages(image_model="test_efficientnet", image_weights="none", image_size=32)
encode_features(shard_dir, load_manifest(shard_dir), root, image, TextEncoder(), batch_size=10, num_workers=1,
                progress=False)
print("WRITTEN", len(written))
"""


def _child(shard_dir: Path, root: Path, mode: str) -> subprocess.Popen:
    env = dict(
        os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES=""
    )
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(shard_dir), str(root), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _done(root: Path) -> dict[str, int]:
    """Finished feature shards (ids file present) of every store, with their modification times."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.glob("*/*.ids.npy")}


@pytest.mark.slow
def test_a_killed_encode_resumes_without_re_encoding_finished_shards(tmp_path):
    catalog = generate_sample_catalogue(str(tmp_path / "catalogue"), num_products=150, seed=0)
    shard_dir, root = tmp_path / "shards", tmp_path / "features"
    shard_catalogue(str(catalog), str(shard_dir), shard_size=10, seed=0, progress=False)
    shards = manifest_shards(load_manifest(str(shard_dir)))
    total = 2 * len(shards)  # an image and a text feature shard per input shard

    child = _child(shard_dir, root, "slow")
    deadline = time.monotonic() + 240
    while len(_done(root)) < 4 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = _done(root)
    assert child.returncode == -signal.SIGKILL
    assert 4 <= len(before) < total, f"kill came too late or too early: {len(before)} of {total} done"
    assert not list(root.glob("*/complete.json"))  # a killed encode never looks complete

    resumed = _child(shard_dir, root, "fast")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    after = _done(root)
    assert len(after) == total and len(list(root.glob("*/complete.json"))) == 2
    assert {k: after[k] for k in before} == before  # finished shards untouched
    assert f"WRITTEN {total - len(before)}" in out  # and only the others encoded
