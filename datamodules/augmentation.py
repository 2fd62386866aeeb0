"""The raw training stream's light image augmentation: a random resized crop and a horizontal flip.

It runs on the image tower's own output (``ImageEncoder.transform``: padded to a white square, resized to the
tower's ``image_size``, normalised), so the tower's resolution and preprocessing stay declared once, on the model
(``model.net.image_size``), and a training crop sees the same padded square that evaluation sees. The crop is
resized back to the same size, or to a lower training resolution (``size``, ``data.train_image_size``): train at a
low resolution for speed, evaluate and serve at the tower's (Touvron et al., *Fixing the train-test resolution
discrepancy*, 2019), so a fine-tune's evaluation sees the images the frozen tower's feature cache saw.

Every random draw comes from the ``random.Random`` it is handed, which the training stream seeds per sample from
``(seed, epoch, rank, worker, sample index)``: a run resumed in the middle of an epoch augments the remaining
samples exactly as the uninterrupted run did (``datamodules/training_stream.py``).
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import Tensor

AUGMENTATIONS = ("crop_flip", "none")


class CropFlip:
    """Random resized crop (area fraction in ``[min_scale, 1]``, aspect ratio in ``ratio``) + horizontal flip.

    Args:
        min_scale: smallest crop area as a fraction of the image (1.0: no crop, flip only).
        ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly.
        flip: flip horizontally with probability 0.5.
        size: side of the output (None: the input's); the crop, or the whole image, is resized to it.

    Example:
        >>> out = CropFlip(0.8)(torch.zeros(3, 16, 16), random.Random(0))
        >>> tuple(out.shape)
        (3, 16, 16)
    """

    def __init__(
        self,
        min_scale: float = 0.8,
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        size: int | None = None,
    ):
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"the crop's min_scale must be in (0, 1], got {min_scale}")
        if not 0.0 < ratio[0] <= ratio[1]:
            raise ValueError(f"the crop's aspect ratio range must be 0 < low <= high, got {ratio}")
        if size is not None and size < 16:
            raise ValueError(f"train_image_size must be at least 16 pixels, got {size}")
        self.min_scale, self.ratio, self.flip = float(min_scale), (float(ratio[0]), float(ratio[1])), flip
        self.size = size

    def box(self, height: int, width: int, rng: random.Random) -> tuple[int, int, int, int]:
        """``(top, left, crop height, crop width)``; the whole image when ten draws do not fit."""
        if self.min_scale < 1.0:
            log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
            for _ in range(10):
                area = height * width * rng.uniform(self.min_scale, 1.0)
                aspect = math.exp(rng.uniform(log_low, log_high))
                w = round(math.sqrt(area * aspect))
                h = round(math.sqrt(area / aspect))
                if 0 < w <= width and 0 < h <= height:
                    return rng.randint(0, height - h), rng.randint(0, width - w), h, w
        return 0, 0, height, width

    def __call__(self, image: Tensor, rng: random.Random) -> Tensor:
        """``image`` float ``[C, H, W]`` -> the augmented image, same dtype, ``[C, size, size]`` (or same shape)."""
        height, width = image.shape[-2:]
        top, left, h, w = self.box(height, width, rng)
        target = (self.size, self.size) if self.size else (height, width)
        out = image
        if (h, w) != target:
            crop = image[None, :, top : top + h, left : left + w]
            out = F.interpolate(crop, size=target, mode="bilinear", align_corners=False, antialias=True)[0]
        if self.flip and rng.random() < 0.5:
            out = torch.flip(out, dims=[-1])
        return out.contiguous()


def make_augmentation(name: str, min_scale: float, size: int | None = None) -> CropFlip | None:
    """The training augmentation by its config name (``crop_flip``; ``none`` -> None, or a plain resize to
    ``size`` when one is given)."""
    if name == "none":
        return CropFlip(1.0, flip=False, size=size) if size else None
    if name == "crop_flip":
        return CropFlip(min_scale, size=size)
    raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {name!r}")
