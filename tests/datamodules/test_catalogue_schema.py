"""The catalogue schema YAML (``datamodules.catalogue.schema``): paths resolved, bad schemas named."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.catalogue import (
    CatalogueError,
    CatalogueSchema,
)


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
