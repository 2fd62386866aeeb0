"""Fuzz schema files: whatever YAML a user writes, `clipita shard` either shards (every row accounted for) or stops
with a CatalogueError that says what is wrong - never a traceback from deep inside."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis_profiles import ci_settings
from PIL import Image

from datamodules.catalogue import IMAGE_SUFFIXES, CatalogueError
from datamodules.sharding import shard_catalogue

COLUMNS = ["id", "title", "level1", "level2", "colour", "path"]
ROWS = [
    {
        "id": "a1",
        "title": "Blue shirt",
        "level1": "Apparel",
        "level2": "Shirts",
        "colour": "Blue",
        "path": "Apparel > Shirts",
    },
    {
        "id": "a2",
        "title": "Red shoe",
        "level1": "Footwear",
        "level2": "Shoes",
        "colour": "",
        "path": "Footwear > Shoes",
    },
    {"id": "a3", "title": "", "level1": "Footwear", "level2": "", "colour": "Red", "path": ""},
]

scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=12), st.sampled_from(COLUMNS)
)
column_list = st.lists(st.one_of(st.sampled_from(COLUMNS), st.text(max_size=6)), max_size=3)
schema = st.fixed_dictionaries(
    {},
    optional={
        "layout": st.one_of(st.sampled_from(["table", "folder_tree"]), scalar),
        "table": st.one_of(st.sampled_from(["products.csv", "products.jsonl", "missing.csv"]), scalar),
        "image_root": st.one_of(st.just("images"), scalar),
        "id_column": st.one_of(st.sampled_from(COLUMNS), scalar),
        "image_column": st.one_of(st.none(), scalar),
        "image_pattern": st.one_of(st.sampled_from(["{id}.jpg", "{id}", "{nope}.jpg"]), scalar),
        "title_column": st.one_of(st.sampled_from(COLUMNS), scalar),
        "attribute_columns": st.one_of(column_list, scalar),
        "category_columns": st.one_of(column_list, scalar),
        "category_column": st.one_of(st.sampled_from(COLUMNS), scalar),
        "category_separator": st.one_of(st.sampled_from([" > ", ">", ""]), scalar),
        "description_column": st.one_of(st.sampled_from(COLUMNS), scalar),
        "split_folders": st.one_of(st.booleans(), scalar),
        "sidecar_text": st.one_of(st.booleans(), scalar),
        "name": scalar,
        "unexpected": scalar,
    },
)


def _catalogue(folder: Path) -> None:
    (folder / "images").mkdir()
    for row in ROWS:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / "images" / f"{row['id']}.jpg")
    lines = [",".join(COLUMNS)] + [",".join(row[c] for c in COLUMNS) for row in ROWS]
    (folder / "products.csv").write_text("\n".join(lines) + "\n")
    (folder / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))


@pytest.mark.fuzz
@ci_settings(60)
@given(schema)
@example(
    {
        "table": "products.csv",
        "id_column": "id",
        "title_column": "title",
        "category_columns": ["level1", "level2"],
    }
)
@example({"table": "products.jsonl", "id_column": "id", "title_column": "title", "category_column": "path"})
@example({"layout": "folder_tree"})  # the example that once failed on a fresh clone
@example({"layout": "folder_tree", "image_root": "images"})  # images outside any category: no product
@example({"layout": "folder_tree", "split_folders": True})  # no split folders: no product
@example({"layout": "folder_tree", "table": "products.csv"})  # a metadata table that matches no image
def test_any_schema_file_shards_or_fails_with_a_catalogue_error(fields):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _catalogue(folder)
        path = folder / "catalogue.yaml"
        path.write_text(yaml.safe_dump(fields))
        try:
            manifest = shard_catalogue(str(path), str(folder / "shards"), progress=False)
        except CatalogueError as err:  # includes NoProductsError: no row survived
            assert str(err)  # says what is wrong
            return
        assert manifest.sharded >= 1  # zero surviving products is an error, never a quiet success
        assert manifest.sharded + len(manifest.skipped) == manifest.input_rows
        schema = manifest.schema
        if schema["layout"] == "folder_tree":
            # rows are the image files under image_root (the YAML, tables and other files are not rows), and a
            # file name never becomes a title: text only comes from a metadata table that matched
            root = Path(schema["image_root"])
            images = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
            assert manifest.input_rows == len(images)
            if not schema["table"]:
                assert manifest.modalities["title"]["present"] == 0
        else:
            assert manifest.input_rows == len(ROWS)
