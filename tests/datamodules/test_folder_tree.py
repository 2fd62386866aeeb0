"""The folder-tree layout (``datamodules.catalogue.folder_tree``): categories from folders, ids from relative
paths, text only from a metadata table or sidecar files, split folders."""

from __future__ import annotations

from pathlib import Path

from catalogue_files import by_id, kinds, make_image

from datamodules.catalogue import (
    CatalogueSchema,
    read_catalogue,
)


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
