"""The encoder towers of :class:`~lightning_modules.model.ClipIta`: their options and how they are built.

The tower options are declared once, by the encoders: ClipIta's tower options are the encoders' own, under the same
names (``image_model``, ``text_max_length``, ``train_image_blocks``...), with the encoders' defaults
(:data:`IMAGE_TOWER`, :data:`TEXT_TOWER`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .components.image_encoder import ImageEncoder
from .components.text_encoder import TextEncoder
from .defaults import signature_defaults

IMAGE_TOWER = signature_defaults(ImageEncoder)
TEXT_TOWER = signature_defaults(TextEncoder)


def tower_blocks(tower: str, train_all: bool, blocks: int | None) -> int:
    """The blocks of a tower that train (``-1`` all, ``0`` none, ``N`` the top N) from ``train_<tower>_encoder`` and
    the block count (which overrides it; both set must agree)."""
    if blocks is None:
        return -1 if train_all else 0
    if train_all and blocks != -1:
        option = "train_image_blocks" if tower == "image" else "train_text_layers"
        raise ValueError(
            f"train_{tower}_encoder: true trains the whole {tower} tower but {option} is {blocks}: set one of them"
        )
    return int(blocks)


def build_towers(
    build_image: bool,
    image_model: str,
    image_weights: str,
    image_size: int,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    text_model: str,
    text_max_length: int,
    train_image_encoder: bool,
    train_text_encoder: bool,
    train_image_blocks: int | None,
    train_text_layers: int | None,
    gradient_checkpointing: bool,
) -> tuple[ImageEncoder | None, TextEncoder]:
    """The image tower (None unless ``build_image``) and the text tower from ClipIta's options, image first: the
    parameter-init order seeded runs reproduce."""
    image_encoder = None
    if build_image:
        image_encoder = ImageEncoder(
            image_model,
            image_weights,
            image_size,
            tuple(image_mean),
            tuple(image_std),
            train_image_blocks=tower_blocks("image", train_image_encoder, train_image_blocks),
            gradient_checkpointing=gradient_checkpointing,
        )
    text_encoder = TextEncoder(
        text_model,
        text_max_length,
        train_text_layers=tower_blocks("text", train_text_encoder, train_text_layers),
        gradient_checkpointing=gradient_checkpointing,
    )
    return image_encoder, text_encoder
