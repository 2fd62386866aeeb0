"""Any catalogue a shop has goes in: image-only tables, folder trees (with metadata, with split folders), any id,
any category name; no product surviving is an error; the leakage guard measures labels leaking into text."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
import webdataset as wds
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_profiles import ci_settings
from PIL import Image

from clipita_core.manifest import Manifest
from clipita_core.tree import CategoryTree
from datamodules.catalogue import CatalogueFileNotFoundError, CatalogueSchema
from datamodules.feature_encoding import encode_features
from datamodules.feature_split import FeatureSplit
from datamodules.leakage import leakage_report, names_label, tokens
from datamodules.records import (
    RecordError,
    ShardRecord,
    category_from_text,
    category_to_text,
    decode_sample,
    encode_sample,
    id_from_key,
    shard_key,
)
from datamodules.shard_pipeline import build_shard_pipeline
from datamodules.sharding import NoProductsError, load_manifest, shard_catalogue, write_shards

ODD_IDS = ["B00.123", "SKU/77", "ölkanne 2", "a\\b", "..", "x.tar", "50%", "日本 1", "%41", " ", "-_"]
LEAVES = [("Fruit", "Apple"), ("Fruit", "Pear"), ("Veg", "Leek"), ("Veg", "Kale"), ("Foot > wear", "Boots")]


def jpeg(seed: int, size: int = 12) -> bytes:
    image = Image.new("RGB", (size, size), (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def write_table(root: Path, rows: list[dict[str, str]], columns: list[str], schema: str) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "products.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (root / "catalogue.yaml").write_text(schema, encoding="utf-8")
    return root / "catalogue.yaml"


def titleless_table(root: Path, per_leaf: int = 6, ids=None) -> tuple[Path, list[dict[str, str]]]:
    """A table of images only (no title column): id, image path column, two category levels."""
    rows = []
    for n in range(per_leaf * len(LEAVES)):
        top, leaf = LEAVES[n % len(LEAVES)]
        pid = ids[n] if ids and n < len(ids) else f"p{n}"
        rows.append({"id": pid, "image": f"img{n}.jpg", "top": top, "leaf": leaf})
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / f"img{n}.jpg").write_bytes(jpeg(n))
    schema = (
        "name: photos\ntable: products.csv\nimage_root: images\nimage_column: image\n"
        "category_columns: [top, leaf]\n"
    )
    return write_table(root, rows, ["id", "image", "top", "leaf"], schema), rows


def read_shards(manifest: Manifest, out: Path) -> dict[str, tuple[ShardRecord, str]]:
    records = {}
    for split in ("train", "val", "test"):
        if not manifest.shard_urls(out, split):
            continue
        for sample in wds.WebDataset(manifest.shard_urls(out, split), shardshuffle=False, empty_check=False):
            record = decode_sample(sample)
            assert id_from_key(sample["__key__"]) == record.id
            records[record.id] = (record, split)
    return records


# ------------------------------------------------------------------------------------------------- the codec


@ci_settings(200)
@given(st.text(min_size=1, max_size=30).filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s)))
def test_shard_key_round_trips_any_id_and_is_a_safe_member_name(product_id: str) -> None:
    key = shard_key(product_id)
    assert id_from_key(key) == product_id
    assert "." not in key and "/" not in key and "\\" not in key and key.isascii()


def test_shard_key_keeps_plain_ids_and_refuses_foreign_keys() -> None:
    assert shard_key("15970") == "15970" and shard_key("B00.123") == "B00%2E123"
    for bad in ("", "a.b", "%41", "%zz", "a%2"):
        with pytest.raises(RecordError):
            id_from_key(bad)
    assert category_from_text(category_to_text(("Foot > wear", "Boots"))) == ("Foot > wear", "Boots")


def test_record_codec_round_trip() -> None:
    record = ShardRecord("SKU/77", ("A > B", "C"), "", {"colour": "Red"}, "val", "long text")
    sample = encode_sample(record, b"jpg")
    assert decode_sample(sample) == record and not record.has_title
    plain = ShardRecord("p1", ("A",), "T", {}, "train")
    assert "description" not in json.loads(plain.to_json_bytes())  # the old record layout, byte for byte


# ------------------------------------------------------------------------------------------------- tables


def test_titleless_table_shards_every_product(tmp_path: Path) -> None:
    catalog, rows = titleless_table(tmp_path)
    manifest = shard_catalogue(str(catalog), str(tmp_path / "out"), shard_size=7, progress=False)
    assert manifest.sharded == manifest.input_rows == len(rows) and not manifest.skipped
    assert manifest.modalities["title"] == {"present": 0, "missing": len(rows)}
    assert manifest.modalities_present == ["image"]
    assert not manifest.leakage["flagged"]
    assert all(not r.has_title for r, _ in read_shards(manifest, tmp_path / "out").values())


def test_odd_ids_and_a_level_named_a_gt_b_round_trip(tmp_path: Path) -> None:
    catalog, rows = titleless_table(tmp_path, ids=ODD_IDS)
    out = tmp_path / "out"
    manifest = shard_catalogue(str(catalog), str(out), shard_size=5, unseen_fraction=0.0, progress=False)
    expected = {r["id"].strip(): (r["top"], r["leaf"]) for r in rows if r["id"].strip()}
    assert manifest.sharded == len(expected)  # " " is the one empty id
    records = read_shards(manifest, out)
    assert {pid: r.category for pid, (r, _) in records.items()} == expected
    # the tree keeps "Foot > wear" as one name, and the split counts carry the paths themselves
    tree = CategoryTree.from_json(manifest.tree_paths)
    assert ("Foot > wear",) in tree and ("Foot > wear", "Boots") in tree and ("Foot",) not in tree
    counted = {p for s in manifest.splits.values() for p in s.category_paths}
    assert ("Foot > wear", "Boots") in counted
    # the shard pipeline serves the original ids and the paths as tuples
    loader = build_shard_pipeline(
        manifest.shard_urls(out, "train"), lambda im: torch.zeros(3, 4, 4), tree, 4, training=False
    )
    served = {
        pid: path
        for batch in loader
        for pid, path in zip(batch["product_id"], batch["category_path"], strict=True)
    }
    assert served and all(expected[pid] == path for pid, path in served.items())
    assert len(served) == manifest.count("train")


def test_feature_cache_serves_title_mask_and_tuple_paths(tmp_path: Path) -> None:
    from lightning_modules.components import TextEncoder

    catalog, rows = titleless_table(tmp_path, ids=ODD_IDS)
    text = (tmp_path / "products.csv").read_text(encoding="utf-8")
    lines = text.splitlines()
    lines[0] += ",title"
    lines[1:] = [line + (",Some title" if i % 2 else ",") for i, line in enumerate(lines[1:])]
    (tmp_path / "products.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    manifest = shard_catalogue(str(catalog), str(out), unseen_fraction=0.0, progress=False)
    assert 0 < manifest.modalities["title"]["present"] < manifest.sharded
    stores = encode_features(
        str(out), manifest, tmp_path / "features", None, TextEncoder(), num_workers=0, progress=False
    )
    info = manifest.split("train")
    split = FeatureSplit(
        stores,
        [(name, int(info.shard_files[name].count)) for name in info.shards],
        CategoryTree.from_json(manifest.tree_paths),
    )
    records = read_shards(manifest, out)
    rows = split.batch(list(range(len(split))))
    ids = list(rows["product_id"])
    assert ids and set(ids) <= set(records) and set(ids) & set(ODD_IDS)  # the original ids, not shard keys
    assert rows["title_mask"].dtype == torch.bool
    assert rows["title_mask"].tolist() == [records[i][0].has_title for i in ids]
    assert not rows["title_features"][~rows["title_mask"]].abs().any()  # a missing title is a zero vector


# ------------------------------------------------------------------------------------------------- folder trees


def folder_tree(root: Path, splits: bool = False, per_leaf: int = 4) -> Path:
    """Class-named files (``Granny-Smith_003.jpg``), as many public image sets are laid out."""
    leaves = [("Fruit", "Apple", "Granny-Smith"), ("Fruit", "Apple", "Fuji"), ("Fruit", "Pear", "Conference")]
    n = 0
    for split in ("train", "val", "test") if splits else ("",):
        for path in leaves:
            count = per_leaf if split in ("", "train") else 1
            if split == "test" and path[-1] == "Conference":
                continue
            for k in range(count):
                folder = root / "tree" / split / Path(*path)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{path[-1]}_{k:03d}.jpg").write_bytes(jpeg(n := n + 1))
    if splits:  # a leaf only in test: unseen, since nothing trains on it
        folder = root / "tree" / "test" / "Fruit" / "Pear" / "Nashi"
        folder.mkdir(parents=True)
        (folder / "Nashi_000.jpg").write_bytes(jpeg(99))
    return root / "tree"


def test_folder_tree_has_no_titles(tmp_path: Path) -> None:
    tree = folder_tree(tmp_path)
    schema = CatalogueSchema(layout="folder_tree", image_root=str(tree), name="fruit")
    manifest = write_shards(schema, str(tmp_path / "out"), progress=False)
    assert manifest.sharded == 12 and manifest.modalities["title"]["present"] == 0
    assert all(
        r.title == "" and r.id.endswith(".jpg") for r, _ in read_shards(manifest, tmp_path / "out").values()
    )
    # the file names do name the class: reported for ids, but no text leaks and no model reads ids
    assert manifest.leakage["id_flagged"] and not manifest.leakage["flagged"]


def test_split_folders_keep_the_catalogues_split_with_repeated_file_names(tmp_path: Path) -> None:
    tree = folder_tree(tmp_path, splits=True)
    schema = CatalogueSchema(layout="folder_tree", image_root=str(tree), split_folders=True, name="fruit")
    manifest = write_shards(schema, str(tmp_path / "out"), progress=False)
    records = read_shards(manifest, tmp_path / "out")
    assert {split for _, split in records.values()} == {"train", "val", "test"}
    assert all(pid.split("/", 1)[0] == split for pid, (_, split) in records.items())
    assert "train/Fruit/Apple/Fuji/Fuji_000.jpg" in records and "val/Fruit/Apple/Fuji/Fuji_000.jpg" in records
    assert manifest.count("train") == 12 and manifest.split_source == "folders"
    assert manifest.unseen_categories == [("Fruit", "Pear", "Nashi")]


def test_leakage_guard_fires_when_metadata_adds_file_name_titles(tmp_path: Path) -> None:
    tree = folder_tree(tmp_path)
    with open(tmp_path / "meta.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "title"])
        for image in sorted(tree.rglob("*.jpg")):
            writer.writerow([image.relative_to(tree).as_posix(), image.stem.replace("_", " ")])
    (tmp_path / "fruit.yaml").write_text(
        "layout: folder_tree\nimage_root: tree\ntable: meta.csv\nid_column: path\n", encoding="utf-8"
    )
    manifest = shard_catalogue(str(tmp_path / "fruit.yaml"), str(tmp_path / "out"), progress=False)
    assert manifest.modalities["title"]["present"] == 12
    leakage = manifest.leakage
    assert leakage["flagged"] and leakage["flagged_fields"] == ["title"] and leakage["share"] == 1.0
    assert leakage["leaves_flagged"] == leakage["leaves"] == 3


def test_leakage_is_token_wise_and_needs_most_products_of_most_leaves() -> None:
    assert names_label(tokens("granny smith 011"), tokens("Granny-Smith"))
    assert names_label(tokens("Blue Shirt"), tokens("Shirts"))
    assert not names_label(tokens("Smith Granny"), tokens("Granny-Smith"))
    few = [(("A", "Shirts"), {"title": "a shirt"}), (("A", "Shirts"), {"title": "plain"}), (("A", "Bag"), {})]
    report = leakage_report(few)
    assert report["fields"]["title"]["share"] == pytest.approx(1 / 3, abs=1e-3) and not report["flagged"]


# ------------------------------------------------------------------------------------------------- errors


def test_no_surviving_product_is_an_error_naming_the_reasons(tmp_path: Path) -> None:
    catalog, rows = titleless_table(tmp_path)
    for image in (tmp_path / "images").glob("*.jpg"):
        image.unlink()
    rows_total = len(rows)
    with pytest.raises(
        NoProductsError, match=rf"all {rows_total} rows were skipped: {rows_total} missing image"
    ):
        shard_catalogue(str(catalog), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_files_are_file_not_found_errors_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        shard_catalogue(str(tmp_path / "nothing.yaml"), str(tmp_path / "out"), progress=False)
    (tmp_path / "c.yaml").write_text("table: gone.csv\ncategory_column: path\n")
    with pytest.raises(CatalogueFileNotFoundError, match="gone.csv"):
        shard_catalogue(str(tmp_path / "c.yaml"), str(tmp_path / "out"), progress=False)
    (tmp_path / "t.yaml").write_text("layout: folder_tree\nimage_root: no_tree\n")
    with pytest.raises(ValueError, match="no_tree"):
        shard_catalogue(str(tmp_path / "t.yaml"), str(tmp_path / "out"), progress=False)
    assert load_manifest  # the module's readers stay importable from sharding
