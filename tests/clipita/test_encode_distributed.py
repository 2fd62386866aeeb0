"""``clipita encode`` split across two gloo ranks writes the same feature store as one process, and evaluating from
that store on two ranks gives the same metrics as one process on the one-rank store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from distributed_cli import CONFIG, ddp_args, logged_metrics, run, tiny

from clipita_core.tree import CategoryTree
from datamodules.feature_split import FeatureSplit
from datamodules.features import FeatureStore, manifest_shards
from datamodules.sharding import SPLITS, load_manifest


def encode(work_dir: Path, ranks: int, cwd: Path, torchrun: bool = False) -> subprocess.CompletedProcess:
    overrides = "[" + ", ".join(f'"{a}"' for a in tiny(work_dir)) + "]"
    return run(
        ["encode", str(CONFIG), "--overrides", overrides, *ddp_args(ranks, "--"), "--accelerator", "cpu",
         "--batch_size", "8", "--num_workers", "2"],
        cwd,
        torchrun=ranks if torchrun else 0,
    )  # fmt: skip


def features(work_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    shard_dir = work_dir / "shards" / "seed0"
    manifest = load_manifest(str(shard_dir), check_hashes=False)
    stores = []
    for folder in sorted((work_dir / "features").iterdir()):
        meta = json.loads((folder / "meta.json").read_text())
        store = FeatureStore(folder, meta, manifest_shards(manifest))
        assert store.is_complete()
        stores.append(store)
    tree = CategoryTree.from_json(manifest.tree_paths)
    out = {}
    for split in SPLITS:
        info = manifest.split(split)
        dataset = FeatureSplit(stores, [(n, info.shard_files[n].count) for n in info.shards], tree)
        out[split] = dataset.batch(np.arange(len(dataset)))
    return out


def validate_metrics(work_dir: Path, ranks: int, cwd: Path) -> dict[str, float]:
    logs = cwd / f"logs{ranks}"
    run(
        ["validate", "--config", str(CONFIG), *tiny(work_dir), *ddp_args(ranks),
         "--trainer.logger.init_args.save_dir", str(logs)],
        cwd,
    )  # fmt: skip
    return logged_metrics(logs)


def assert_same_store(one: Path, two: Path) -> None:
    """The two work dirs' feature stores hold the same products in the same order, features within float16."""
    a, b = features(one), features(two)
    for split in SPLITS:
        assert a[split]["product_id"] == b[split]["product_id"]
        for key in ("image_features", "title_features", "attribute_features"):
            np.testing.assert_allclose(a[split][key].numpy(), b[split][key].numpy(), atol=2e-3)
        for key in ("title_mask", "attribute_mask", "category_ids"):
            np.testing.assert_array_equal(a[split][key].numpy(), b[split][key].numpy())


@pytest.mark.slow
def test_two_rank_encode_and_evaluation_match_one_rank(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    encode(one, 1, tmp_path)
    result = encode(two, 2, tmp_path)
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    assert_same_store(one, two)

    # a restart where one rank has nothing left (shard 0 goes to rank 0; rank 1's loader is empty) must not
    # crash or hang at the barriers, and only the missing shard is written again
    store = sorted((two / "features").iterdir())[0]
    first = sorted(store.glob("*.ids.npy"))[0]
    others = {p: p.stat().st_mtime_ns for p in store.glob("*.ids.npy") if p != first}
    first.unlink()
    (store / "complete.json").unlink()
    encode(two, 2, tmp_path)
    assert first.exists() and (store / "complete.json").exists()
    assert {p: p.stat().st_mtime_ns for p in others} == others

    m1 = validate_metrics(one, 1, tmp_path)
    m2 = validate_metrics(two, 2, tmp_path)
    assert "val/map@10@0" in m1
    assert m1.keys() == m2.keys()
    for key in m1:
        assert m2[key] == pytest.approx(m1[key], abs=1e-4), key


@pytest.mark.slow
def test_a_torchrun_launched_encode_writes_the_one_rank_store(tmp_path):
    """A cluster launcher's ranks are used as they are: two processes started by torchrun split the shards and
    write the store one process writes."""
    one, two = tmp_path / "one", tmp_path / "two"
    encode(one, 1, tmp_path)
    result = encode(two, 2, tmp_path, torchrun=True)
    assert "distributed_backend=gloo" in result.stdout + result.stderr
    assert_same_store(one, two)
