"""Drawing the splits (``datamodules.splits``) as ``clipita shard`` runs it: unseen leaves only in test,
reproducible by seed, fractions respected, a single-product leaf kept in train."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from shop_catalogue import LEAVES, SPLITS, build_catalogue, read_back, shard_shop

from clipita_core.manifest import Manifest
from datamodules.sharding import (
    choose_unseen,
    shard_catalogue,
)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path, dict[str, dict]]:
    return shard_shop(tmp_path_factory)


def test_unseen_leaves_only_in_test(sharded) -> None:
    manifest, out, _ = sharded
    unseen = {tuple(p) for p in manifest.unseen_categories}
    assert len(unseen) == 1  # ceil(0.2 * 5 leaves)
    records = read_back(manifest, out)
    unseen_splits = {r["split"] for r in records.values() if tuple(r["json"]["category"]) in unseen}
    assert unseen_splits == {"test"}
    for split in ("train", "val"):
        for name in manifest.split(split).per_category:
            assert tuple(name.split(" > ")) not in unseen
    seen_train = {tuple(r["json"]["category"]) for r in records.values() if r["split"] == "train"}
    assert seen_train == set(LEAVES) - unseen  # every seen leaf keeps products in train


def split_of(manifest: Manifest, out: Path) -> dict[str, str]:
    return {pid: rec["split"] for pid, rec in read_back(manifest, out).items()}


def test_splits_reproducible_by_seed(tmp_path: Path) -> None:
    yaml_path, _ = build_catalogue(tmp_path, per_leaf=12)
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        manifest = shard_catalogue(
            str(yaml_path), str(tmp_path / name), shard_size=10, seed=seed, progress=False
        )
        runs[name] = (manifest, split_of(manifest, tmp_path / name))
    (ma, sa), (mb, sb), (mc, sc) = runs["a"], runs["b"], runs["c"]
    assert sa == sb and ma.content_hash == mb.content_hash
    assert ma.unseen_categories == mb.unseen_categories
    for split in SPLITS:  # byte-identical shards
        for name in ma.split(split).shards:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sc != sa and mc.content_hash != ma.content_hash


def test_split_fractions_roughly_respected(tmp_path: Path) -> None:
    yaml_path, expected = build_catalogue(tmp_path, per_leaf=60, bad_rows=False)
    manifest = shard_catalogue(
        str(yaml_path),
        str(tmp_path / "out"),
        unseen_fraction=0.0,
        val_fraction=0.2,
        test_fraction=0.1,
        progress=False,
    )
    assert manifest.unseen_categories == []
    counts = {s: manifest.count(s) for s in SPLITS}
    assert abs(counts["val"] / len(expected) - 0.2) < 0.07
    assert abs(counts["test"] / len(expected) - 0.1) < 0.07


def test_choose_unseen_bounds() -> None:

    leaves = [("L", str(i)) for i in range(10)]
    assert len(choose_unseen(leaves, 0.2, random.Random(0))) == 2
    assert len(choose_unseen(leaves, 0.01, random.Random(0))) == 1  # at least one
    assert len(choose_unseen(leaves, 0.99, random.Random(0))) == 9  # never all
    assert len(choose_unseen(leaves, 0.25, random.Random(0))) == 3  # rounded up
    assert choose_unseen(leaves[:1], 0.5, random.Random(0)) == []
    assert choose_unseen(leaves, 0.0, random.Random(0)) == []


def test_single_product_leaf_goes_to_train(tmp_path: Path) -> None:
    yaml_path, _ = build_catalogue(tmp_path, per_leaf=1, bad_rows=False)
    for seed in range(5):
        manifest = shard_catalogue(
            str(yaml_path),
            str(tmp_path / "out"),
            seed=seed,
            val_fraction=0.4,
            test_fraction=0.4,
            progress=False,
        )
        unseen = len(manifest.unseen_categories)
        assert manifest.count("train") == 5 - unseen
        assert manifest.count("test") == unseen
