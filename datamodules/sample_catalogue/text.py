"""A sample product's words: its title (signal or noise) and attributes, each sometimes missing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .taxonomy import (
    _ALL_MATERIALS,
    _BRANDS,
    _COLOUR_SYNONYMS,
    _DESCRIPTORS,
    _GENERIC_NOUNS,
    _P_MISSING,
    _P_TITLE_GENERIC,
    _P_TITLE_MISLEADING,
    _P_TITLE_NO_COLOUR,
    _P_TYPICAL_MATERIAL,
    _P_TYPICAL_SEASON,
    _SEASONS,
    LEAVES,
)

# ----------------------------------------------------------------------------------------------- text


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(0, len(options)))]


def make_title(leaf_index: int, colour: str, gender: str | None, rng: np.random.Generator) -> str:
    """A product title: brand + gender + colour + (descriptor) + leaf noun, with noise.

    Args:
        leaf_index: Index into ``LEAVES``.
        colour: The product's true colour name.
        gender: The product's gender, or ``None`` when it has none.
        rng: Random generator.

    Returns:
        A title such as ``"Aurora Men Blue Running Sneaker"``.
    """
    leaf = LEAVES[leaf_index]
    words = [_pick(rng, _BRANDS)]
    if gender is not None and gender != "Unisex":
        words.append(gender)
    if rng.random() >= _P_TITLE_NO_COLOUR:
        words.append(_pick(rng, (colour, *_COLOUR_SYNONYMS.get(colour, ()))))
    if rng.random() < 0.3:
        words.append(_pick(rng, _DESCRIPTORS))
    if rng.random() < _P_TITLE_GENERIC:
        words.append(_pick(rng, _GENERIC_NOUNS))
    else:
        words.append(_pick(rng, leaf.nouns))
    if rng.random() < _P_TITLE_MISLEADING:
        other = LEAVES[(leaf_index + 1 + int(rng.integers(0, len(LEAVES) - 1))) % len(LEAVES)]
        decoy = _pick(rng, other.nouns)
        words.append(f"with {decoy} Print" if rng.random() < 0.5 else f"- {decoy} Style")
    return " ".join(words)


def make_attributes(leaf_index: int, colour: str, rng: np.random.Generator) -> dict[str, str | None]:
    """True attribute values, correlated with the category (``gender`` is ``None`` for genderless goods).

    Args:
        leaf_index: Index into ``LEAVES``.
        colour: The product's true colour (the image's colour).
        rng: Random generator.

    Returns:
        ``{"colour", "material", "gender", "season"}`` -> value or ``None``.
    """
    leaf = LEAVES[leaf_index]
    material = _pick(rng, leaf.materials if rng.random() < _P_TYPICAL_MATERIAL else _ALL_MATERIALS)
    if leaf.genders:
        gender: str | None = _pick(rng, leaf.genders)
    else:
        gender = "Unisex" if rng.random() < 0.3 else None
    if leaf.season is not None and rng.random() < _P_TYPICAL_SEASON:
        season: str | None = leaf.season
    else:
        season = _pick(rng, _SEASONS)
    return {"colour": colour, "material": material, "gender": gender, "season": season}


def drop_missing(values: dict[str, str | None], rng: np.random.Generator) -> dict[str, str | None]:
    """Blank some attribute values (``None``), each at its own rate, as real catalogues do.

    Args:
        values: True attribute values.
        rng: Random generator.

    Returns:
        A copy of ``values`` with some values set to ``None``.
    """
    return {name: None if rng.random() < _P_MISSING[name] else value for name, value in values.items()}


# ----------------------------------------------------------------------------------------------- catalogue


def make_noise_title(rng: np.random.Generator) -> str:
    """A title that carries no category signal: brand, descriptor and a generic noun drawn independently of the
    product (its own random stream), plus a model number, e.g. ``"Aurora Classic Item 4821"``."""
    words = [_pick(rng, _BRANDS), _pick(rng, _DESCRIPTORS), _pick(rng, _GENERIC_NOUNS)]
    return " ".join([*words, str(int(rng.integers(1000, 10000)))])
