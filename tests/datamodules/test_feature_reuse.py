"""Another split of the same catalogue reuses the rows of products already encoded by the same encoders: the
encoders run on no product, and the store serves the same batches as a fresh encode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sample_shards import shard_two_seeds

from clipita_core.tree import CategoryTree
from datamodules.feature_encoding import encode_features
from datamodules.feature_reuse import DIGEST
from datamodules.feature_split import FeatureSplit
from datamodules.sharding import SPLITS, load_manifest
from lightning_modules.components import ImageEncoder, TextEncoder


class Counting:
    """Counts the products an encoder is run on."""

    def __init__(self, encoder) -> None:
        self.encoder, self.calls, self.products = encoder, 0, 0
        original = encoder.forward

        def forward(inputs, *args, **kwargs):
            self.calls += 1
            self.products += len(inputs)
            return original(inputs, *args, **kwargs)

        encoder.forward = forward


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return shard_two_seeds(tmp_path_factory.mktemp("reuse"))


def _encoders():
    torch.manual_seed(0)  # the test tower's weights are random: the same ones in every encode
    image = ImageEncoder(image_model="test_efficientnet", image_weights="none", image_size=32)
    return Counting(image), Counting(TextEncoder())


def _encode(shard_dir, root, image, text):
    stores = encode_features(
        str(shard_dir),
        load_manifest(str(shard_dir)),
        root,
        image.encoder,
        text.encoder,
        batch_size=8,
        num_workers=0,
        progress=False,
    )
    return stores


def _batches(stores, shard_dir):
    manifest = load_manifest(str(shard_dir))
    out = {}
    for split in SPLITS:
        info = manifest.split(split)
        shards = [(n, info.shard_files[n].count) for n in info.shards]
        features = FeatureSplit(stores, shards, CategoryTree.from_json(manifest.tree_paths))
        out[split] = features.batch(np.arange(len(features)))
    return out


def test_another_split_seed_copies_every_row_and_runs_no_encoder(catalogue, tmp_path):
    seed0, seed1 = catalogue / "shards" / "seed0", catalogue / "shards" / "seed1"
    assert load_manifest(str(seed0)).split("test") != load_manifest(str(seed1)).split("test")
    root = tmp_path / "features"
    image, text = _encoders()
    first = _encode(seed0, root, image, text)
    assert image.products == 90 and text.calls > 0
    assert all(sorted(s.folder.glob(f"*.{DIGEST}.npy")) for s in first)

    image, text = _encoders()
    reused = _encode(seed1, root, image, text)
    assert (image.calls, image.products, text.calls) == (0, 0, 0)  # every row copied
    assert {s.folder for s in reused}.isdisjoint({s.folder for s in first})  # a store of its own
    assert all(s.is_complete() for s in reused)

    image, text = _encoders()
    fresh = _encode(seed1, tmp_path / "fresh", image, text)
    assert image.products == 90
    got, want = _batches(reused, seed1), _batches(fresh, seed1)
    for split in SPLITS:
        assert got[split]["product_id"] == want[split]["product_id"]
        for key, value in want[split].items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                torch.testing.assert_close(got[split][key], value, atol=2e-3, rtol=1e-2)
            elif isinstance(value, torch.Tensor):
                assert torch.equal(got[split][key], value), key


def test_a_changed_product_is_encoded_again(catalogue, tmp_path):
    """A shard with one product whose image differs from the donor's is encoded, not copied."""
    seed0 = catalogue / "shards" / "seed0"
    root = tmp_path / "features"
    image, text = _encoders()
    first = _encode(seed0, root, image, text)
    image_store = next(s for s in first if s.kind == "image")
    name = image_store.shards[0][0]
    digests = np.load(image_store.path(name, DIGEST))
    digests[0] = b"not this product"
    np.save(image_store.path(name, DIGEST), digests)  # the donor row no longer matches shard 0's product

    image, text = _encoders()
    _encode(catalogue / "shards" / "seed1", root, image, text)
    assert 0 < image.products < 90  # the shard holding that product only
    assert text.calls == 0


def test_a_store_written_without_digests_is_back_filled_from_its_shards(catalogue, tmp_path):
    """A donor encoded before digests existed gets them from its input shards (found beside the new ones)."""
    root = tmp_path / "features"
    image, text = _encoders()
    first = _encode(catalogue / "shards" / "seed0", root, image, text)
    for store in first:
        for path in store.folder.glob(f"*.{DIGEST}.npy"):
            path.unlink()
    image, text = _encoders()
    _encode(catalogue / "shards" / "seed1", root, image, text)
    assert (image.calls, text.calls) == (0, 0)
    assert all(len(list(s.folder.glob(f"*.{DIGEST}.npy"))) == len(s.shards) for s in first)


def test_the_encode_predict_job_reuses_rows_too(catalogue, tmp_path):
    """``clipita encode``'s Lightning predict job (``EncodeJob``) copies the rows the same way."""
    import lightning as L

    from datamodules.feature_encoding import EncodeJob

    root = tmp_path / "features"
    image, text = _encoders()
    _encode(catalogue / "shards" / "seed0", root, image, text)
    image, text = _encoders()
    seed1 = catalogue / "shards" / "seed1"
    job = EncodeJob(str(seed1), load_manifest(str(seed1)), root, image.encoder, text.encoder, 8, 0)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    trainer.predict(job, return_predictions=False)
    assert (image.calls, text.calls) == (0, 0)
    assert all(s.is_complete() for s in job.stores.values())
