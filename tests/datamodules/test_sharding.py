"""Catalogue -> shards (``datamodules.sharding``): round trip, nothing lost, the manifest written, reruns, bad
arguments, and a property test over random rows."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
from catalogue_files import csv_line
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis_profiles import ci_settings
from PIL import Image
from shop_catalogue import LEAVES, SPLITS, build_catalogue, jpeg, read_back, shard_shop

from clipita_core.manifest import Manifest
from clipita_core.tree import CategoryTree
from datamodules.catalogue import CatalogueSchema
from datamodules.sharding import (
    CatalogueError,
    NoProductsError,
    load_manifest,
    shard_catalogue,
    write_shards,
)
from datamodules.splits import SplitOptions


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, Path, dict[str, dict]]:
    return shard_shop(tmp_path_factory)


def test_round_trip_records_and_jpeg_bytes_are_identical(sharded) -> None:
    manifest, out, expected = sharded
    records = read_back(manifest, out)
    assert set(records) == set(expected)
    for pid, rec in records.items():
        meta = rec["json"]
        assert meta == {
            "id": pid,
            "title": expected[pid]["title"],
            "attributes": expected[pid]["attributes"],
            "category": expected[pid]["category"],
            "split": rec["split"],
        }
        assert rec["jpg"] == expected[pid]["jpg"]


def test_nothing_lost_sharded_plus_skipped_is_input(sharded, capsys) -> None:
    manifest, out, expected = sharded
    assert manifest.input_rows == len(expected) + 3
    assert manifest.sharded == len(expected)
    assert manifest.sharded + len(manifest.skipped) == manifest.input_rows
    assert sum(manifest.count(s) for s in SPLITS) == manifest.sharded
    for s in SPLITS:
        assert sum(manifest.split(s).per_category.values()) == manifest.count(s)
    skipped = {(e["row"], e["id"]): e for e in manifest.skipped}
    n = len(expected)
    n -= 2  # the last two good rows come after the bad ones
    assert set(skipped) == {(n + 1, "missing1"), (n + 2, "sku001"), (n + 3, "broken")}
    assert "missing image file" in skipped[(n + 1, "missing1")]["reason"]
    assert "duplicate id 'sku001' (first seen in row 1)" in skipped[(n + 2, "sku001")]["reason"]
    assert "corrupt or truncated image" in skipped[(n + 3, "broken")]["reason"]
    assert manifest.skipped_by_kind == {"corrupt_image": 1, "duplicate_id": 1, "missing_image": 1}
    assert manifest.modalities["title"] == {"present": len(expected) - 1, "missing": 1}


def test_manifest_contents(sharded) -> None:
    manifest, out, _ = sharded
    assert manifest.version == 1 and manifest.created_by == "clipita shard" and manifest.seed == 3
    assert manifest.schema["name"] == "shop"
    assert manifest.attribute_names == ["colour"]
    assert manifest.tree_levels == ["top", "leaf"]
    tree = CategoryTree.from_json(manifest.tree_paths)
    assert len(tree.nodes_at_depth(1)) == 3 and len(tree.nodes_at_depth(2)) == 5
    assert len(manifest.content_hash) == 64
    assert json.loads((out / "manifest.json").read_text()) == manifest.to_dict()
    for split in SPLITS:
        info = manifest.split(split)
        assert list(info.shards) == [f"{split}-{i:06d}.tar" for i in range(len(info.shards))]
        assert all(f.count <= 7 for f in info.shard_files.values())
        assert sum(f.count for f in info.shard_files.values()) == info.count
    assert load_manifest(str(out)) == manifest


def test_shards_are_not_sorted_by_category(sharded) -> None:
    manifest, out, _ = sharded
    records = read_back(manifest, out)
    train = [tuple(r["json"]["category"]) for r in records.values() if r["split"] == "train"]
    assert train != sorted(train)


def test_on_error_fail_names_the_record(tmp_path: Path) -> None:
    yaml_path, expected = build_catalogue(tmp_path)
    with pytest.raises(
        CatalogueError, match=rf"row {len(expected) - 1} \(id 'missing1'\): missing image file"
    ):
        shard_catalogue(str(yaml_path), str(tmp_path / "out"), on_error="fail", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_rerun_replaces_old_shards(tmp_path: Path) -> None:
    yaml_path, _ = build_catalogue(tmp_path, bad_rows=False)
    out = tmp_path / "out"
    shard_catalogue(str(yaml_path), str(out), shard_size=2, progress=False)
    (out / "unrelated.txt").write_text("keep me")
    manifest = shard_catalogue(str(yaml_path), str(out), shard_size=1000, progress=False)
    listed = {name for s in SPLITS for name in manifest.split(s).shards}
    assert {p.name for p in out.glob("*.tar")} == listed
    assert (out / "unrelated.txt").exists()


def test_summary_is_printed(tmp_path: Path, capsys) -> None:
    yaml_path, _ = build_catalogue(tmp_path)
    shard_catalogue(str(yaml_path), str(tmp_path / "out"), progress=False)
    printed = capsys.readouterr().out
    assert "Sharded 42 of 45 rows" in printed and "train" in printed and "1 missing image" in printed


def test_png_images_are_stored_as_jpeg(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for n, (top, leaf) in enumerate(LEAVES):
        (root / top / leaf).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (9, 9), (n * 40, 10, 10)).save(root / top / leaf / f"item_{n}.png")
    schema = CatalogueSchema(layout="folder_tree", image_root=str(root), name="tree")
    manifest = write_shards(
        schema, str(tmp_path / "out"), split_options=SplitOptions(unseen_fraction=0.0), progress=False
    )
    records = read_back(manifest, tmp_path / "out")
    assert len(records) == 5 and manifest.tree_levels == ["level_1", "level_2"]
    for rec in records.values():
        with Image.open(io.BytesIO(rec["jpg"])) as im:
            assert im.format == "JPEG"
        assert rec["json"]["title"] == ""  # file names never become titles


@pytest.mark.parametrize("bad", [-1, 0])
def test_bad_arguments(tmp_path: Path, bad: int) -> None:
    yaml_path, _ = build_catalogue(tmp_path, per_leaf=1, bad_rows=False)
    with pytest.raises(ValueError, match="shard_size"):
        shard_catalogue(str(yaml_path), str(tmp_path / "o"), shard_size=bad, progress=False)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        shard_catalogue(
            str(yaml_path), str(tmp_path / "o"), val_fraction=0.5, test_fraction=0.5, progress=False
        )


ID_POOL = ["a", "b", "c", "dup", "dup", "x.y", "x/y", "x\\y", "", "  ", " pad ", "ünï", "日本", "..", "-"]


text_no_surrogates = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


row_strategy = st.tuples(
    st.one_of(
        st.sampled_from(ID_POOL), text_no_surrogates, st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)
    ),  # id
    st.one_of(
        st.sampled_from(["", "   "]),
        st.sampled_from(["Shirt", "Blue ü jeans", "日本 bag"]),
        text_no_surrogates,
    ),
    st.lists(
        st.one_of(
            st.sampled_from(["A", "B"]), st.sampled_from(["", " "]), text_no_surrogates.filter(str.strip)
        ),
        min_size=2,
        max_size=2,
    ),  # category levels
    st.sampled_from(["ok", "ok", "ok", "ok", "missing", "corrupt", "truncated"]),  # image
)


@pytest.mark.fuzz
@ci_settings(30)
@given(rows=st.lists(row_strategy, min_size=0, max_size=14), seed=st.integers(0, 3))
def test_property_writer_never_crashes_and_accounts_for_every_row(rows, seed) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        lines = [csv_line(["id", "title", "top", "leaf"])]
        seen: set[str] = set()
        for n, (pid, title, levels, image) in enumerate(rows):
            lines.append(csv_line([pid, title, *levels]))
            if (
                pid.strip() in seen
            ):  # a later duplicate is skipped whatever its image: keep the first one's file
                continue
            seen.add(pid.strip())
            if image == "missing":
                continue
            data = jpeg(n, size=(16, 16))
            data = {"ok": data, "corrupt": b"garbage" * 5, "truncated": data[: len(data) // 2]}[image]
            try:
                (images / f"{pid.strip()}.jpg").write_bytes(data)
            except (OSError, ValueError):  # names the file system cannot hold: the row will be skipped
                pass
        (root / "p.csv").write_bytes("".join(lines).encode("utf-8"))
        schema = CatalogueSchema(
            table=str(root / "p.csv"),
            image_root=str(images),
            title_column="title",
            category_columns=["top", "leaf"],
        )
        try:
            manifest = write_shards(
                schema, str(root / "out"), shard_size=3, split_options=SplitOptions(seed=seed), progress=False
            )
        except NoProductsError as err:  # every row was bad: an error naming the reasons, no shards
            event("no product survived")
            assert "no product" in str(err) and not (root / "out").exists()
            return

        event(f"sharded some: {manifest.sharded > 0}; skipped some: {bool(manifest.skipped)}")
        assert manifest.input_rows == len(rows)
        assert manifest.sharded + len(manifest.skipped) == len(rows)
        skipped_rows = [e["row"] for e in manifest.skipped]
        assert len(set(skipped_rows)) == len(skipped_rows)
        assert all(e["reason"] for e in manifest.skipped)
        # what is in the tar files is exactly what the manifest says was sharded
        ids_in_tars = []
        for split in SPLITS:
            for url in manifest.shard_urls(root / "out", split):
                with tarfile.open(url) as tar:
                    ids_in_tars += [
                        m.name.rsplit(".", 1)[0] for m in tar.getmembers() if m.name.endswith(".json")
                    ]
        assert len(ids_in_tars) == len(set(ids_in_tars)) == manifest.sharded
        load_manifest(str(root / "out"))
        # rows that must never be sharded
        by_row = dict(enumerate(rows, start=1))
        sharded_rows = set(by_row) - set(skipped_rows)
        for row in sharded_rows:
            pid, title, levels, image = by_row[row]
            assert image == "ok" and all(level.strip() for level in levels)
            assert pid.strip()
