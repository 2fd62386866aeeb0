"""Tiny catalogue files written by the catalogue tests: images, CSV lines, a table schema, and the problems of a
record."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from datamodules.catalogue import CatalogueSchema, RawRecord

HEADER = ["id", "title", "top", "leaf", "colour"]


def make_image(path: Path, colour: tuple[int, int, int] = (200, 30, 30), fmt: str = "JPEG") -> bytes:
    """Draw a tiny image, write it to ``path`` and return its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (12, 10), colour)
    for x in range(12):
        image.putpixel((x, x % 10), (x * 20, 255 - x * 20, 90))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def csv_line(cells: list[str]) -> str:
    return ",".join('"' + c.replace('"', '""') + '"' for c in cells) + "\n"


def table_schema(tmp_path: Path, table: str, **overrides) -> CatalogueSchema:
    fields = dict(
        table=str(tmp_path / table),
        image_root=str(tmp_path / "images"),
        title_column="title",
        category_columns=["top", "leaf"],
        attribute_columns=["colour"],
        name="tiny",
    )
    fields.update(overrides)
    return CatalogueSchema(**fields)


def write_csv(tmp_path: Path, rows: list[list[str]], images: bool = True) -> CatalogueSchema:
    text = csv_line(HEADER) + "".join(csv_line(r) for r in rows)
    (tmp_path / "products.csv").write_text(text, encoding="utf-8")
    if images:
        for row in rows:
            make_image(tmp_path / "images" / f"{row[0]}.jpg")
    return table_schema(tmp_path, "products.csv")


GOOD_ROWS = [
    ["p1", "Red shirt", "Apparel", "Shirts", "Red"],
    ["p2", "Blue jeans", "Apparel", "Jeans", ""],
    ["p3", "Oxford shoe", "Footwear", "Shoes", "Brown"],
]


def by_id(records: list[RawRecord]) -> dict[str, RawRecord]:
    return {r.id: r for r in records}


def kinds(record: RawRecord) -> set[str]:
    return {p.kind for p in record.problems}
