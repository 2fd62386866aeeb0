"""Draws a sample product: a shape that shows its category, painted in its colour, with noise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from .taxonomy import LEAVES, RGB, Point

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
