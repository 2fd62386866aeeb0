"""Catalogue schema loading and record reading: every layout, every kind of bad record reported by row and id."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datamodules.catalogue import (
    CatalogueError,
    CatalogueSchema,
    RawRecord,
    check_image,
    jpeg_bytes,
    read_catalogue,
)

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


# ---------------------------------------------------------------------------------------------------- schema


def test_schema_from_yaml_resolves_paths_relative_to_the_yaml_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf" / "catalogs"
    folder.mkdir(parents=True)
    yaml_path = folder / "shop.yaml"
    yaml_path.write_text(
        "table: ../data/products.csv\nimage_root: ../data/images\ntitle_column: name\n"
        "category_column: path\nattribute_columns: [colour]\n",
        encoding="utf-8",
    )
    schema = CatalogueSchema.from_yaml(yaml_path)
    assert schema.table == str((tmp_path / "conf" / "data" / "products.csv").resolve())
    assert schema.image_root == str((tmp_path / "conf" / "data" / "images").resolve())
    assert schema.name == "shop"  # defaults to the YAML file's stem
    assert schema.category_column == "path" and schema.category_separator == " > "
    assert schema.attribute_columns == ["colour"]


def test_schema_from_yaml_absolute_paths_are_kept(tmp_path: Path) -> None:
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(f"table: {tmp_path}/x.jsonl\nimage_root: /srv/img\ncategory_columns: [a]\n")
    schema = CatalogueSchema.from_yaml(yaml_path)
    assert schema.table == f"{tmp_path}/x.jsonl" and schema.image_root == "/srv/img"


@pytest.mark.parametrize(
    "text, message",
    [
        ("table: a.csv\ncategory_columns: [a]\ncolour_column: c\n", "unknown keys ['colour_column']"),
        ("category_columns: [a]\n", "needs `table`"),
        ("table: a.xlsx\ncategory_columns: [a]\n", "unsupported extension"),
        ("table: a.csv\n", "exactly one of"),
        ("table: a.csv\ncategory_columns: [a]\ncategory_column: b\n", "exactly one of"),
        ("layout: tree\n", "unknown catalogue layout 'tree'"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("table: [unclosed\n", "not valid YAML"),
    ],
)
def test_schema_from_yaml_rejects_bad_schemas(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CatalogueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        CatalogueSchema.from_yaml(path)


def test_schema_from_yaml_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="nowhere.yaml"):
        CatalogueSchema.from_yaml(tmp_path / "nowhere.yaml")


def test_fashion_schema_resolves_from_the_repository() -> None:
    repo = Path(__file__).resolve().parents[2]
    schema = CatalogueSchema.from_yaml(repo / "experiments" / "catalogues" / "fashion.yaml")
    expected = repo.parent / "shared" / "datasets" / "fashion-product-images"
    assert schema.table == str(expected / "styles.csv")
    assert schema.image_root == str(expected / "images")
    assert schema.category_columns == ["masterCategory", "subCategory", "articleType"]
    assert schema.title_column == "productDisplayName"
    assert schema.attribute_columns == ["gender", "baseColour", "season", "year", "usage"]


# ---------------------------------------------------------------------------------------------------- tables


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


# ---------------------------------------------------------------------------------------------------- folder tree


def test_folder_tree_layout(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    make_image(root / "Apparel" / "Shirts" / "red_oxford-shirt.jpg")
    make_image(root / "Apparel" / "Jeans" / "blue-jeans.png", fmt="PNG")
    make_image(root / "Footwear" / "boot.jpeg")
    make_image(root / "loose.jpg")  # outside any category
    (root / "Apparel" / "Shirts" / "notes.txt").write_text("not an image")  # not an image: not a row
    (root / "Apparel" / ".DS_Store").write_bytes(b"\0")  # hidden: not a row
    schema = CatalogueSchema(layout="folder_tree", image_root=str(root))
    stats: dict = {}
    records = by_id(list(read_catalogue(schema, stats=stats)))
    shirt_id = "Apparel/Shirts/red_oxford-shirt.jpg"
    assert set(records) == {shirt_id, "Apparel/Jeans/blue-jeans.png", "Footwear/boot.jpeg", "loose.jpg"}
    shirt = records[shirt_id]
    # file names never become text: a folder tree has no title unless metadata gives one
    assert shirt.ok and shirt.title == "" and shirt.category == ("Apparel", "Shirts")
    assert shirt.attributes == {} and shirt.description == ""
    assert records["Apparel/Jeans/blue-jeans.png"].ok
    assert records["Apparel/Jeans/blue-jeans.png"].image_format == "PNG"
    assert records["Footwear/boot.jpeg"].ok and records["Footwear/boot.jpeg"].category == ("Footwear",)
    assert kinds(records["loose.jpg"]) == {"missing_category"}
    assert sorted(r.row for r in records.values()) == [1, 2, 3, 4]
    assert stats["ignored_files"] == 1


def test_folder_tree_repeated_and_dotted_file_names_are_distinct_ids(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    make_image(root / "A" / "x.jpg")
    make_image(root / "B" / "x.jpg")
    make_image(root / "B" / "v1.2.jpg")
    records = list(read_catalogue(CatalogueSchema(layout="folder_tree", image_root=str(root))))
    assert [(r.id, sorted(kinds(r))) for r in records] == [
        ("A/x.jpg", []),
        ("B/v1.2.jpg", []),
        ("B/x.jpg", []),
    ]


def test_folder_tree_metadata_table_joins_on_relative_path(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    make_image(root / "A" / "x.jpg")
    make_image(root / "B" / "x.jpg")
    make_image(root / "B" / "y.jpg")
    (tmp_path / "meta.csv").write_text(
        "path,title,colour,text\nA/x.jpg,Red thing,Red,long words\nB/x,Blue thing,,\nnowhere/z.jpg,Lost,,\n"
    )
    schema = CatalogueSchema(
        layout="folder_tree",
        image_root=str(root),
        table=str(tmp_path / "meta.csv"),
        id_column="path",
        attribute_columns=["colour"],
        description_column="text",
    )
    stats: dict = {}
    records = by_id(list(read_catalogue(schema, stats=stats)))
    assert (records["A/x.jpg"].title, records["A/x.jpg"].attributes) == ("Red thing", {"colour": "Red"})
    assert records["A/x.jpg"].description == "long words"
    assert (records["B/x.jpg"].title, records["B/x.jpg"].attributes) == ("Blue thing", {})
    assert records["B/y.jpg"].title == "" and records["B/y.jpg"].ok
    assert stats["metadata"]["unmatched_keys"] == 1 and stats["metadata"]["rows"] == 3


def test_folder_tree_sidecar_text(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    make_image(root / "A" / "x.jpg")
    make_image(root / "A" / "y.jpg")
    (root / "A" / "x.txt").write_text("A title\nmore about it\n")
    schema = CatalogueSchema(layout="folder_tree", image_root=str(root), sidecar_text=True)
    records = by_id(list(read_catalogue(schema)))
    assert (records["A/x.jpg"].title, records["A/x.jpg"].description) == ("A title", "more about it")
    assert records["A/y.jpg"].title == ""


def test_folder_tree_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for split in ("train", "val", "test"):
        make_image(root / split / "Fruit" / "Apple" / "img_1.jpg")  # the same file name in every split
    make_image(root / "extra" / "Fruit" / "img_2.jpg")
    schema = CatalogueSchema(layout="folder_tree", image_root=str(root), split_folders=True)
    records = by_id(list(read_catalogue(schema)))
    for split in ("train", "val", "test"):
        record = records[f"{split}/Fruit/Apple/img_1.jpg"]
        assert record.ok and record.split == split and record.category == ("Fruit", "Apple")
    assert kinds(records["extra/Fruit/img_2.jpg"]) == {"outside_split"}


# ---------------------------------------------------------------------------------------------------- bad records


def test_missing_image(tmp_path: Path) -> None:
    schema = write_csv(tmp_path, GOOD_ROWS)
    (tmp_path / "images" / "p2.jpg").unlink()
    record = by_id(list(read_catalogue(schema)))["p2"]
    assert record.row == 2 and kinds(record) == {"missing_image"}
    assert "p2.jpg" in record.reason and "row 2 (id 'p2')" in record.describe()


def test_truncated_jpeg(tmp_path: Path) -> None:
    schema = write_csv(tmp_path, GOOD_ROWS)
    path = tmp_path / "images" / "p3.jpg"
    big = Image.new("RGB", (64, 64))
    big.putdata([(i % 256, (i * 7) % 256, (i * 13) % 256) for i in range(64 * 64)])
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    record = by_id(list(read_catalogue(schema)))["p3"]
    assert record.row == 3 and kinds(record) == {"corrupt_image"}
    assert "p3.jpg" in record.reason and "truncated" in record.reason


@pytest.mark.parametrize("content", [b"", b"not a jpeg at all", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_corrupt_image(tmp_path: Path, content: bytes) -> None:
    schema = write_csv(tmp_path, GOOD_ROWS)
    (tmp_path / "images" / "p1.jpg").write_bytes(content)
    record = by_id(list(read_catalogue(schema)))["p1"]
    assert kinds(record) == {"corrupt_image"} and "p1.jpg" in record.reason


def test_check_image_directly(tmp_path: Path) -> None:
    data = make_image(tmp_path / "ok.jpg")
    fmt, digest, problem = check_image(str(tmp_path / "ok.jpg"))
    assert fmt == "JPEG" and problem is None and len(digest or "") == 64
    assert jpeg_bytes(str(tmp_path / "ok.jpg")) == data  # a JPEG is stored byte for byte


def test_non_jpeg_images_are_re_encoded_to_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    make_image(path, fmt="PNG")
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    for p in (path, tmp_path / "clear.png"):
        data = jpeg_bytes(str(p))
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
    with Image.open(io.BytesIO(jpeg_bytes(str(tmp_path / "clear.png")))) as im:
        assert min(im.getpixel((4, 4))) > 240  # transparency becomes the white catalogue background


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
