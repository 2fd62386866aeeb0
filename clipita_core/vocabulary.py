"""The names every package spells the same way: the product modalities, the splits, and an attribute's text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

Modality = Literal["image", "title", "attributes"]
"""A product input a model can read."""
MODALITIES: tuple[str, ...] = Modality.__args__
RECORDED_MODALITIES: tuple[str, ...] = (*MODALITIES, "description")
"""What a shard record can carry: the model's modalities plus the description (kept; no model reads it)."""

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = Split.__args__


def attribute_texts(attributes: Mapping[str, str], names: Sequence[str]) -> list[str]:
    """The text embedded for each attribute, in ``names`` order: ``"colour: Blue"``; ``""`` where absent.

    >>> attribute_texts({"colour": "Blue", "season": ""}, ["season", "colour", "usage"])
    ['', 'colour: Blue', '']
    """
    return [f"{n}: {attributes[n]}" if attributes.get(n) not in (None, "") else "" for n in names]
