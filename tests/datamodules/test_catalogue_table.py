"""Table catalogues (``datamodules.catalogue.table``): CSV, JSONL and Parquet rows, and every malformed row or
file reported by row."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from catalogue_files import GOOD_ROWS, HEADER, csv_line, kinds, make_image, table_schema

from datamodules.catalogue import (
    CatalogueError,
    read_catalogue,
)


def test_csv_with_bom_crlf_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    text = csv_line(HEADER) + "\n" + csv_line(["p1", "Red\nshirt", "Apparel", "Shirts", ""]) + "\r\n"
    (tmp_path / "products.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    make_image(tmp_path / "images" / "p1.jpg")
    (record,) = read_catalogue(table_schema(tmp_path, "products.csv"))
    assert record.ok and record.row == 1 and record.title == "Red\r\nshirt"


def test_jsonl_rows_with_a_category_path_column(tmp_path: Path) -> None:
    lines = [
        {"sku": 17, "name": "Red shirt", "path": "Apparel > Shirts", "colour": "Red", "size": None},
        {"sku": "18", "name": "Blue jeans", "path": "Apparel>Jeans"},
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    for sku in (17, 18):
        make_image(tmp_path / "images" / f"{sku}.jpg")
    schema = table_schema(
        tmp_path,
        "p.jsonl",
        id_column="sku",
        title_column="name",
        category_columns=[],
        category_column="path",
        attribute_columns=["colour", "size"],
    )
    records = list(read_catalogue(schema))
    assert all(r.ok for r in records), [r.describe() for r in records]
    assert [(r.id, r.category, r.attributes) for r in records] == [
        ("17", ("Apparel", "Shirts"), {"colour": "Red"}),
        ("18", ("Apparel", "Jeans"), {}),
    ]


def test_parquet_rows_with_an_image_column(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "title": ["Red shirt", "Blue jeans"],
            "top": ["Apparel", "Apparel"],
            "leaf": ["Shirts", "Jeans"],
            "colour": ["Red", None],
            "year": pa.array([2011.0, None], pa.float64()),
            "file": ["a/one.png", "b/two.jpg"],
        }
    )
    pq.write_table(table, tmp_path / "p.parquet")
    make_image(tmp_path / "images" / "a" / "one.png", fmt="PNG")
    make_image(tmp_path / "images" / "b" / "two.jpg")
    schema = table_schema(tmp_path, "p.parquet", image_column="file", attribute_columns=["colour", "year"])
    one, two = read_catalogue(schema)
    assert one.ok and two.ok
    assert (one.id, one.attributes, one.image_format) == ("1", {"colour": "Red", "year": "2011"}, "PNG")
    assert two.attributes == {} and two.image_path == str(tmp_path / "images" / "b" / "two.jpg")


def test_table_missing_a_named_column_is_a_schema_error(tmp_path: Path) -> None:
    (tmp_path / "products.csv").write_text("id,title,top\np1,x,A\n")
    with pytest.raises(CatalogueError, match=r"no column\(s\) \['leaf', 'colour'\]"):
        list(read_catalogue(table_schema(tmp_path, "products.csv")))


def test_missing_table_file_is_a_schema_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="nothing.csv"):
        list(read_catalogue(table_schema(tmp_path, "nothing.csv")))


def test_csv_wrong_column_count(tmp_path: Path) -> None:
    text = (
        csv_line(HEADER) + csv_line(GOOD_ROWS[0]) + '"p2","Blue jeans","Apparel"\n' + csv_line(GOOD_ROWS[2])
    )
    (tmp_path / "products.csv").write_text(text)
    for good in GOOD_ROWS:
        make_image(tmp_path / "images" / f"{good[0]}.jpg")
    records = list(read_catalogue(table_schema(tmp_path, "products.csv")))
    assert [r.ok for r in records] == [True, False, True]
    assert records[1].row == 2 and records[1].id == "p2" and kinds(records[1]) == {"malformed_row"}
    assert "3 fields, the header has 5" in records[1].reason


def test_csv_non_utf8_bytes_are_reported_not_fatal(tmp_path: Path) -> None:
    head = csv_line(HEADER).encode()
    rows = [csv_line(r).encode() for r in GOOD_ROWS]
    rows[1] = b'"p2","Blue \xff\xfe jeans","Apparel","Jeans",""\n'
    (tmp_path / "products.csv").write_bytes(head + b"".join(rows))
    for good in GOOD_ROWS:
        make_image(tmp_path / "images" / f"{good[0]}.jpg")
    records = list(read_catalogue(table_schema(tmp_path, "products.csv")))
    assert [r.ok for r in records] == [True, False, True]
    assert records[1].id == "p2" and kinds(records[1]) == {"non_utf8"}
    assert "column 'title'" in records[1].reason and "\\xff\\xfe" in records[1].reason


def test_csv_nul_byte_is_a_control_character(tmp_path: Path) -> None:
    """A NUL in a title becomes a space (counted), as any control character in free text and in any format."""
    text = csv_line(HEADER) + csv_line(GOOD_ROWS[0]) + csv_line(["p2", "Blue\0jeans", "Apparel", "Jeans", ""])
    (tmp_path / "products.csv").write_text(text)
    make_image(tmp_path / "images" / "p1.jpg")
    make_image(tmp_path / "images" / "p2.jpg")
    stats: dict = {}
    good, kept = read_catalogue(table_schema(tmp_path, "products.csv"), stats=stats)
    assert good.ok and kept.ok and kept.title == "Blue jeans"
    assert stats["control_characters_replaced"] == {"title": 1}


def test_jsonl_bad_lines(tmp_path: Path) -> None:
    good = {"id": "p1", "title": "Red shirt", "top": "A", "leaf": "B"}
    lines = [
        json.dumps(good).encode(),
        b'{"id": "p2", "title": "broken", ',  # invalid JSON
        b'["p3", "a list"]',  # not an object
        json.dumps({"id": "p4", "title": "no leaf", "top": "A"}).encode(),  # missing required column
        '{"id": "p5", "title": "caf\xe9", "top": "A", "leaf": "B"}'.encode("latin-1"),  # not UTF-8
        json.dumps({"id": "p6", "title": "x", "top": "A", "leaf": ["B", "C"]}).encode(),  # non-scalar
        json.dumps({**good, "id": "p7", "title": "lone \ud800 surrogate"}).encode(),
    ]
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for n in range(1, 8):
        make_image(tmp_path / "images" / f"p{n}.jpg")
    records = list(read_catalogue(table_schema(tmp_path, "p.jsonl", attribute_columns=[])))
    assert [r.row for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert records[0].ok
    assert kinds(records[1]) == {"malformed_row"} and "invalid JSON on line 2" in records[1].reason
    assert kinds(records[2]) == {"malformed_row"} and "JSON list" in records[2].reason
    assert records[3].id == "p4" and "missing required column(s) ['leaf']" in records[3].reason
    assert records[4].id == "p5" and kinds(records[4]) == {"non_utf8"} and "\\xe9" in records[4].reason
    assert records[5].id == "p6" and "column 'leaf' holds a list" in records[5].reason
    assert records[6].id == "p7" and kinds(records[6]) == {"non_utf8"}


def test_category_path_column_with_an_empty_level(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(
        json.dumps({"id": "a", "title": "t", "path": "A >  > C"})
        + "\n"
        + json.dumps({"id": "b", "title": "t"})
        + "\n"
    )
    make_image(tmp_path / "images" / "a.jpg")
    make_image(tmp_path / "images" / "b.jpg")
    schema = table_schema(
        tmp_path, "p.jsonl", category_columns=[], category_column="path", attribute_columns=[]
    )
    a, b = read_catalogue(schema)
    assert kinds(a) == {"missing_category"} and "'A >  > C'" in a.reason
    assert kinds(b) == {"malformed_row"} and "['path']" in b.reason
