"""The feature store: one feature shard per input shard, built once, resumable, never complete while one is missing,
and read back row by row exactly as the whole arrays held in memory would be."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from clipita_core.tree import CategoryTree
from datamodules.epoch_sampler import EpochSeededSampler
from datamodules.feature_encoding import encode_features, make_stores
from datamodules.feature_split import FeatureSplit
from datamodules.features import FeatureCacheError, manifest_shards
from datamodules.sample_catalogue import generate_sample_catalogue
from datamodules.shard_encoding import encode_batch
from datamodules.sharding import SPLITS, load_manifest, shard_catalogue
from lightning_modules.components import ImageEncoder, TextEncoder


@pytest.fixture(scope="module")
def encoders():
    return ImageEncoder(image_model="test_efficientnet", image_weights="none", image_size=32), TextEncoder()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    catalog = generate_sample_catalogue(str(folder / "catalogue"), num_products=90, seed=0)
    shard_catalogue(str(catalog), str(folder / "shards"), shard_size=20, seed=0, progress=False)
    return str(folder / "shards"), load_manifest(str(folder / "shards"))


def _split(stores, manifest, split):
    info = manifest.split(split)
    shards = [(n, info.shard_files[n].count) for n in info.shards]
    return FeatureSplit(stores, shards, CategoryTree.from_json(manifest.tree_paths))


def test_cache_is_built_once_per_shard_and_reused(sharded, encoders, tmp_path):
    shard_dir, manifest = sharded
    image_encoder, text_encoder = encoders
    args = (shard_dir, manifest, tmp_path / "features", image_encoder, text_encoder)
    stores = encode_features(*args, batch_size=8, num_workers=0, progress=False)
    assert all(s.is_complete() for s in stores)
    names = [n for n, _, _ in manifest_shards(manifest)]
    image_files = sorted(p.name for p in stores[0].folder.glob("*.image.npy"))
    assert image_files == sorted(n.replace(".tar", ".image.npy") for n in names)  # one per input shard
    stamps = {p: p.stat().st_mtime_ns for s in stores for p in s.folder.glob("*.npy")}
    again = encode_features(*args, batch_size=8, num_workers=0, progress=False)
    assert [s.folder for s in again] == [s.folder for s in stores]
    assert {
        p: p.stat().st_mtime_ns for s in again for p in s.folder.glob("*.npy")
    } == stamps  # not re-encoded

    val = _split(stores, manifest, "val")
    batch = val.batch(np.arange(len(val)))
    assert len(val) == manifest.count("val")
    assert batch["image_features"].shape == (len(val), image_encoder.output_dim)
    assert batch["attribute_features"].shape[:2] == batch["attribute_mask"].shape
    assert not batch["attribute_mask"].all()  # the sample leaves some attributes out
    assert batch["title_mask"].all() and batch["title_mask"].dtype == torch.bool
    assert batch["category_ids"].shape == (
        len(val),
        CategoryTree.from_json(manifest.tree_paths).max_depth,
    )


def test_another_encoder_config_gets_another_image_cache_only(sharded, encoders, tmp_path):
    shard_dir, manifest = sharded
    _, text_encoder = encoders
    a = make_stores(
        tmp_path, manifest, ImageEncoder("test_efficientnet", "none", image_size=32), text_encoder
    )
    b = make_stores(
        tmp_path, manifest, ImageEncoder("test_efficientnet", "none", image_size=48), text_encoder
    )
    assert a["image"].folder != b["image"].folder and a["text"].folder == b["text"].folder


def test_cache_is_not_complete_while_a_shard_is_missing(sharded, encoders, tmp_path):
    shard_dir, manifest = sharded
    image_encoder, text_encoder = encoders
    args = (shard_dir, manifest, tmp_path / "features", image_encoder, text_encoder)
    # rank 1 of 2 alone: half the shards are written, nothing may be marked complete
    with pytest.raises(FeatureCacheError, match="incomplete"):
        encode_features(*args, batch_size=8, num_workers=0, rank=1, world_size=2, progress=False)
    stores = make_stores(tmp_path / "features", manifest, image_encoder, text_encoder)
    assert all(not s.is_complete() and s.missing_shards() for s in stores.values())
    assert not stores["image"].mark_complete()
    # rank 0 brings the rest and marks the cache complete
    encode_features(*args, batch_size=8, num_workers=0, rank=0, world_size=2, progress=False)
    assert all(s.is_complete() for s in stores.values())
    # a feature shard that disappears makes the cache incomplete again (and the next encode rewrites only it)
    victim = stores["text"].path(manifest.split("train").shards[0], "title")
    victim.unlink()
    assert not stores["text"].is_complete()
    with pytest.raises(FeatureCacheError, match="incomplete"):
        stores["text"].require_complete()


def test_positional_reads_serve_the_same_batches_as_arrays_in_memory(sharded, encoders, tmp_path):
    shard_dir, manifest = sharded
    image_encoder, text_encoder = encoders
    stores = encode_features(
        shard_dir,
        manifest,
        tmp_path,
        image_encoder,
        text_encoder,
        batch_size=8,
        num_workers=2,
        progress=False,
    )
    for split in SPLITS:
        dataset = _split(stores, manifest, split)
        info = manifest.split(split)
        # the old path: every array of the split loaded whole, rows taken by index
        whole = {
            key: np.concatenate([np.load(store.path(n, key)) for n in info.shards])
            for store in stores
            for key in store.arrays
        }
        sampler = EpochSeededSampler(len(dataset), seed=3)
        sampler.set_epoch(2)
        loader = DataLoader(dataset, batch_size=7, sampler=sampler, num_workers=0)
        order = list(sampler)
        seen = 0
        for batch in loader:
            rows = order[seen : seen + len(batch["product_id"])]
            seen += len(rows)
            np.testing.assert_array_equal(
                batch["image_features"].numpy(), whole["image"][rows].astype(np.float32)
            )
            np.testing.assert_array_equal(
                batch["title_features"].numpy(), whole["title"][rows].astype(np.float32)
            )
            np.testing.assert_array_equal(batch["attribute_mask"].numpy(), whole["attribute_mask"][rows])
            np.testing.assert_array_equal(
                batch["attribute_features"].numpy(), whole["attributes"][rows].astype(np.float32)
            )
            ids = np.concatenate([np.load(stores[0].path(n, "ids")) for n in info.shards])
            assert batch["product_id"] == ids[rows].tolist()
        assert seen == len(dataset)


def test_missing_titles_are_zero_rows_with_a_false_mask(encoders):
    image_encoder, text_encoder = encoders
    tree = CategoryTree.from_paths([("A", "B")])
    batch = {
        "shard": "train-000000.tar",
        "last": True,
        "need_image": False,
        "need_text": True,
        "ids": ["p1", "p2"],
        "titles": ["Red Shirt", ""],
        "attributes": [{"colour": "Red"}, {}],
        "category": [["A", "B"], ["A"]],
        "images": None,
    }
    out = encode_batch(batch, image_encoder, text_encoder, tree, ["colour"])["arrays"]
    assert out["title_mask"].tolist() == [True, False]
    assert np.abs(out["title"][0]).sum() > 0 and not out["title"][1].any()
    assert out["attribute_mask"].tolist() == [[True], [False]]
    assert out["category"].tolist() == [tree.index(("A", "B")), tree.index(("A",))]
