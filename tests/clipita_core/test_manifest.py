"""The typed manifest: the dict round trip keeps every key and its order, old v1 manifests read with their
documented defaults, and a newer version is refused with one line."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from clipita_core.manifest import MANIFEST_VERSION, Manifest, ManifestError


def _split(name: str, n_shards: int, count: int) -> dict:
    shards = [f"{name}-{i:06d}.tar" for i in range(n_shards)]
    return {
        "count": count,
        "shards": shards,
        "shard_files": {s: {"count": count // max(n_shards, 1), "bytes": 100 + i, "sha256": f"{i:064x}"}
                        for i, s in enumerate(shards)},
        "per_category": {"A > x": count},
        "category_counts": [[["A", "x"], count]],
    }  # fmt: skip


def minimal(**extra) -> dict:
    """A v1 manifest as the first writers wrote it (no modalities, category_counts, pseudo-novel, leakage)."""
    data = {
        "version": 1,
        "content_hash": "ab" * 32,
        "seed": 4,
        "input_rows": 7,
        "sharded": 6,
        "skipped": [{"row": 3, "id": "p3", "reason": "missing image", "kinds": ["missing_image"]}],
        "tree": {"levels": ["top", "leaf"], "paths": [["A"], ["A", "x"], ["A", "y > z"]]},
        "unseen_categories": [["A", "y > z"]],
        "splits": {"train": _split("train", 2, 4), "val": _split("val", 1, 1), "test": _split("test", 0, 0)},
        "attribute_names": ["colour"],
    }
    for split in data["splits"].values():
        del split["category_counts"]
    data.update(extra)
    return data


def test_round_trip_keeps_keys_and_order() -> None:
    data = minimal(zeta=1, alpha={"b": 1, "a": 2})  # unknown keys, in an odd order, survive too
    manifest = Manifest.from_dict(data)
    back = manifest.to_dict()
    assert back == data and list(back) == list(data) and list(back["alpha"]) == ["b", "a"]
    assert manifest.to_json() == json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    back["splits"]["train"]["count"] = 99  # to_dict is a copy: the manifest stays as read
    assert manifest.count("train") == 4
    data["splits"]["train"]["count"] = 98  # and from_dict took a copy
    assert manifest.count("train") == 4


def test_write_then_read(tmp_path: Path) -> None:
    manifest = Manifest.from_dict(minimal(title="ünïcode"))
    manifest.write(tmp_path / "manifest.json")
    assert "ünïcode" in (tmp_path / "manifest.json").read_text(encoding="utf-8")  # ensure_ascii=False
    assert Manifest.read(tmp_path / "manifest.json") == manifest


def test_typed_accessors_and_old_defaults(tmp_path: Path) -> None:
    m = Manifest.from_dict(minimal())
    assert (m.version, m.seed, m.input_rows, m.sharded) == (1, 4, 7, 6)
    assert m.tree_levels == ["top", "leaf"] and m.tree_paths[2] == ["A", "y > z"]
    assert m.unseen_categories == [("A", "y > z")] and m.pseudo_novel_categories == []
    assert [m.count(s) for s in ("train", "val", "test")] == [4, 1, 0]
    assert m.shard_urls(tmp_path, "train") == [
        str(tmp_path / "train-000000.tar"),
        str(tmp_path / "train-000001.tar"),
    ]
    assert m.shard_urls(tmp_path, "test") == []
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        m.split("dev")
    train = m.split("train")
    assert train.shard_files["train-000001.tar"].bytes == 101
    assert train.category_counts is None and train.category_paths == [("A", "x")]  # parsed from per_category
    # keys added after v1 was first written read as their documented defaults
    assert m.modalities_present == ["image", "title", "attributes"]
    assert m.modalities == {} and m.leakage == {} and m.reader == {}
    assert (m.split_source, m.moved_to_test, m.fractions, m.catalogue_name) == ("drawn", 0, {}, None)
    assert (
        m.created_by is None
        and Manifest.from_dict(minimal(created_by="clipita shard")).created_by == "clipita shard"
    )
    new = Manifest.from_dict(
        minimal(modalities_present=["image"], attribute_names=[], pseudo_novel_categories=[["A", "x"]],
                split_source="folders", moved_to_test=3, schema={"name": "shop"}, leakage={"flagged": True})
    )  # fmt: skip
    assert new.modalities_present == ["image"] and new.attribute_names == []
    assert new.pseudo_novel_categories == [("A", "x")]
    assert (new.split_source, new.moved_to_test, new.catalogue_name) == ("folders", 3, "shop")
    assert new.leakage == {"flagged": True}


def test_category_paths_prefer_category_counts() -> None:
    data = minimal()
    data["splits"]["train"]["category_counts"] = [[["A", "y > z"], 4]]  # a level name holding the separator
    assert Manifest.from_dict(data).split("train").category_paths == [("A", "y > z")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"version": MANIFEST_VERSION + 1},
            rf"has version {MANIFEST_VERSION + 1}, newer than this clipita reads",
        ),
        ({"version": 0}, r"has version 0; expected an integer from 1"),
        ({"version": "1"}, r"has version '1'; expected an integer from 1"),
        ({"splits": {"train": {}, "val": {}}}, r"'splits' must have entries \['train', 'val', 'test'\]"),
    ],
)
def test_refused_with_one_line(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(minimal(**change)))
    with pytest.raises(ManifestError, match=message) as error:
        Manifest.read(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_missing_keys_and_split_entries_are_named() -> None:
    data = minimal()
    del data["sharded"], data["tree"]
    with pytest.raises(ManifestError, match=r"lacks required keys \['sharded', 'tree'\]"):
        Manifest.from_dict(data)
    data = minimal()
    del data["splits"]["val"]["shard_files"]
    with pytest.raises(ManifestError, match=r"split 'val' lacks 'shard_files'"):
        Manifest.from_dict(data)
    with pytest.raises(ManifestError, match="must hold a JSON object"):
        Manifest.from_dict([1, 2])  # type: ignore[arg-type]


def test_missing_file_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"no manifest.json in .*: run `clipita shard` first"):
        Manifest.read(tmp_path / "manifest.json")


def test_one_way_to_read_it_the_typed_accessors() -> None:
    """The manifest is read through its accessors only: it is no Mapping, and not equal to its own JSON dict."""
    data = minimal()
    m = Manifest.from_dict(data)
    assert not isinstance(m, Mapping)
    with pytest.raises(TypeError):
        m["sharded"]  # type: ignore[index]
    assert not hasattr(m, "get") and not hasattr(m, "keys")
    assert m != data and m.to_dict() == data and m == Manifest.from_dict(data)
