"""``clipita shard`` writes its manifest through the typed ``Manifest`` and the file is the one it always wrote: the
same keys in the same order, ``json.dumps(indent=1, ensure_ascii=False)`` text, and the round trip through the type
gives back those bytes. The readers' typed accessors agree with the raw JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipita_core.manifest import Manifest
from clipita_core.tree import CategoryTree
from datamodules.manifest import load_manifest, summarize
from datamodules.sample_catalogue.generate import generate_sample_catalogue
from datamodules.sharding import shard_catalogue

# the writer's key order (ARCHITECTURE.md, "manifest.json"); a reordering would change every manifest's bytes
KEYS = [
    "version", "created_by", "schema", "content_hash", "seed", "fractions", "split_source", "moved_to_test",
    "shard_size", "input_rows", "sharded", "skipped", "skipped_by_kind", "tree", "unseen_categories",
    "pseudo_novel_categories", "splits", "attribute_names", "modalities", "modalities_present", "leakage", "reader",
]  # fmt: skip
SPLIT_KEYS = ["count", "shards", "shard_files", "per_category", "category_counts"]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path]:
    root = tmp_path_factory.mktemp("manifest")
    catalogue = generate_sample_catalogue(str(root / "cat"), num_products=60, image_size=16)
    out = root / "shards"
    manifest = shard_catalogue(
        str(catalogue), str(out), shard_size=9, seed=2, pseudo_novel_fraction=0.2, progress=False
    )
    return manifest, out


def test_file_is_the_writers_format_and_round_trips_byte_identical(sharded) -> None:
    manifest, out = sharded
    raw = (out / "manifest.json").read_bytes()
    data = json.loads(raw)
    assert list(data) == KEYS
    assert all(list(info) == SPLIT_KEYS for info in data["splits"].values())
    assert raw == (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    assert Manifest.from_dict(data).to_dict() == data
    assert json.dumps(Manifest.from_dict(data).to_dict()) == json.dumps(data)  # key order at every depth
    assert Manifest.read(out / "manifest.json").to_json().encode("utf-8") == raw
    assert manifest.to_json().encode("utf-8") == raw  # what shard_catalogue returns is what it wrote
    assert load_manifest(str(out)) == manifest


def test_typed_accessors_agree_with_the_json(sharded) -> None:
    manifest, out = sharded
    data = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest.content_hash == data["content_hash"] and manifest.seed == data["seed"] == 2
    assert manifest.tree_paths == data["tree"]["paths"] and manifest.tree_levels == data["tree"]["levels"]
    assert CategoryTree.from_json(manifest.tree_paths).max_depth == 3
    assert manifest.attribute_names == data["attribute_names"] and manifest.attribute_names
    assert (
        manifest.modalities == data["modalities"]
        and manifest.modalities_present == data["modalities_present"]
    )
    assert manifest.unseen_categories == [tuple(p) for p in data["unseen_categories"]]
    assert manifest.pseudo_novel_categories == [tuple(p) for p in data["pseudo_novel_categories"]]
    assert manifest.pseudo_novel_categories  # the fixture asked for some
    assert manifest.leakage == data["leakage"] and manifest.fractions == data["fractions"]
    for split, info in data["splits"].items():
        typed = manifest.split(split)
        assert typed.count == info["count"] == manifest.count(split)
        assert list(typed.shards) == info["shards"]
        assert manifest.shard_urls(out, split) == [str(out / s) for s in info["shards"]]
        assert {n: (f.count, f.bytes, f.sha256) for n, f in typed.shard_files.items()} == {
            n: (f["count"], f["bytes"], f["sha256"]) for n, f in info["shard_files"].items()
        }
        assert typed.category_paths == [tuple(p) for p, _ in info["category_counts"]]
    assert sum(manifest.count(s) for s in ("train", "val", "test")) == manifest.sharded == 60


def test_summary_reads_the_typed_manifest(sharded) -> None:
    manifest, out = sharded
    text = summarize(manifest, str(out))
    assert f"Sharded 60 of 60 rows of catalogue 'sample' into {out}" in text
    assert "split drawn by seed 2" in text and "pseudo-novel leaf categories are held out" in text
