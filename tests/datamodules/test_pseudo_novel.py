"""Pseudo-novel validation: leaves held out of training for validation never reach train, and the test split (and
its unseen leaves) is the same as without them; fraction 0 gives exactly the split it always gave."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from shop_catalogue import build_catalogue, read_back

from clipita_core.manifest import Manifest
from clipita_core.tree import CategoryTree
from datamodules.catalogue import RawRecord
from datamodules.sharding import shard_catalogue
from datamodules.splits import (
    assign_splits,
    choose_pseudo_novel,
    choose_unseen,
    draw_splits,
    pseudo_novel_rng,
)


def _split(records: list[RawRecord], seed: int, fraction: float):
    """The drawn split exactly as ``write_shards`` makes it."""
    rng = random.Random(seed)
    tree = CategoryTree.from_paths(r.category for r in records)
    present = {r.category for r in records}
    leaves = [tree.paths[i] for i in tree.leaves if tree.paths[i] in present]
    unseen = choose_unseen(leaves, 0.2, rng)
    order = pseudo_novel_rng(seed)
    held = choose_pseudo_novel(leaves, unseen, fraction, order)
    splits = assign_splits(records, set(unseen), 0.1, 0.1, rng, set(held), pseudo_novel_order=order)
    return unseen, held, splits


def _digest(unseen, splits) -> str:
    payload = [[list(p) for p in unseen], [r.id for r in splits["test"]], [r.id for r in splits["val"]]]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


# computed with the split code before pseudo-novel validation existed (and checked against the fashion shards
# written by it: unseen leaves, every split's ids and order)
FASHION_DIGESTS = {0: "2acd43235ba92e3a", 1: "c9aaf448a7d398ed", 2: "574e73ef76ef7fc5"}


def test_fashion_split_unchanged_at_fraction_0_and_test_unchanged_above(fashion_dir: Path) -> None:
    with open(fashion_dir / "styles.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 11882:
        pytest.skip(f"the golden digests are for the 11,882-row fashion table, found {len(rows)} rows")
    levels = ("masterCategory", "subCategory", "articleType")
    records = [
        RawRecord(row=i + 1, id=r["id"].strip(), category=tuple(r[c].strip() for c in levels))
        for i, r in enumerate(rows)
    ]
    for seed, digest in FASHION_DIGESTS.items():
        unseen0, held0, plain = _split(records, seed, 0.0)
        assert held0 == [] and _digest(unseen0, plain) == digest, f"seed {seed}: the split changed"
        unseen, held, splits = _split(records, seed, 0.15)
        assert unseen == unseen0
        assert [r.id for r in splits["test"]] == [r.id for r in plain["test"]]
        assert len(held) == round(0.15 * (len({r.category for r in records}) - len(unseen)))
        assert not set(held) & {r.category for r in splits["train"]}
        assert set(held) <= {r.category for r in splits["val"]}
        assert sorted(r.id for s in splits.values() for r in s) == sorted(r.id for r in records)


def test_choose_pseudo_novel_never_takes_unseen_or_every_leaf() -> None:
    leaves = [("A", str(i)) for i in range(4)]
    assert choose_pseudo_novel(leaves, [], 0.0, random.Random(0)) == []
    picked = choose_pseudo_novel(leaves, leaves[:1], 0.99, random.Random(0))
    assert len(picked) == 2 and leaves[0] not in picked  # 3 seen leaves, one kept for training
    assert len(choose_pseudo_novel(leaves, [], 0.01, random.Random(0))) == 1


def test_shards_hold_pseudo_novel_leaves_out_of_train(tmp_path: Path) -> None:
    yaml_path, _ = build_catalogue(tmp_path, per_leaf=12, bad_rows=False)
    plain = shard_catalogue(str(yaml_path), str(tmp_path / "plain"), shard_size=50, seed=1, progress=False)
    out = tmp_path / "pn"
    manifest = shard_catalogue(
        str(yaml_path), str(out), shard_size=50, seed=1, progress=False, pseudo_novel_fraction=0.4
    )
    held = manifest.pseudo_novel_categories
    assert len(held) == 2 and manifest.fractions["pseudo_novel"] == 0.4
    assert manifest.unseen_categories == plain.unseen_categories
    assert not set(held) & set(manifest.unseen_categories)
    records = read_back(manifest, out)
    by_split: dict[str, set] = {s: set() for s in ("train", "val", "test")}
    for record in records.values():
        by_split[record["split"]].add(tuple(record["json"]["category"]))
    assert not set(held) & by_split["train"]
    assert set(held) <= by_split["val"]
    assert manifest.split("test").category_counts == plain.split("test").category_counts
    plain_test = sorted(k for k, r in read_back(plain, tmp_path / "plain").items() if r["split"] == "test")
    assert sorted(k for k, r in records.items() if r["split"] == "test") == plain_test
    assert Manifest.read(out / "manifest.json").pseudo_novel_categories == held
    with pytest.raises(ValueError, match="pseudo_novel_fraction"):
        shard_catalogue(str(yaml_path), str(tmp_path / "bad"), pseudo_novel_fraction=1.0, progress=False)


def _records_with_test_only_leaves() -> list[SimpleNamespace]:
    """Eight leaves of 12 products, each with its own split folder (8 train, 2 val, 2 test), but ``Nut > Almond``
    has no train product (its 8 are missing) and ``Nut > Pecan`` none in train or test: both are test-only leaves
    with the catalogue's own split."""
    leaves = [("Fruit", x) for x in ("Apple", "Pear", "Plum")] + [
        ("Veg", x) for x in ("Leek", "Kale", "Bean")
    ]
    leaves += [("Nut", "Almond"), ("Nut", "Pecan")]
    records = []
    for path in leaves:
        for j in range(12):
            split = "train" if j < 8 else ("val" if j % 2 else "test")
            if (path[1] == "Almond" and split == "train") or (path[1] == "Pecan" and split != "val"):
                continue
            records.append(SimpleNamespace(id=f"{path[1]}{j}", category=path, split=split))
    return records


@pytest.mark.parametrize(
    ("split_folders", "fraction"),
    [(False, 0.0), (False, 0.34), (True, 0.0), (True, 0.34)],
    ids=["drawn", "drawn-pseudo-novel", "folders", "folders-pseudo-novel"],
)
def test_test_only_leaves_have_no_validation_product_in_any_split_mode(split_folders, fraction) -> None:
    """Validation choices (scorer weights, tree terms, any mixing coefficient) read the val split: a leaf with no
    training product (an unseen, test-only leaf) must have none of its products there, whatever the split mode."""
    records = _records_with_test_only_leaves()
    splits, unseen, held, _ = draw_splits(records, split_folders, 0, 0.2, 0.2, 0.25, fraction)
    unseen = set(unseen)
    assert unseen and (not split_folders or unseen == {("Nut", "Almond"), ("Nut", "Pecan")})
    categories = {s: {r.category for r in splits[s]} for s in splits}
    assert not unseen & categories["train"]
    assert not unseen & categories["val"], (
        f"val holds products of test-only leaves {unseen & categories['val']}"
    )
    assert unseen <= categories["test"]
    assert not set(held) & unseen and bool(held) == (fraction > 0)
    assert sorted(r.id for s in splits.values() for r in s) == sorted(r.id for r in records)  # none lost
    if split_folders:  # every other product stays in its own folder
        moved = [r for r in splits["test"] if r.split != "test"]
        assert {r.category for r in moved} == unseen and all(r.split == "val" for r in moved)
        assert all(r.split == "val" for r in splits["val"] if r.category not in set(held))
