"""Directed checks of what a catalogue may make clipita read (issue 20): one control-character rule for every table
format, the schema's image caps and ``allow_outside_root``, and tables or schemas that are no regular file. The
property test over random hostile catalogues is ``tests/clipita/test_hostile_catalogue.py``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import hostile_catalogue as hc
import pytest
import yaml

from datamodules.catalogue import CatalogueError, CatalogueSchema, read_catalogue

ROWS = [
    {"id": "p0", "image": "img0.jpg", "top": "Fruit", "leaf": "Apple", "title": "plain", "colour": "red"},
    {"id": "p\x071", "image": "img1.jpg", "top": "Fruit", "leaf": "Apple", "title": "t", "colour": "red"},
    {"id": "p\x002", "image": "img2.jpg", "top": "Fruit", "leaf": "Apple", "title": "t", "colour": "red"},
    {"id": "p3", "image": "img3.jpg", "top": "Fruit\x1b[1m", "leaf": "Pear", "title": "t", "colour": "red"},
    {
        "id": "p4",
        "image": "img4.jpg",
        "top": "Fruit",
        "leaf": "Pear",
        "title": "a\0b\x85c\td",
        "colour": "x\x7fy",
    },
    {"id": "p5", "image": "im\x1bg5.jpg", "top": "Fruit", "leaf": "Pear", "title": "t", "colour": "red"},
    {
        "id": "p6\x1f",
        "image": "img6.jpg",
        "top": "Fruit",
        "leaf": "Pear",
        "title": "t\r\nu ",
        "colour": "red",
    },
]


def _schema(folder: Path, table: str, **extra) -> CatalogueSchema:
    return CatalogueSchema(
        table=str(folder / table),
        image_root=str(folder / "images"),
        image_column="image",
        category_columns=["top", "leaf"],
        attribute_columns=["colour"],
        **extra,
    )


def _images(folder: Path, count: int) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / "images" / f"img{i}.jpg").write_bytes(hc.jpeg((200, 30, 30), i))


def _read(schema: CatalogueSchema) -> tuple[list[tuple], dict]:
    stats: dict = {}
    records = [
        (r.row, r.id, r.title, r.attributes, r.category, sorted({p.kind for p in r.problems}))
        for r in read_catalogue(schema, stats=stats)
    ]
    return records, dict(stats["control_characters_replaced"])


def test_control_characters_and_nul_are_read_the_same_in_csv_jsonl_and_parquet(tmp_path: Path) -> None:
    _images(tmp_path, len(ROWS))
    columns = list(ROWS[0])
    for fmt in ("csv", "jsonl", "parquet"):
        hc._write_table(tmp_path / f"p.{fmt}", ROWS, columns)
    # JSONL with the control characters raw instead of escaped: the same rule
    raw = "".join(json.dumps(r, ensure_ascii=False).replace("\\u0007", "\x07") + "\n" for r in ROWS)
    (tmp_path / "raw.jsonl").write_text(raw, encoding="utf-8")
    read = {
        table: _read(_schema(tmp_path, table)) for table in ("p.csv", "p.jsonl", "p.parquet", "raw.jsonl")
    }
    records, replaced = read["p.csv"]
    assert all(other == read["p.csv"] for other in read.values())
    kinds = [r[5] for r in records]
    # a control character in an id, a category level or an image path skips the row, naming the field
    control = ["control_character"]
    assert kinds == [[], control, control, control, [], control, control]
    # in free text it becomes a space (tab and line breaks kept), counted per column
    assert records[4][2] == "a b c\td" and records[4][3] == {"colour": "x y"}
    assert replaced == {"title": 1, "colour": 1}


def test_a_control_character_message_names_the_field(tmp_path: Path) -> None:
    _images(tmp_path, len(ROWS))
    hc._write_table(tmp_path / "p.jsonl", ROWS, list(ROWS[0]))
    reasons = {r.row: r.reason for r in read_catalogue(_schema(tmp_path, "p.jsonl"))}
    assert reasons[2] == "column 'id' 'p\\x071' contains the control character '\\x07'"
    assert reasons[4].startswith("column 'top' 'Fruit\\x1b[1m'")
    assert reasons[6].startswith("column 'image' 'im\\x1bg5.jpg'")  # no file is looked up for it


@pytest.mark.parametrize(
    "key, value",
    [
        ("max_image_bytes", 0),
        ("max_image_bytes", "50MB"),
        ("max_image_pixels", True),
        ("allow_outside_root", "yes"),
    ],
)
def test_bad_limit_values_fail_naming_the_key(tmp_path: Path, key: str, value) -> None:
    with pytest.raises(CatalogueError, match=f"`{key}` must be"):
        _schema(tmp_path, "p.csv", **{key: value})


def test_the_caps_are_the_schemas_to_change(tmp_path: Path) -> None:
    _images(tmp_path, 1)
    (tmp_path / "images" / "big.png").write_bytes(hc.bomb_png(3000))  # 9 megapixels in a few KB
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"id": "a", "image": "img0.jpg", "top": "A", "leaf": "B"})
        + "\n"
        + json.dumps({"id": "b", "image": "big.png", "top": "A", "leaf": "B"})
        + "\n"
    )

    def kinds(**caps) -> list[list[str]]:
        return [
            sorted(p.kind for p in r.problems) for r in read_catalogue(_schema(tmp_path, "p.jsonl", **caps))
        ]

    assert kinds() == [[], []]  # the defaults: 50 MB, 50 megapixels
    assert kinds(max_image_pixels=8_000_000) == [[], ["image_too_large"]]
    size = (tmp_path / "images" / "img0.jpg").stat().st_size
    assert kinds(max_image_bytes=size - 1) == [["image_too_large"]] * 2
    assert kinds(max_image_bytes=size) == [[], ["image_too_large"]]


def test_an_image_root_reached_through_a_symlink_is_inside_itself(tmp_path: Path) -> None:
    """A catalogue whose image folder is a symlink (as the shared datasets are) reads as before."""
    _images(tmp_path / "real", 1)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "images").symlink_to(tmp_path / "real" / "images")
    (tmp_path / "cat" / "p.jsonl").write_text(
        json.dumps({"id": "a", "image": "img0.jpg", "top": "A", "leaf": "B"})
    )
    (record,) = read_catalogue(_schema(tmp_path / "cat", "p.jsonl"))
    assert record.ok


@pytest.mark.parametrize("which", ["table", "schema"])
def test_a_fifo_as_table_or_schema_fails_in_one_line_instead_of_blocking(tmp_path: Path, which: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    if which == "table":
        (tmp_path / "p.csv").symlink_to(tmp_path / "fifo")
        with pytest.raises(CatalogueError, match="is not a regular file"):
            list(read_catalogue(_schema(tmp_path, "p.csv")))
    else:
        with pytest.raises(CatalogueError, match="catalogue schema .* is not a regular file"):
            CatalogueSchema.from_yaml(tmp_path / "fifo")


def test_allow_outside_root_reads_an_absolute_path_but_never_a_device(tmp_path: Path) -> None:
    built = hc.build_table(tmp_path, [("good", 0), ("absolute", 1), ("device", 2)], "csv", allow_outside=True)
    schema = CatalogueSchema.from_yaml(built.schema)
    assert yaml.safe_load(built.schema.read_text())["allow_outside_root"] is True
    kinds = [sorted(p.kind for p in r.problems) for r in read_catalogue(schema)]
    assert kinds == [[], [], ["not_a_file"]]
