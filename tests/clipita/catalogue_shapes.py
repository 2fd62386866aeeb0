"""Tiny generated catalogues of every shape a user may bring (issue 20), for end-to-end tests: tables with titles
and/or attributes or neither, folder trees with or without a metadata table, with or without their own split
folders, and with test-only leaves (no training product in the catalogue's own split).

Every catalogue has the same eight leaves under three roots, one colour per leaf (a model can learn it), and
returns the path of its schema YAML."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import yaml
from test_catalogue_shapes_e2e import leaf_colour, write_jpeg

LEAVES = [("Fruit", "Apple"), ("Fruit", "Pear"), ("Fruit", "Plum"), ("Veg", "Leek"), ("Veg", "Kale")]
LEAVES += [("Veg", "Bean"), ("Nut", "Almond"), ("Nut", "Pecan")]
COLOURS = ["red", "green", "blue", "white", "black", "yellow", "brown", "grey"]
TEST_ONLY = {
    ("Nut", "Almond"),
    ("Nut", "Pecan"),
}  # with test_only: no train product (Pecan: val products only)


def own_split(j: int, per_leaf: int) -> str:
    """The split folder of a leaf's ``j``-th product: two thirds train, then val and test alternately."""
    return "train" if j < per_leaf * 2 // 3 else ("val" if j % 2 else "test")


def text_of(i: int, j: int) -> tuple[str, str]:
    """A title naming the leaf (with a noise word) and a colour attribute that mostly follows the leaf."""
    rng = np.random.default_rng(1000 * i + j)
    title = f"{['fine', 'fresh', 'big', 'small'][j % 4]} {LEAVES[i][1].lower()} no {j}"
    colour = COLOURS[i] if rng.random() < 0.8 else COLOURS[int(rng.integers(len(COLOURS)))]
    return title, colour


def write_schema(root: Path, schema: dict) -> Path:
    path = root / f"{schema['name']}.yaml"
    path.write_text(yaml.safe_dump(schema, sort_keys=False))
    return path


def folder_tree(
    root: Path,
    metadata: bool = False,
    split_folders: bool = False,
    test_only: bool = False,
    per_leaf: int = 12,
) -> Path:
    """``[train|val|test/]Fruit/Apple/Apple_003.jpg``; ``metadata``: a ``meta.csv`` giving each image a title and a
    ``colour`` attribute; ``test_only`` (with ``split_folders``): :data:`TEST_ONLY` leaves get no train product."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (top, leaf) in enumerate(LEAVES):
        for j in range(per_leaf):
            split = own_split(j, per_leaf)
            if (
                test_only
                and (top, leaf) in TEST_ONLY
                and (split == "train" or (leaf == "Pecan" and split == "test"))
            ):
                continue
            rel = Path(split, top, leaf) if split_folders else Path(top, leaf)
            write_jpeg(root / "images" / rel / f"{leaf}_{j:03d}.jpg", leaf_colour(i), rng)
            title, colour = text_of(i, j)
            rows.append({"id": (rel / f"{leaf}_{j:03d}").as_posix(), "title": title, "colour": colour})
    schema = {"layout": "folder_tree", "image_root": "images", "split_folders": split_folders}
    if metadata:
        with open(root / "meta.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "title", "colour"])
            writer.writeheader()
            writer.writerows(rows)
        schema.update(table="meta.csv", id_column="id", attribute_columns=["colour"])
    schema["name"] = "tree_meta" if metadata else "tree"
    return write_schema(root, schema)


def table(root: Path, titles: bool, attributes: bool, per_leaf: int = 12) -> Path:
    """A CSV table of the eight leaves with a title column and/or a ``colour`` attribute column, or neither."""
    rng = np.random.default_rng(1)
    rows = []
    for i, (top, leaf) in enumerate(LEAVES):
        for j in range(per_leaf):
            file = f"img_{i}_{j}.jpg"
            write_jpeg(root / "images" / file, leaf_colour(i), rng)
            title, colour = text_of(i, j)
            row = {"sku": f"p{i}-{j}", "file": file, "top": top, "leaf": leaf}
            row.update({"title": title} if titles else {})
            row.update({"colour": colour} if attributes else {})
            rows.append(row)
    with open(root / "products.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    name = "table" + ("_titles" if titles else "") + ("_attributes" if attributes else "")
    schema = {
        "table": "products.csv",
        "image_root": "images",
        "id_column": "sku",
        "image_column": "file",
        "category_columns": ["top", "leaf"],
        "attribute_columns": ["colour"] if attributes else [],
        "name": name,
    }
    return write_schema(root, schema)


def adaptive_overrides(schema: Path, tmp_path: Path) -> dict[str, object]:
    """The tiny adaptive fit both shape tests run: one epoch of a random test tower, a third of the seen leaves
    pseudo-novel, no refit."""
    return {
        "data.catalogue": str(schema),
        "data.work_dir": str(tmp_path / "work"),
        "data.pseudo_novel_fraction": 0.34,
        "model.net.image_model": "test_efficientnet",
        "model.net.image_weights": "none",
        "model.net.image_size": 32,
        "trainer.max_epochs": 1,
        "trainer.logger.init_args.save_dir": str(tmp_path / "runs"),
        "trainer.enable_model_summary": False,
        "refit_after_choice": False,
    }
