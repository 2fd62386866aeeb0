"""Reading a catalogue (``datamodules.catalogue.read_catalogue``): one record per row, every kind of bad value
reported by row and id, duplicates flagged, the same records when image checks run in worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from catalogue_files import GOOD_ROWS, kinds, make_image, table_schema, write_csv
from shop_catalogue import build_catalogue

from datamodules.catalogue import (
    CatalogueError,
    CatalogueSchema,
    read_catalogue,
)
from datamodules.sharding import shard_catalogue


def test_csv_good_rows(tmp_path: Path) -> None:
    records = list(read_catalogue(write_csv(tmp_path, GOOD_ROWS)))
    assert [r.row for r in records] == [1, 2, 3]
    assert all(r.ok for r in records), [r.describe() for r in records]
    p1, p2 = records[0], records[1]
    assert (p1.id, p1.title, p1.category, p1.attributes) == (
        "p1",
        "Red shirt",
        ("Apparel", "Shirts"),
        {"colour": "Red"},
    )
    assert p2.attributes == {}  # a missing attribute value is absent, not ""
    assert p1.image_path == str(tmp_path / "images" / "p1.jpg")
    assert p1.image_format == "JPEG" and p1.image_sha256 is not None


@pytest.mark.parametrize(
    "row, kind, fragment",
    [
        (["p9", "Shirt", "Apparel", "", "Red"], "missing_category", "['leaf']"),
        (["p9", "Shirt", " ", "Shirts", "Red"], "missing_category", "['top']"),
        (["", "Shirt", "Apparel", "Shirts", "Red"], "bad_id", "empty id"),
        (["a\tb", "Shirt", "Apparel", "Shirts", "Red"], "control_character", "column 'id' 'a\\tb'"),
    ],
)
def test_bad_values_are_reported_with_row_and_id(
    tmp_path: Path, row: list[str], kind: str, fragment: str
) -> None:
    schema = write_csv(tmp_path, [*GOOD_ROWS, row], images=False)
    for good in GOOD_ROWS:
        make_image(tmp_path / "images" / f"{good[0]}.jpg")
    if "/" not in row[0] and "\\" not in row[0] and row[0]:
        make_image(tmp_path / "images" / f"{row[0]}.jpg")
    records = list(read_catalogue(schema))
    assert [r.ok for r in records] == [True, True, True, False]
    bad = records[3]
    assert bad.row == 4 and bad.id == row[0].strip()
    assert kind in kinds(bad)
    assert fragment in bad.reason


@pytest.mark.parametrize("product_id", ["B00.123", "SKU/77", "ölkanne 2", "a\\b", "v1.2.3"])
def test_any_printable_id_is_accepted(tmp_path: Path, product_id: str) -> None:
    schema = write_csv(tmp_path, [[product_id, "Shirt", "Apparel", "Shirts", "Red"]], images=False)
    make_image(tmp_path / "images" / f"{product_id}.jpg")
    (record,) = read_catalogue(schema)
    assert record.ok and record.id == product_id


@pytest.mark.parametrize("title", ["", "   "])
def test_empty_title_is_kept_without_a_title(tmp_path: Path, title: str) -> None:
    (record,) = read_catalogue(write_csv(tmp_path, [["p9", title, "Apparel", "Shirts", "Red"]]))
    assert record.ok and record.title == ""


def test_table_without_a_title_column(tmp_path: Path) -> None:
    (tmp_path / "products.csv").write_text("id,top,leaf\np1,Apparel,Shirts\n")
    make_image(tmp_path / "images" / "p1.jpg")
    (record,) = read_catalogue(table_schema(tmp_path, "products.csv", attribute_columns=[]))
    assert record.ok and record.title == ""
    with pytest.raises(CatalogueError, match=r"no column\(s\) \['name'\]"):
        list(
            read_catalogue(table_schema(tmp_path, "products.csv", attribute_columns=[], title_column="name"))
        )


def test_duplicate_ids_flag_second_and_later_occurrences(tmp_path: Path) -> None:
    rows = [*GOOD_ROWS, ["p1", "Again", "Apparel", "Shirts", ""], ["p1", "Thrice", "Apparel", "Shirts", ""]]
    records = list(read_catalogue(write_csv(tmp_path, rows)))
    assert [sorted(kinds(r)) for r in records] == [[], [], [], ["duplicate_id"], ["duplicate_id"]]
    assert "duplicate id 'p1' (first seen in row 1)" in records[4].reason


def test_image_checks_in_worker_processes_change_nothing(tmp_path: Path, monkeypatch) -> None:
    """Checked by 2 worker processes, a window of 4 records at a time (window boundaries inside the bad rows), the
    catalogue reads as the same records with the same problems, and shards into byte-identical output."""
    from datamodules.catalogue import read_catalogue
    from datamodules.catalogue import reader as reader_module

    yaml_path, _ = build_catalogue(tmp_path)
    schema = CatalogueSchema.from_yaml(str(yaml_path))
    monkeypatch.setattr(reader_module, "CHECK_WINDOW", 4)
    alone = list(read_catalogue(schema))
    workers = list(read_catalogue(schema, num_workers=2))
    assert workers == alone and any(r.problems for r in alone)
    one = shard_catalogue(str(yaml_path), str(tmp_path / "one"), shard_size=5, progress=False)
    two = shard_catalogue(str(yaml_path), str(tmp_path / "two"), shard_size=5, progress=False, num_workers=2)
    assert one == two
