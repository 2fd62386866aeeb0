"""The built-in sample catalogue: a small generated shop so a fresh clone can train with no data at hand.

Everything is drawn and written here, from a seed: a three-level category tree (4 top-level, 10 second-level,
24 leaf categories), one PIL-drawn JPEG per product whose shape shows its category, a noisy title and a few
noisy attributes. The output is a table-layout catalogue that the sharding helper reads through its
``CatalogueSchema`` (``catalog.yaml``).

How the category is visible, and what makes it not trivial:

- images: the top-level category picks the shape family (garment, footwear profile, accessory, homeware),
  the second level a sub-variant (tops vs trousers vs dresses, watch vs bag vs glasses...), the leaf its
  proportions and a surface pattern (stripes, dots, checks...). The product's ``colour`` attribute paints
  the body. Noise: position, size and rotation jitter, a tinted background, random clutter shapes, a
  pattern that is sometimes left off, and pixel noise.
- titles: brand + gender + colour + a leaf noun or one of its synonyms; sometimes the noun is replaced by a
  generic word, or a misleading noun from another category is added.
- attributes: ``colour`` matches the image, ``material`` and ``season`` correlate with the category,
  ``gender`` with the branch; every attribute is sometimes missing (an empty CSV cell).

Example:
    >>> from datamodules.sample_catalogue import generate_sample_catalogue
    >>> schema_path = generate_sample_catalogue("work/sample", num_products=600, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from datamodules.category_tree import CategoryPath

Point = tuple[float, float]
RGB = tuple[int, int, int]

SAMPLE_COLUMNS: tuple[str, ...] = (
    "id",
    "title",
    "level1",
    "level2",
    "level3",
    "colour",
    "material",
    "gender",
    "season",
)
SAMPLE_ATTRIBUTES: tuple[str, ...] = ("colour", "material", "gender", "season")


@dataclass(frozen=True)
class LeafSpec:
    """What the generator knows about one leaf category.

    Args:
        path: Full category path, root first.
        nouns: The leaf name's synonyms used in titles (the first is the canonical noun).
        materials: Materials typical of the leaf (drawn most of the time).
        genders: Gender values the leaf is sold for (an empty tuple: usually no gender).
        season: A season the leaf leans to, or ``None`` for all-season products.
        shape: Geometry variant inside the second-level family.
    """

    path: CategoryPath
    nouns: tuple[str, ...]
    materials: tuple[str, ...]
    genders: tuple[str, ...]
    season: str | None
    shape: str


_ADULT = ("Men", "Women")
_ALL_AGES = ("Men", "Women", "Boys", "Girls")
_FEMALE = ("Women", "Girls")
_ACCESSORY = ("Men", "Women", "Unisex")

LEAVES: tuple[LeafSpec, ...] = (
    LeafSpec(
        ("Apparel", "Topwear", "Shirts"),
        ("Shirt", "Casual Shirt", "Formal Shirt", "Button-Down Shirt"),
        ("Cotton", "Linen", "Polyester"),
        _ALL_AGES,
        None,
        "long_sleeves_collar",
    ),
    LeafSpec(
        ("Apparel", "Topwear", "T-Shirts"),
        ("T-Shirt", "Tee", "Crew Neck Tee", "Polo T-Shirt"),
        ("Cotton", "Polyester"),
        _ALL_AGES,
        "Summer",
        "short_sleeves",
    ),
    LeafSpec(
        ("Apparel", "Topwear", "Sweaters"),
        ("Sweater", "Pullover", "Jumper", "Cardigan"),
        ("Wool", "Acrylic", "Cotton"),
        _ALL_AGES,
        "Winter",
        "long_sleeves_hem",
    ),
    LeafSpec(
        ("Apparel", "Bottomwear", "Jeans"),
        ("Jeans", "Denim Jeans", "Slim Fit Jeans", "Denims"),
        ("Denim",),
        _ALL_AGES,
        None,
        "long_legs",
    ),
    LeafSpec(
        ("Apparel", "Bottomwear", "Shorts"),
        ("Shorts", "Bermuda Shorts", "Sports Shorts"),
        ("Cotton", "Polyester", "Denim"),
        _ALL_AGES,
        "Summer",
        "short_legs",
    ),
    LeafSpec(
        ("Apparel", "Bottomwear", "Skirts"),
        ("Skirt", "Midi Skirt", "A-Line Skirt", "Pleated Skirt"),
        ("Cotton", "Polyester", "Viscose"),
        _FEMALE,
        None,
        "skirt",
    ),
    LeafSpec(
        ("Apparel", "Dresses", "Maxi Dresses"),
        ("Maxi Dress", "Long Dress", "Floor-Length Dress"),
        ("Viscose", "Chiffon", "Cotton"),
        _FEMALE,
        "Summer",
        "long_dress",
    ),
    LeafSpec(
        ("Apparel", "Dresses", "Shift Dresses"),
        ("Shift Dress", "Sheath Dress", "Tunic Dress"),
        ("Polyester", "Cotton", "Crepe"),
        _FEMALE,
        None,
        "short_dress",
    ),
    LeafSpec(
        ("Footwear", "Shoes", "Sports Shoes"),
        ("Sports Shoes", "Running Shoes", "Running Sneaker", "Training Shoes"),
        ("Mesh", "Synthetic"),
        _ALL_AGES,
        None,
        "sports_shoe",
    ),
    LeafSpec(
        ("Footwear", "Shoes", "Casual Shoes"),
        ("Casual Shoes", "Sneakers", "Loafers", "Canvas Shoes"),
        ("Canvas", "Suede", "Synthetic"),
        _ALL_AGES,
        None,
        "casual_shoe",
    ),
    LeafSpec(
        ("Footwear", "Shoes", "Formal Shoes"),
        ("Formal Shoes", "Oxfords", "Derby Shoes", "Brogues"),
        ("Leather", "Patent Leather"),
        _ADULT,
        None,
        "formal_shoe",
    ),
    LeafSpec(
        ("Footwear", "Sandals", "Flip Flops"),
        ("Flip Flops", "Slippers", "Thong Sandals"),
        ("Rubber", "EVA"),
        _ALL_AGES,
        "Summer",
        "flat_sandal",
    ),
    LeafSpec(
        ("Footwear", "Sandals", "Heeled Sandals"),
        ("Heeled Sandals", "Block Heels", "Stilettos", "Wedges"),
        ("Synthetic", "Leather"),
        ("Women",),
        "Summer",
        "heeled_sandal",
    ),
    LeafSpec(
        ("Accessories", "Watches", "Analog Watches"),
        ("Analog Watch", "Chronograph", "Dial Watch"),
        ("Stainless Steel", "Leather"),
        _ACCESSORY,
        None,
        "analog_watch",
    ),
    LeafSpec(
        ("Accessories", "Watches", "Digital Watches"),
        ("Digital Watch", "Smart Watch", "Sports Watch"),
        ("Silicone", "Plastic"),
        _ACCESSORY,
        None,
        "digital_watch",
    ),
    LeafSpec(
        ("Accessories", "Bags", "Backpacks"),
        ("Backpack", "Rucksack", "Laptop Bag", "School Bag"),
        ("Polyester", "Nylon"),
        _ACCESSORY,
        None,
        "backpack",
    ),
    LeafSpec(
        ("Accessories", "Bags", "Handbags"),
        ("Handbag", "Tote Bag", "Shoulder Bag", "Satchel"),
        ("Leather", "PU", "Canvas"),
        ("Women",),
        None,
        "handbag",
    ),
    LeafSpec(
        ("Accessories", "Bags", "Wallets"),
        ("Wallet", "Card Holder", "Purse", "Billfold"),
        ("Leather", "PU"),
        _ACCESSORY,
        None,
        "wallet",
    ),
    LeafSpec(
        ("Accessories", "Eyewear", "Sunglasses"),
        ("Sunglasses", "Aviators", "Wayfarers", "Shades"),
        ("Polycarbonate", "Metal"),
        _ACCESSORY,
        "Summer",
        "sunglasses",
    ),
    LeafSpec(
        ("Accessories", "Eyewear", "Reading Glasses"),
        ("Reading Glasses", "Spectacles", "Eyeglasses", "Readers"),
        ("Acetate", "Metal"),
        _ACCESSORY,
        None,
        "reading_glasses",
    ),
    LeafSpec(
        ("Home", "Decor", "Candles"),
        ("Candle", "Scented Candle", "Pillar Candle", "Tealight Set"),
        ("Wax", "Soy Wax"),
        (),
        "Winter",
        "candle",
    ),
    LeafSpec(
        ("Home", "Decor", "Vases"),
        ("Vase", "Flower Vase", "Bud Vase"),
        ("Ceramic", "Glass"),
        (),
        None,
        "vase",
    ),
    LeafSpec(
        ("Home", "Kitchen", "Mugs"),
        ("Mug", "Coffee Mug", "Tea Cup"),
        ("Ceramic", "Stoneware"),
        (),
        None,
        "mug",
    ),
    LeafSpec(
        ("Home", "Kitchen", "Bowls"),
        ("Bowl", "Serving Bowl", "Salad Bowl"),
        ("Ceramic", "Melamine", "Glass"),
        (),
        None,
        "bowl",
    ),
)

COLOURS: dict[str, RGB] = {
    "Black": (30, 30, 32),
    "White": (236, 236, 232),
    "Grey": (128, 128, 132),
    "Navy Blue": (28, 40, 96),
    "Blue": (40, 100, 210),
    "Red": (200, 32, 40),
    "Green": (40, 140, 60),
    "Yellow": (236, 200, 40),
    "Pink": (236, 130, 170),
    "Brown": (120, 72, 40),
    "Purple": (120, 50, 150),
    "Orange": (240, 130, 30),
}
_COLOUR_SYNONYMS: dict[str, tuple[str, ...]] = {"Navy Blue": ("Navy",), "Grey": ("Gray", "Charcoal")}
_BRANDS: tuple[str, ...] = (
    "Aurora",
    "Northwind",
    "Kestrel",
    "Luma",
    "Tessera",
    "Brio",
    "Solstice",
    "Marlow",
    "Quill",
    "Verde",
    "Halcyon",
    "Orbit",
)
_DESCRIPTORS: tuple[str, ...] = ("Solid", "Printed", "Classic", "Premium", "Slim", "Everyday", "Textured")
_GENERIC_NOUNS: tuple[str, ...] = (
    "Essential",
    "Signature Piece",
    "Everyday Pick",
    "New Arrival",
    "Bestseller",
)
_SEASONS: tuple[str, ...] = ("Spring", "Summer", "Fall", "Winter")
_ALL_MATERIALS: tuple[str, ...] = tuple(sorted({m for leaf in LEAVES for m in leaf.materials}))
_PATTERNS: tuple[str, ...] = ("vstripes", "dots", "hstripes", "checks", "diagonal", "ring")

# Noise rates (probabilities per product).
_P_MISSING = {"colour": 0.05, "material": 0.12, "gender": 0.08, "season": 0.2}
_P_TITLE_GENERIC = 0.12
_P_TITLE_MISLEADING = 0.08
_P_TITLE_NO_COLOUR = 0.1
_P_TYPICAL_MATERIAL = 0.8
_P_TYPICAL_SEASON = 0.7
_P_PLAIN = 0.15


def leaf_pattern(leaf_index: int) -> str:
    """The surface pattern that marks a leaf: siblings (same parent) always get different patterns.

    Args:
        leaf_index: Index into ``LEAVES``.

    Returns:
        One of the pattern names drawn by ``draw_product``.
    """
    parents = list(dict.fromkeys(leaf.path[:-1] for leaf in LEAVES))
    parent = LEAVES[leaf_index].path[:-1]
    position = [leaf.path[:-1] for leaf in LEAVES[:leaf_index]].count(parent)
    return _PATTERNS[(position + 2 * parents.index(parent)) % len(_PATTERNS)]


def sample_category_paths() -> list[CategoryPath]:
    """The leaf paths of the sample tree, in generation order."""
    return [leaf.path for leaf in LEAVES]


# ----------------------------------------------------------------------------------------------- drawing


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 32) -> list[Point]:
    return [
        (cx + rx * math.cos(2 * math.pi * k / n), cy + ry * math.sin(2 * math.pi * k / n)) for k in range(n)
    ]


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 16) -> list[Point]:
    return [
        (
            cx + rx * math.cos(math.radians(start + (end - start) * k / n)),
            cy + ry * math.sin(math.radians(start + (end - start) * k / n)),
        )
        for k in range(n + 1)
    ]


@dataclass
class _Shape:
    """A product silhouette in unit coordinates (0..1, centred on 0.5): body polygons and strokes take the
    product colour; accents are drawn on top in their own colour (``None``: a dark shade of the body)."""

    body: list[list[Point]]
    strokes: list[tuple[list[Point], float]]
    accents: list[tuple[list[Point], RGB | None]]
    accent_strokes: list[tuple[list[Point], float, RGB | None]]


def _shape(kind: str) -> _Shape:  # noqa: C901 - one branch per leaf geometry
    body: list[list[Point]] = []
    strokes: list[tuple[list[Point], float]] = []
    accents: list[tuple[list[Point], RGB | None]] = []
    accent_strokes: list[tuple[list[Point], float, RGB | None]] = []
    if kind in ("long_sleeves_collar", "short_sleeves", "long_sleeves_hem"):  # Apparel > Topwear
        body.append(_rect(0.32, 0.22, 0.68, 0.86))
        if kind == "short_sleeves":
            body.append([(0.32, 0.22), (0.16, 0.36), (0.24, 0.44), (0.32, 0.38)])
            body.append([(0.68, 0.22), (0.84, 0.36), (0.76, 0.44), (0.68, 0.38)])
            accents.append((_ellipse(0.5, 0.22, 0.07, 0.04), (245, 245, 245)))
        else:
            body.append([(0.32, 0.22), (0.12, 0.72), (0.21, 0.75), (0.33, 0.40)])
            body.append([(0.68, 0.22), (0.88, 0.72), (0.79, 0.75), (0.67, 0.40)])
        if kind == "long_sleeves_collar":
            accents.append(([(0.42, 0.2), (0.5, 0.3), (0.58, 0.2)], (245, 245, 245)))
            accent_strokes.append(([(0.5, 0.3), (0.5, 0.86)], 0.012, None))
        if kind == "long_sleeves_hem":
            accents.append((_rect(0.32, 0.80, 0.68, 0.86), None))
            accents.append((_rect(0.12, 0.70, 0.21, 0.75), None))
            accents.append((_rect(0.79, 0.70, 0.88, 0.75), None))
    elif kind in ("long_legs", "short_legs"):  # Apparel > Bottomwear
        bottom = 0.9 if kind == "long_legs" else 0.56
        body.append(_rect(0.30, 0.14, 0.70, 0.26))
        body.append([(0.30, 0.26), (0.49, 0.26), (0.47, bottom), (0.30, bottom)])
        body.append([(0.51, 0.26), (0.70, 0.26), (0.70, bottom), (0.53, bottom)])
        accent_strokes.append(([(0.30, 0.26), (0.70, 0.26)], 0.01, None))
        if kind == "long_legs":
            accent_strokes.append(([(0.36, 0.3), (0.42, 0.4)], 0.008, (222, 190, 90)))
            accent_strokes.append(([(0.64, 0.3), (0.58, 0.4)], 0.008, (222, 190, 90)))
    elif kind == "skirt":
        body.append(_rect(0.36, 0.2, 0.64, 0.28))
        body.append([(0.36, 0.28), (0.64, 0.28), (0.78, 0.72), (0.22, 0.72)])
    elif kind in ("long_dress", "short_dress"):  # Apparel > Dresses
        bottom = 0.92 if kind == "long_dress" else 0.7
        flare = 0.26 if kind == "long_dress" else 0.14
        body.append(
            [
                (0.40, 0.2),
                (0.60, 0.2),
                (0.62, 0.42),
                (0.5 + flare, bottom),
                (0.5 - flare, bottom),
                (0.38, 0.42),
            ]
        )
        strokes.append(([(0.42, 0.2), (0.40, 0.08)], 0.015))
        strokes.append(([(0.58, 0.2), (0.60, 0.08)], 0.015))
        if kind == "short_dress":
            accents.append((_rect(0.38, 0.40, 0.62, 0.45), None))
    elif kind in ("sports_shoe", "casual_shoe", "formal_shoe"):  # Footwear > Shoes
        top = {"sports_shoe": 0.36, "casual_shoe": 0.46, "formal_shoe": 0.5}[kind]
        toe = 0.92 if kind == "formal_shoe" else 0.86
        body.append([(0.12, top), (0.32, top), (0.52, 0.52), (toe, 0.6), (toe, 0.68), (0.12, 0.68)])
        sole = (250, 250, 250) if kind == "sports_shoe" else (60, 40, 30)
        accents.append((_rect(0.10, 0.68, toe + 0.02, 0.74 if kind == "sports_shoe" else 0.71), sole))
        if kind == "sports_shoe":
            for k in range(3):
                x = 0.38 + 0.06 * k
                accent_strokes.append(
                    ([(x, 0.44 + 0.03 * k), (x + 0.05, 0.47 + 0.03 * k)], 0.012, (245, 245, 245))
                )
            accent_strokes.append(([(0.2, 0.62), (0.6, 0.54)], 0.02, (245, 245, 245)))
        if kind == "formal_shoe":
            accents.append((_rect(0.12, 0.71, 0.2, 0.78), (60, 40, 30)))
    elif kind in ("flat_sandal", "heeled_sandal"):  # Footwear > Sandals
        if kind == "flat_sandal":
            body.append(_rect(0.12, 0.66, 0.88, 0.72))
            strokes.append(([(0.62, 0.66), (0.5, 0.5), (0.36, 0.66)], 0.03))
        else:
            body.append([(0.14, 0.5), (0.28, 0.5), (0.86, 0.7), (0.86, 0.74), (0.28, 0.56), (0.14, 0.56)])
            body.append(_rect(0.16, 0.56, 0.24, 0.82))
            strokes.append(([(0.6, 0.62), (0.68, 0.48), (0.76, 0.66)], 0.025))
            strokes.append(([(0.16, 0.5), (0.2, 0.38), (0.28, 0.5)], 0.02))
    elif kind in ("analog_watch", "digital_watch"):  # Accessories > Watches
        body.append(_rect(0.42, 0.06, 0.58, 0.94))
        if kind == "analog_watch":
            accents.append((_ellipse(0.5, 0.5, 0.2, 0.2), (225, 225, 215)))
            accent_strokes.append(([(0.5, 0.5), (0.5, 0.36)], 0.018, (20, 20, 20)))
            accent_strokes.append(([(0.5, 0.5), (0.6, 0.56)], 0.014, (20, 20, 20)))
            strokes.append((_ellipse(0.5, 0.5, 0.21, 0.21) + [(0.71, 0.5)], 0.03))
        else:
            body.append(_rect(0.3, 0.32, 0.7, 0.68))
            accents.append((_rect(0.35, 0.4, 0.65, 0.6), (20, 30, 30)))
            accent_strokes.append(([(0.4, 0.5), (0.6, 0.5)], 0.03, (90, 230, 120)))
    elif kind in ("backpack", "handbag", "wallet"):  # Accessories > Bags
        if kind == "backpack":
            body.append(_rect(0.28, 0.22, 0.72, 0.86))
            body.append(_ellipse(0.5, 0.24, 0.22, 0.08))
            accents.append((_rect(0.34, 0.58, 0.66, 0.82), None))
            strokes.append((_arc(0.5, 0.2, 0.1, 0.1, 180, 360), 0.025))
        elif kind == "handbag":
            body.append([(0.3, 0.42), (0.7, 0.42), (0.8, 0.82), (0.2, 0.82)])
            strokes.append((_arc(0.5, 0.42, 0.16, 0.22, 180, 360), 0.03))
        else:
            body.append(_rect(0.24, 0.38, 0.76, 0.7))
            accents.append(([(0.24, 0.38), (0.76, 0.38), (0.76, 0.5), (0.24, 0.56)], None))
            accents.append((_ellipse(0.7, 0.5, 0.025, 0.025), (210, 180, 80)))
    elif kind in ("sunglasses", "reading_glasses"):  # Accessories > Eyewear
        r = 0.15 if kind == "sunglasses" else 0.12
        for cx in (0.32, 0.68):
            if kind == "sunglasses":
                body.append(_ellipse(cx, 0.52, r, r * 0.8))
                accents.append((_ellipse(cx, 0.52, r * 0.78, r * 0.6), (25, 25, 30)))
            else:
                strokes.append((_ellipse(cx, 0.52, r, r) + [(cx + r, 0.52)], 0.025))
        strokes.append(([(0.32 + r, 0.5), (0.5, 0.46), (0.68 - r, 0.5)], 0.025))
        strokes.append(([(0.32 - r, 0.48), (0.06, 0.42)], 0.02))
        strokes.append(([(0.68 + r, 0.48), (0.94, 0.42)], 0.02))
    elif kind == "candle":  # Home > Decor
        body.append(_rect(0.36, 0.4, 0.64, 0.86))
        body.append(_ellipse(0.5, 0.86, 0.14, 0.04))
        accents.append((_ellipse(0.5, 0.4, 0.14, 0.04), None))
        accents.append(([(0.5, 0.2), (0.55, 0.32), (0.5, 0.37), (0.45, 0.32)], (250, 170, 30)))
    elif kind == "vase":
        body.append(_ellipse(0.5, 0.64, 0.22, 0.24))
        body.append(_rect(0.43, 0.2, 0.57, 0.5))
        body.append(_ellipse(0.5, 0.2, 0.1, 0.03))
    elif kind == "mug":  # Home > Kitchen
        body.append(_rect(0.28, 0.3, 0.64, 0.8))
        strokes.append((_arc(0.64, 0.55, 0.12, 0.14, -90, 90), 0.04))
        accents.append((_ellipse(0.46, 0.3, 0.18, 0.04), None))
    elif kind == "bowl":
        body.append(_arc(0.5, 0.46, 0.36, 0.32, 0, 180, n=24))
        body.append(_rect(0.4, 0.76, 0.6, 0.82))
        accents.append((_ellipse(0.5, 0.46, 0.36, 0.06), None))
    else:
        raise ValueError(f"unknown sample shape {kind!r}")
    return _Shape(body, strokes, accents, accent_strokes)


def _pattern_mask(pattern: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A full-canvas mask of the pattern (255 = pattern ink)."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    step = max(4, int(size * rng.uniform(0.07, 0.1)))
    width = max(2, step // 3)
    offset = int(rng.integers(0, step))
    if pattern == "vstripes":
        for x in range(offset, size, step):
            draw.rectangle((x, 0, x + width - 1, size), fill=255)
    elif pattern == "hstripes":
        for y in range(offset, size, step):
            draw.rectangle((0, y, size, y + width - 1), fill=255)
    elif pattern == "dots":
        for y in range(offset, size, step):
            for x in range(offset + (step // 2 if (y // step) % 2 else 0), size, step):
                draw.ellipse((x, y, x + width, y + width), fill=255)
    elif pattern == "checks":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2 == 0:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=255)
    elif pattern == "diagonal":
        for x in range(-size + offset, size, step):
            draw.line((x, size, x + size, 0), fill=255, width=width)
    elif pattern == "ring":
        c = size // 2
        for r in range(step, size // 2, step * 2):
            draw.ellipse((c - r, c - r, c + r, c + r), outline=255, width=width)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    return mask


def _shade(rgb: RGB, factor: float) -> RGB:
    return tuple(int(max(0, min(255, c * factor))) for c in rgb)  # type: ignore[return-value]


def _contrast(rgb: RGB) -> RGB:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (30, 30, 30) if luminance > 150 else (240, 240, 236)


def draw_product(
    leaf_index: int, colour: RGB, rng: np.random.Generator, image_size: int = 96, pattern: str | None = None
) -> Image.Image:
    """Draw one product image.

    Args:
        leaf_index: Index into ``LEAVES``: picks the silhouette.
        colour: Body colour (the product's ``colour`` attribute).
        rng: Source of all the noise (position, size, rotation, background, clutter, pixel noise).
        image_size: Side of the square output image in pixels.
        pattern: Surface pattern name (one of ``_PATTERNS``), or ``None`` for a plain body.

    Returns:
        An RGB image of ``image_size`` x ``image_size``.
    """
    scale_up = 2  # draw at twice the size, then downsample: smooth edges
    size = image_size * scale_up
    tint = tuple(int(v) for v in 255 - rng.integers(0, 40, size=3))
    canvas = Image.new("RGB", (size, size), tint)  # type: ignore[arg-type]
    draw = ImageDraw.Draw(canvas)

    # Clutter behind the product: a few small random blobs and bars.
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, size, size=2)
        r = rng.uniform(0.03, 0.09) * size
        fill = tuple(int(v) for v in rng.integers(60, 230, size=3))
        if rng.random() < 0.5:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)  # type: ignore[arg-type]
        else:
            draw.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=fill)  # type: ignore[arg-type]

    shape = _shape(LEAVES[leaf_index].shape)
    scale = rng.uniform(0.72, 0.98) * size
    angle = math.radians(rng.uniform(-12, 12))
    centre = (size / 2 + rng.uniform(-0.08, 0.08) * size, size / 2 + rng.uniform(-0.08, 0.08) * size)
    cos_a, sin_a = math.cos(angle), math.sin(angle)

    def place(points: Sequence[Point]) -> list[Point]:
        out = []
        for x, y in points:
            dx, dy = (x - 0.5) * scale, (y - 0.5) * scale
            out.append((centre[0] + cos_a * dx - sin_a * dy, centre[1] + sin_a * dx + cos_a * dy))
        return out

    body_mask = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(body_mask)
    for poly in shape.body:
        mask_draw.polygon(place(poly), fill=255)
    for line, width in shape.strokes:
        mask_draw.line(place(line), fill=255, width=max(1, int(width * scale)), joint="curve")
    canvas.paste(colour, (0, 0, size, size), body_mask)
    if pattern is not None:
        ink = ImageChops.multiply(body_mask, _pattern_mask(pattern, size, rng))
        canvas.paste(_contrast(colour), (0, 0, size, size), ink)
    outline = _shade(colour, 0.6)
    for poly in shape.body:
        draw.polygon(place(poly), outline=outline, width=max(1, size // 96))
    for poly, accent in shape.accents:
        draw.polygon(place(poly), fill=accent if accent is not None else _shade(colour, 0.6))
    for line, width, accent in shape.accent_strokes:
        draw.line(
            place(line),
            fill=accent if accent is not None else _shade(colour, 0.6),
            width=max(1, int(width * scale)),
        )

    image = canvas.resize((image_size, image_size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, 4.0, size=(image_size, image_size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


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


TitleMode = Literal["signal", "noise", "none"]
TITLE_MODES: tuple[str, ...] = ("signal", "noise", "none")


def make_noise_title(rng: np.random.Generator) -> str:
    """A title that carries no category signal: brand, descriptor and a generic noun drawn independently of the
    product (its own random stream), plus a model number, e.g. ``"Aurora Classic Item 4821"``."""
    words = [_pick(rng, _BRANDS), _pick(rng, _DESCRIPTORS), _pick(rng, _GENERIC_NOUNS)]
    return " ".join([*words, str(int(rng.integers(1000, 10000)))])


def _schema_yaml(titles: TitleMode = "signal") -> str:
    return (
        "# The built-in sample catalogue (generated by datamodules.sample_catalogue).\n"
        "name: sample\n"
        "layout: table\n"
        "table: products.csv\n"
        "image_root: images\n"
        "id_column: id\n"
        'image_pattern: "{id}.jpg"\n'
        + ("title_column: null\n" if titles == "none" else "title_column: title\n")
        + f"attribute_columns: [{', '.join(SAMPLE_ATTRIBUTES)}]\n"
        "category_columns: [level1, level2, level3]\n"
    )


def _leaf_assignment(num_products: int, rng: np.random.Generator) -> list[int]:
    """Leaf index per product: a few of every leaf, the rest drawn with uneven (long-tail-ish) weights."""
    n_leaves = len(LEAVES)
    base = min(4, num_products // n_leaves)
    leaves = [i for i in range(n_leaves) for _ in range(base)]
    weights = rng.uniform(0.4, 1.6, size=n_leaves)
    weights /= weights.sum()
    leaves += [int(i) for i in rng.choice(n_leaves, size=num_products - len(leaves), p=weights)]
    order = rng.permutation(len(leaves))
    return [leaves[int(k)] for k in order]


def generate_sample_catalogue(
    output_dir: str,
    num_products: int = 600,
    seed: int = 0,
    image_size: int = 96,
    titles: TitleMode = "signal",
) -> Path:
    """Write the sample catalogue (``products.csv``, ``images/<id>.jpg``, ``catalog.yaml``) into a folder.

    The output is byte-for-byte the same for the same arguments. Products with a missing attribute have an
    empty cell in the CSV.

    Args:
        output_dir: Folder to write into (created if needed; earlier sample images there are replaced).
        num_products: Number of products to generate.
        seed: Random seed.
        image_size: Side of the square JPEGs in pixels.
        titles: ``signal`` (titles name the leaf or a synonym, with noise: the default), ``noise`` (titles
            carry no category signal: see :func:`make_noise_title`) or ``none`` (no title column at all).
            Images, attributes and categories are the same for every mode.

    Returns:
        Path of ``catalog.yaml``, the schema for the sharding helper.
    """
    if num_products < 1:
        raise ValueError(f"num_products must be >= 1, got {num_products}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if titles not in TITLE_MODES:
        raise ValueError(f"titles must be one of {list(TITLE_MODES)}, got {titles!r}")
    noise_rng = np.random.default_rng([seed, 1])  # its own stream: the other columns stay the same
    out = Path(output_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.glob("p[0-9]*.jpg"):
        old.unlink()

    rng = np.random.default_rng(seed)
    colour_names = list(COLOURS)
    rows: list[dict[str, str]] = []
    for number, leaf_index in enumerate(_leaf_assignment(num_products, rng)):
        product_id = f"p{number:05d}"
        colour = _pick(rng, colour_names)
        true_attributes = make_attributes(leaf_index, colour, rng)
        title = make_title(leaf_index, colour, true_attributes["gender"], rng)  # drawn in every mode
        if titles == "noise":
            title = make_noise_title(noise_rng)
        attributes = drop_missing(true_attributes, rng)
        pattern = None if rng.random() < _P_PLAIN else leaf_pattern(leaf_index)
        image = draw_product(leaf_index, COLOURS[colour], rng, image_size=image_size, pattern=pattern)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        (images / f"{product_id}.jpg").write_bytes(buffer.getvalue())
        level1, level2, level3 = LEAVES[leaf_index].path
        row = {"id": product_id, "title": title, "level1": level1, "level2": level2, "level3": level3}
        row.update({name: attributes[name] or "" for name in SAMPLE_ATTRIBUTES})
        if titles == "none":
            del row["title"]
        rows.append(row)

    with open(out / "products.csv", "w", newline="", encoding="utf-8") as handle:
        columns = [c for c in SAMPLE_COLUMNS if titles != "none" or c != "title"]
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    schema_path = out / "catalog.yaml"
    schema_path.write_text(_schema_yaml(titles), encoding="utf-8")
    return schema_path
