"""Tests for the built-in sample catalogue generator."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from PIL import Image

from clipita_core.tree import CategoryTree
from datamodules.sample_catalogue import (
    SAMPLE_ATTRIBUTES,
    SAMPLE_COLUMNS,
    generate_sample_catalogue,
    leaf_pattern,
    sample_category_paths,
)


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "products.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _all_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    generate_sample_catalogue(str(folder), num_products=600, seed=0, image_size=64)
    return folder


def test_same_seed_gives_same_bytes(tmp_path: Path) -> None:
    first = generate_sample_catalogue(str(tmp_path / "a"), num_products=60, seed=3)
    generate_sample_catalogue(str(tmp_path / "b"), num_products=60, seed=3)
    assert first.name == "catalogue.yaml" and first.exists()
    a, b = _all_bytes(tmp_path / "a"), _all_bytes(tmp_path / "b")
    assert len(a) == 60 + 2
    assert a == b
    other = generate_sample_catalogue(str(tmp_path / "c"), num_products=60, seed=4)
    assert other.parent.joinpath("products.csv").read_bytes() != a["products.csv"]


def test_regenerating_into_the_same_folder_replaces_old_images(tmp_path: Path) -> None:
    generate_sample_catalogue(str(tmp_path), num_products=40, seed=0, image_size=32)
    generate_sample_catalogue(str(tmp_path), num_products=25, seed=0, image_size=32)
    assert len(list((tmp_path / "images").glob("*.jpg"))) == 25
    assert len(_rows(tmp_path)) == 25


def test_schema_yaml(catalogue: Path) -> None:
    schema = yaml.safe_load((catalogue / "catalogue.yaml").read_text(encoding="utf-8"))
    assert schema == {
        "name": "sample",
        "layout": "table",
        "table": "products.csv",
        "image_root": "images",
        "id_column": "id",
        "image_pattern": "{id}.jpg",
        "title_column": "title",
        "attribute_columns": ["colour", "material", "gender", "season"],
        "category_columns": ["level1", "level2", "level3"],
    }


def test_tree_has_three_levels(catalogue: Path) -> None:
    rows = _rows(catalogue)
    tree = CategoryTree.from_paths((r["level1"], r["level2"], r["level3"]) for r in rows)
    assert tree.max_depth == 3
    assert [len(tree.nodes_at_depth(d)) for d in (1, 2, 3)] == [4, 10, 24]
    assert sorted(tree.paths[i] for i in tree.leaves) == sorted(sample_category_paths())
    assert all(r[c] for r in rows for c in ("level1", "level2", "level3"))


def test_siblings_have_distinct_patterns() -> None:
    paths = sample_category_paths()
    by_parent: dict[tuple[str, ...], list[str]] = {}
    for i, path in enumerate(paths):
        by_parent.setdefault(path[:-1], []).append(leaf_pattern(i))
    assert all(len(set(p)) == len(p) for p in by_parent.values())


def test_every_image_decodes_and_rows_match_images(catalogue: Path) -> None:
    rows = _rows(catalogue)
    assert list(rows[0].keys()) == list(SAMPLE_COLUMNS)
    ids = [r["id"] for r in rows]
    assert len(ids) == 600 == len(set(ids))
    assert all("." not in i and "/" not in i for i in ids)
    images = sorted(p.stem for p in (catalogue / "images").glob("*.jpg"))
    assert images == sorted(ids)
    for product_id in ids:
        with Image.open(catalogue / "images" / f"{product_id}.jpg") as image:
            image.load()
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (64, 64)


def test_values_are_sometimes_missing_but_mostly_present(catalogue: Path) -> None:
    rows = _rows(catalogue)
    for name in SAMPLE_ATTRIBUTES:
        missing = sum(1 for r in rows if r[name] == "")
        assert 0 < missing < len(rows) / 2, name
    assert all(r["title"] for r in rows)


def test_titles_and_materials_carry_signal(catalogue: Path) -> None:
    rows = _rows(catalogue)
    leaf_words = {"Jeans", "Denim", "Denims"}
    jeans = [r for r in rows if r["level3"] == "Jeans"]
    assert sum(any(w in r["title"] for w in leaf_words) for r in jeans) > len(jeans) / 2
    denim = [r for r in jeans if r["material"]]
    assert sum(r["material"] == "Denim" for r in denim) > len(denim) / 2


def test_title_modes_signal_noise_none(tmp_path):
    import csv as _csv

    from datamodules.leakage import names_label, tokens
    from datamodules.sample_catalogue import LEAVES, generate_sample_catalogue

    def rows(mode):
        folder = tmp_path / mode
        generate_sample_catalogue(str(folder), num_products=120, seed=3, image_size=32, titles=mode)
        with open(folder / "products.csv", encoding="utf-8") as handle:
            return list(_csv.DictReader(handle)), (folder / "catalogue.yaml").read_text()

    signal, _ = rows("signal")
    noise, _ = rows("noise")
    none, none_yaml = rows("none")
    # the same products, images and categories in every mode; only the titles differ
    drop = lambda rs, key: [{k: v for k, v in r.items() if k != key} for r in rs]  # noqa: E731
    assert drop(signal, "title") == drop(noise, "title") == none
    assert "title" not in none[0] and "title_column: null" in none_yaml
    leaf_nouns = {n.lower() for leaf in LEAVES for n in leaf.nouns}
    leaf_names = [tokens(leaf.path[-1]) for leaf in LEAVES]
    for row in noise:  # no noun of any leaf, no leaf name
        assert not any(names_label(tokens(row["title"]), tokens(n)) for n in leaf_nouns)
        assert not any(names_label(tokens(row["title"]), name) for name in leaf_names)
    assert sum(any(names_label(tokens(r["title"]), tokens(n)) for n in leaf_nouns) for r in signal) > 60
