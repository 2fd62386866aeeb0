"""The raw training stream's crop + flip: shape kept, draws inside the configured ranges, seeded per sample."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from test_shard_pipeline import TRANSFORM, TREE, write_shards

from datamodules.augmentation import CropFlip, make_augmentation
from datamodules.shard_pipeline import build_shard_pipeline


def test_the_crop_keeps_the_shape_and_stays_inside_its_ranges() -> None:
    augment = CropFlip(min_scale=0.5)
    for seed in range(200):
        top, left, h, w = augment.box(40, 60, random.Random(seed))
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60
        if (h, w) != (40, 60):  # a drawn box (the fallback is the whole image)
            assert 0.5 * 2400 * 0.9 <= h * w <= 2400  # rounding the sides moves the area a little
            assert 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15
    image = torch.randn(3, 16, 16)
    out = augment(image, random.Random(1))
    assert out.shape == image.shape and out.dtype == image.dtype


def test_the_same_seed_gives_the_same_image_and_seeds_vary_it() -> None:
    image = torch.randn(3, 24, 24)
    augment = CropFlip(min_scale=0.6)
    first = augment(image, random.Random("a:1"))
    assert torch.equal(first, augment(image, random.Random("a:1")))
    outs = [augment(image, random.Random(f"a:{i}")) for i in range(20)]
    assert len({tuple(o.flatten()[:50].tolist()) for o in outs}) > 10


def test_scale_one_is_a_flip_or_the_image_itself() -> None:
    image = torch.randn(3, 8, 8)
    outs = [CropFlip(min_scale=1.0)(image, random.Random(i)) for i in range(30)]
    flipped = torch.flip(image, dims=[-1])
    assert all(torch.equal(o, image) or torch.equal(o, flipped) for o in outs)
    assert any(torch.equal(o, flipped) for o in outs) and any(torch.equal(o, image) for o in outs)


def test_a_crop_of_a_constant_image_stays_constant() -> None:
    image = torch.full((3, 20, 20), 0.25)
    out = CropFlip(min_scale=0.3)(image, random.Random(5))
    assert torch.allclose(out, image, atol=1e-6)


@pytest.mark.parametrize(("name", "scale"), [("bogus", 0.8), ("crop_flip", 0.0), ("crop_flip", 1.5)])
def test_bad_options_are_refused(name: str, scale: float) -> None:
    with pytest.raises(ValueError, match="augmentation|min_scale"):
        make_augmentation(name, scale)


def test_none_means_no_augmentation() -> None:
    assert make_augmentation("none", 0.8) is None
    assert math.isclose(make_augmentation("crop_flip", 0.7).min_scale, 0.7)


def ramped(image) -> torch.Tensor:
    """The test shards' plain-colour images plus a left-to-right ramp: a crop or a flip changes them."""
    tensor = TRANSFORM(image)
    return tensor + torch.linspace(0, 1, tensor.shape[-1])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_training_stream_augments_deterministically(tmp_path: Path, num_workers: int) -> None:
    urls, _ = write_shards(tmp_path, [9, 14])

    def run(augmentation: CropFlip | None) -> list[dict]:
        loader = build_shard_pipeline(
            urls, ramped, TREE, batch_size=4, training=True, epoch_samples=23, shuffle_buffer=6,
            num_workers=num_workers, augmentation=augmentation,
        )  # fmt: skip
        return list(loader)

    plain, augmented, again = run(None), run(CropFlip(0.5)), run(CropFlip(0.5))
    assert [b["product_id"] for b in plain] == [b["product_id"] for b in augmented]  # the order is untouched
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(augmented, again, strict=True))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(plain, augmented, strict=True))


def test_a_training_size_resizes_crops_and_plain_images() -> None:
    """``data.train_image_size``: train at a lower resolution than the tower evaluates at."""
    image = torch.randn(3, 32, 32)
    for name in ("crop_flip", "none"):
        augment = make_augmentation(name, 0.5, size=20)
        outs = [augment(image, random.Random(i)) for i in range(5)]
        assert all(tuple(o.shape) == (3, 20, 20) for o in outs), name
    plain = make_augmentation("none", 0.5, size=20)(image, random.Random(0))  # a resize, no crop or flip
    expected = torch.nn.functional.interpolate(image[None], size=(20, 20), mode="bilinear", antialias=True)[0]
    assert torch.allclose(plain, expected, atol=1e-6)
    with pytest.raises(ValueError, match="train_image_size"):
        make_augmentation("crop_flip", 0.8, size=8)
