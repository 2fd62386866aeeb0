"""Catalogue -> shards: round trip, nothing lost, reproducible splits, unseen categories, manifest validation."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from pathlib import Path

import pytest
import webdataset as wds
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis_profiles import ci_settings
from PIL import Image

from clipita_core.tree import CategoryTree
from datamodules.catalogue import CatalogueSchema
from datamodules.records import id_from_key
from datamodules.sharding import (
    CatalogueError,
    ManifestError,
    NoProductsError,
    choose_unseen,
    load_manifest,
    shard_catalogue,
    write_shards,
)
from datamodules.splits import SplitOptions

SPLITS = ("train", "val", "test")
LEAVES = [
    ("Apparel", "Shirts"),
    ("Apparel", "Jeans"),
    ("Footwear", "Shoes"),
    ("Footwear", "Boots"),
    ("Bags", "Totes"),
]


def jpeg(seed: int, size: tuple[int, int] = (10, 8)) -> bytes:
    image = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256))
    image.putpixel((seed % size[0], 0), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def csv_line(cells: list[str]) -> str:
    return ",".join('"' + c.replace('"', '""') + '"' for c in cells) + "\n"


def build_catalogue(root: Path, per_leaf: int = 8, bad_rows: bool = True) -> tuple[Path, dict[str, dict]]:
    """A small CSV catalogue + schema YAML; returns (yaml path, id -> expected fields incl. image bytes)."""
    (root / "data" / "images").mkdir(parents=True)
    rows: list[list[str]] = []
    expected: dict[str, dict] = {}
    n = 0
    for top, leaf in LEAVES:
        for k in range(per_leaf):
            n += 1
            pid = f"sku{n:03d}"
            colour = ["Red", "Blue", ""][k % 3]
            rows.append([pid, f"{leaf} number {k} ünïcode", top, leaf, colour])
            data = jpeg(n)
            (root / "data" / "images" / f"{pid}.jpg").write_bytes(data)
            expected[pid] = {
                "title": f"{leaf} number {k} ünïcode",
                "category": [top, leaf],
                "attributes": {"colour": colour} if colour else {},
                "jpg": data,
            }
    if bad_rows:
        rows.append(["missing1", "No image", "Apparel", "Shirts", "Red"])
        rows.append(["sku001", "Duplicate", "Apparel", "Shirts", "Red"])
        rows.append(["broken", "Corrupt image", "Apparel", "Shirts", "Red"])
        (root / "data" / "images" / "broken.jpg").write_bytes(jpeg(3)[:40])
        # ids with a dot and no title are ordinary products now
        for pid, title, seed in (("B00.123", "Dotted id", 1), ("notitle", "", 2)):
            rows.append([pid, title, "Apparel", "Shirts", "Red"])
            (root / "data" / "images" / f"{pid}.jpg").write_bytes(jpeg(seed))
            expected[pid] = {
                "title": title,
                "category": ["Apparel", "Shirts"],
                "attributes": {"colour": "Red"},
                "jpg": jpeg(seed),
            }
    text = csv_line(["id", "title", "top", "leaf", "colour"]) + "".join(csv_line(r) for r in rows)
    (root / "data" / "products.csv").write_text(text, encoding="utf-8")
    yaml_path = root / "shop.yaml"
    yaml_path.write_text(
        "name: shop\ntable: data/products.csv\nimage_root: data/images\ntitle_column: title\n"
        "category_columns: [top, leaf]\nattribute_columns: [colour]\n",
        encoding="utf-8",
    )
    return yaml_path, expected


def read_back(manifest: dict, shard_dir: Path) -> dict[str, dict]:
    """Every record in the shards, read with webdataset: id -> {json, jpg, split}."""
    out: dict[str, dict] = {}
    for split in SPLITS:
        urls = manifest.shard_urls(shard_dir, split)
        if not urls:
            continue
        for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
            key = id_from_key(sample["__key__"])
            assert key not in out, f"{key} written twice"
            out[key] = {"json": json.loads(sample["json"]), "jpg": sample["jpg"], "split": split}
    return out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict[str, dict]]:
    root = tmp_path_factory.mktemp("shop")
    yaml_path, expected = build_catalogue(root)
    out = root / "shards"
    manifest = shard_catalogue(str(yaml_path), str(out), shard_size=7, seed=3, progress=False)
    return manifest, out, expected


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
    assert manifest["input_rows"] == len(expected) + 3
    assert manifest["sharded"] == len(expected)
    assert manifest["sharded"] + len(manifest["skipped"]) == manifest["input_rows"]
    assert sum(manifest["splits"][s]["count"] for s in SPLITS) == manifest["sharded"]
    for s in SPLITS:
        assert sum(manifest["splits"][s]["per_category"].values()) == manifest["splits"][s]["count"]
    skipped = {(e["row"], e["id"]): e for e in manifest["skipped"]}
    n = len(expected)
    n -= 2  # the last two good rows come after the bad ones
    assert set(skipped) == {(n + 1, "missing1"), (n + 2, "sku001"), (n + 3, "broken")}
    assert "missing image file" in skipped[(n + 1, "missing1")]["reason"]
    assert "duplicate id 'sku001' (first seen in row 1)" in skipped[(n + 2, "sku001")]["reason"]
    assert "corrupt or truncated image" in skipped[(n + 3, "broken")]["reason"]
    assert manifest["skipped_by_kind"] == {"corrupt_image": 1, "duplicate_id": 1, "missing_image": 1}
    assert manifest["modalities"]["title"] == {"present": len(expected) - 1, "missing": 1}


def test_manifest_contents(sharded) -> None:
    manifest, out, _ = sharded
    assert manifest["version"] == 1 and manifest["created_by"] == "clipita shard" and manifest["seed"] == 3
    assert manifest["schema"]["name"] == "shop"
    assert manifest["attribute_names"] == ["colour"]
    assert manifest["tree"]["levels"] == ["top", "leaf"]
    tree = CategoryTree.from_json(manifest["tree"]["paths"])
    assert len(tree.nodes_at_depth(1)) == 3 and len(tree.nodes_at_depth(2)) == 5
    assert len(manifest["content_hash"]) == 64
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for split in SPLITS:
        info = manifest["splits"][split]
        assert info["shards"] == [f"{split}-{i:06d}.tar" for i in range(len(info["shards"]))]
        assert all(f["count"] <= 7 for f in info["shard_files"].values())
        assert sum(f["count"] for f in info["shard_files"].values()) == info["count"]
    assert load_manifest(str(out)) == manifest


def test_unseen_leaves_only_in_test(sharded) -> None:
    manifest, out, _ = sharded
    unseen = {tuple(p) for p in manifest["unseen_categories"]}
    assert len(unseen) == 1  # ceil(0.2 * 5 leaves)
    records = read_back(manifest, out)
    unseen_splits = {r["split"] for r in records.values() if tuple(r["json"]["category"]) in unseen}
    assert unseen_splits == {"test"}
    for split in ("train", "val"):
        for name in manifest["splits"][split]["per_category"]:
            assert tuple(name.split(" > ")) not in unseen
    seen_train = {tuple(r["json"]["category"]) for r in records.values() if r["split"] == "train"}
    assert seen_train == set(LEAVES) - unseen  # every seen leaf keeps products in train


def test_shards_are_not_sorted_by_category(sharded) -> None:
    manifest, out, _ = sharded
    records = read_back(manifest, out)
    train = [tuple(r["json"]["category"]) for r in records.values() if r["split"] == "train"]
    assert train != sorted(train)


def split_of(manifest: dict, out: Path) -> dict[str, str]:
    return {pid: rec["split"] for pid, rec in read_back(manifest, out).items()}


def test_splits_reproducible_by_seed(tmp_path: Path) -> None:
    yaml_path, _ = build_catalogue(tmp_path, per_leaf=12)
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        manifest = shard_catalogue(
            str(yaml_path), str(tmp_path / name), shard_size=10, seed=seed, progress=False
        )
        runs[name] = (manifest, split_of(manifest, tmp_path / name))
    (ma, sa), (mb, sb), (mc, sc) = runs["a"], runs["b"], runs["c"]
    assert sa == sb and ma["content_hash"] == mb["content_hash"]
    assert ma["unseen_categories"] == mb["unseen_categories"]
    for split in SPLITS:  # byte-identical shards
        for name in ma["splits"][split]["shards"]:
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sc != sa and mc["content_hash"] != ma["content_hash"]


def test_split_fractions_roughly_respected(tmp_path: Path) -> None:
    yaml_path, expected = build_catalogue(tmp_path, per_leaf=60, bad_rows=False)
    manifest = shard_catalogue(
        str(yaml_path),
        str(tmp_path / "out"),
        unseen_fraction=0.0,
        val_fraction=0.2,
        test_fraction=0.1,
        progress=False,
    )
    assert manifest["unseen_categories"] == []
    counts = {s: manifest["splits"][s]["count"] for s in SPLITS}
    assert abs(counts["val"] / len(expected) - 0.2) < 0.07
    assert abs(counts["test"] / len(expected) - 0.1) < 0.07


def test_choose_unseen_bounds() -> None:
    import random

    leaves = [("L", str(i)) for i in range(10)]
    assert len(choose_unseen(leaves, 0.2, random.Random(0))) == 2
    assert len(choose_unseen(leaves, 0.01, random.Random(0))) == 1  # at least one
    assert len(choose_unseen(leaves, 0.99, random.Random(0))) == 9  # never all
    assert len(choose_unseen(leaves, 0.25, random.Random(0))) == 3  # rounded up
    assert choose_unseen(leaves[:1], 0.5, random.Random(0)) == []
    assert choose_unseen(leaves, 0.0, random.Random(0)) == []


def test_single_product_leaf_goes_to_train(tmp_path: Path) -> None:
    yaml_path, _ = build_catalogue(tmp_path, per_leaf=1, bad_rows=False)
    for seed in range(5):
        manifest = shard_catalogue(
            str(yaml_path),
            str(tmp_path / "out"),
            seed=seed,
            val_fraction=0.4,
            test_fraction=0.4,
            progress=False,
        )
        unseen = len(manifest["unseen_categories"])
        assert manifest["splits"]["train"]["count"] == 5 - unseen
        assert manifest["splits"]["test"]["count"] == unseen


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
    listed = {name for s in SPLITS for name in manifest["splits"][s]["shards"]}
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
    assert len(records) == 5 and manifest["tree"]["levels"] == ["level_1", "level_2"]
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


# ------------------------------------------------------------------------------------------------ manifest checks


@pytest.fixture
def shard_copy(tmp_path: Path) -> tuple[dict, Path]:
    yaml_path, _ = build_catalogue(tmp_path, bad_rows=False)
    out = tmp_path / "out"
    return shard_catalogue(str(yaml_path), str(out), shard_size=10, progress=False), out


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest.json in"):
        load_manifest(str(tmp_path))


def test_deleted_shard_is_named(shard_copy) -> None:
    manifest, out = shard_copy
    name = manifest["splits"]["train"]["shards"][1]
    (out / name).unlink()
    with pytest.raises(ManifestError, match=f"{name}.* is missing"):
        load_manifest(str(out))


def test_truncated_shard_is_named(shard_copy) -> None:
    manifest, out = shard_copy
    name = manifest["splits"]["train"]["shards"][0]
    data = (out / name).read_bytes()
    (out / name).write_bytes(data[:-1024])
    with pytest.raises(ManifestError, match=f"{name}.* has .* bytes"):
        load_manifest(str(out))


def test_altered_shard_same_size_is_named(shard_copy) -> None:
    manifest, out = shard_copy
    name = manifest["splits"]["test"]["shards"][0]
    data = bytearray((out / name).read_bytes())
    data[700] ^= 0xFF
    (out / name).write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=f"{name}.* sha256"):
        load_manifest(str(out))
    load_manifest(str(out), check_hashes=False)  # sizes alone still match


def test_corrupt_manifest_json_is_named(shard_copy) -> None:
    _, out = shard_copy
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(ManifestError, match="manifest.json.* is not valid JSON"):
        load_manifest(str(out))


def test_manifest_missing_keys_is_named(shard_copy) -> None:
    _, out = shard_copy
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["splits"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"manifest.json.* lacks required keys \['splits'\]"):
        load_manifest(str(out))


def test_shard_urls(shard_copy) -> None:
    manifest, out = shard_copy
    urls = manifest.shard_urls(out, "train")
    assert urls and all(Path(u).parent == out and Path(u).exists() for u in urls)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        manifest.shard_urls(out, "dev")


# ------------------------------------------------------------------------------------------------ property test

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

        event(f"sharded some: {manifest['sharded'] > 0}; skipped some: {bool(manifest['skipped'])}")
        assert manifest["input_rows"] == len(rows)
        assert manifest["sharded"] + len(manifest["skipped"]) == len(rows)
        skipped_rows = [e["row"] for e in manifest["skipped"]]
        assert len(set(skipped_rows)) == len(skipped_rows)
        assert all(e["reason"] for e in manifest["skipped"])
        # what is in the tar files is exactly what the manifest says was sharded
        ids_in_tars = []
        for split in SPLITS:
            for url in manifest.shard_urls(root / "out", split):
                with tarfile.open(url) as tar:
                    ids_in_tars += [
                        m.name.rsplit(".", 1)[0] for m in tar.getmembers() if m.name.endswith(".json")
                    ]
        assert len(ids_in_tars) == len(set(ids_in_tars)) == manifest["sharded"]
        load_manifest(str(root / "out"))
        # rows that must never be sharded
        by_row = dict(enumerate(rows, start=1))
        sharded_rows = set(by_row) - set(skipped_rows)
        for row in sharded_rows:
            pid, title, levels, image = by_row[row]
            assert image == "ok" and all(level.strip() for level in levels)
            assert pid.strip()


def test_image_checks_in_worker_processes_change_nothing(tmp_path: Path, monkeypatch) -> None:
    """Checked by 2 worker processes, a window of 4 records at a time (window boundaries inside the bad rows), the
    catalogue reads as the same records with the same problems, and shards into byte-identical output."""
    from datamodules.catalogue import read_catalogue
    from datamodules.catalogue import reader as reader_module

    yaml_path, _ = build_catalogue(tmp_path)
    schema = CatalogueSchema.from_yaml(str(yaml_path))
    monkeypatch.setattr(reader_module, "CHECK_WINDOW", 4)
    alone = list(read_catalogue(schema))
    workers = list(read_catalogue(schema, num_workers=2))
    assert workers == alone and any(r.problems for r in alone)
    one = shard_catalogue(str(yaml_path), str(tmp_path / "one"), shard_size=5, progress=False)
    two = shard_catalogue(str(yaml_path), str(tmp_path / "two"), shard_size=5, progress=False, num_workers=2)
    assert one == two


def test_a_corrupt_images_reason_is_the_same_in_every_run(tmp_path: Path) -> None:
    """PIL names an unidentifiable in-memory file by its address; the reason (and so the manifest) must not."""
    from datamodules.catalogue import check_image

    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8garbage")
    first, second = check_image(str(path))[2], check_image(str(path))[2]
    assert first.kind == "corrupt_image" and first.message == second.message
    assert "0x" not in first.message and "broken.jpg" in first.message
