"""The frozen-encoder feature cache: built once, reused, never served stale."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.feature_cache import (
    FeatureCacheError,
    build_feature_cache,
    load_features,
    split_product_ids,
)
from datamodules.sample_catalogue import generate_sample_catalogue
from datamodules.sharding import load_manifest, shard_catalogue
from lightning_modules.components import ImageEncoder, TextEncoder


@pytest.fixture(scope="module")
def encoders():
    return ImageEncoder(weights="none", image_size=32), TextEncoder()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return generate_sample_catalogue(str(tmp_path_factory.mktemp("sample")), num_products=60, seed=0)


def _shard(catalog, out, seed=0):
    shard_catalogue(str(catalog), str(out), shard_size=25, seed=seed, progress=False)
    return load_manifest(str(out))


def test_cache_is_built_once_and_reused(catalog, encoders, tmp_path):
    image_encoder, text_encoder = encoders
    manifest = _shard(catalog, tmp_path / "shards")
    args = (str(tmp_path / "shards"), manifest, text_encoder, str(tmp_path / "features"), image_encoder)
    first = build_feature_cache(*args, progress=False)
    stamps = [(f / "features.npz").stat().st_mtime_ns for f in first]
    second = build_feature_cache(*args, progress=False)
    assert second == first
    assert [(f / "features.npz").stat().st_mtime_ns for f in second] == stamps  # not re-encoded

    ids = split_product_ids(manifest, str(tmp_path / "shards"), "val")
    arrays = load_features(first, ids)
    assert arrays["product_id"].tolist() == ids
    assert arrays["image"].shape == (len(ids), image_encoder.output_dim)
    assert arrays["attributes"].shape[:2] == arrays["attribute_mask"].shape
    assert not arrays["attribute_mask"].all()  # the sample leaves some attributes out


def test_another_encoder_config_gets_another_cache(catalog, encoders, tmp_path):
    _, text_encoder = encoders
    manifest = _shard(catalog, tmp_path / "shards")
    root = str(tmp_path / "features")
    a = build_feature_cache(
        str(tmp_path / "shards"),
        manifest,
        text_encoder,
        root,
        ImageEncoder(weights="none", image_size=32),
        progress=False,
    )
    b = build_feature_cache(
        str(tmp_path / "shards"),
        manifest,
        text_encoder,
        root,
        ImageEncoder(weights="none", image_size=48),
        progress=False,
    )
    assert a[0] != b[0] and a[1] == b[1]  # new image cache, same text cache


def test_another_split_seed_reuses_the_cache(catalog, encoders, tmp_path):
    image_encoder, text_encoder = encoders
    root = str(tmp_path / "features")
    m0 = _shard(catalog, tmp_path / "seed0", seed=0)
    m1 = _shard(catalog, tmp_path / "seed1", seed=1)
    assert m0["content_hash"] != m1["content_hash"]
    a = build_feature_cache(str(tmp_path / "seed0"), m0, text_encoder, root, image_encoder, progress=False)
    b = build_feature_cache(str(tmp_path / "seed1"), m1, text_encoder, root, image_encoder, progress=False)
    assert a == b


def test_stale_cache_is_detected(catalog, encoders, tmp_path):
    image_encoder, text_encoder = encoders
    manifest = _shard(catalog, tmp_path / "shards")
    folders = build_feature_cache(
        str(tmp_path / "shards"),
        manifest,
        text_encoder,
        str(tmp_path / "features"),
        image_encoder,
        progress=False,
    )
    with pytest.raises(FeatureCacheError, match="no-such-product"):
        load_features(folders, ["no-such-product"])
    (folders[0] / "features.npz").unlink()
    with pytest.raises(FeatureCacheError, match="features.npz"):
        load_features(folders, ["x"])
    # a half-written cache (crash before the rename) is not taken for a whole one
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "features").iterdir())
    np.testing.assert_equal(len(folders), 2)
