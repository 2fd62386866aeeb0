"""The record spool ``clipita shard`` keeps its good records in: exact round trip, the split drawn on its handles is
the split drawn on full records, and no spool file outlives a run (or a killed one)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from shop_catalogue import build_catalogue

from datamodules.catalogue import RawRecord
from datamodules.record_spool import SPOOL_PREFIX, RecordSpool
from datamodules.sharding import CatalogueError, shard_catalogue
from datamodules.splits import assign_splits, draw_splits, own_splits


def records(n: int = 60) -> list[RawRecord]:
    leaves = [("A", "x"), ("A", "y"), ("B", "z", "deep"), ("C", "ünï")]
    out = []
    for i in range(n):
        out.append(
            RawRecord(
                row=i + 1,
                id=f"id-{i}/é",
                title=["", f'title {i} \u2603 "quoted"\n'][i % 2],
                attributes={"colour": "red", "b-first": str(i)} if i % 3 else {},
                category=leaves[i % len(leaves)],
                image_path=f"/images/{i}.jpg",
                image_format=["JPEG", "PNG", None][i % 3],
                image_sha256=None if i % 5 == 0 else f"{i:064x}",
                description="" if i % 4 else "long text",
                split=["train", "val", "test"][i % 3],
            )
        )
    return out


def test_records_read_back_exactly_in_any_order(tmp_path: Path) -> None:
    originals = records()
    with RecordSpool(tmp_path) as spool:
        lines = [spool.append(r) for r in originals]
        assert lines == list(range(len(originals))) and len(spool) == len(originals)
        for line in reversed(lines):  # random access after sequential writes
            back = spool.read(line)
            assert back == originals[line]
            assert list(back.attributes) == list(originals[line].attributes)  # key order kept
            assert spool.category(line) == back.category and spool.split(line) == back.split
        assert list(spool) == originals
        same_leaf = [line for line in lines if spool.category(line) == ("A", "x")]
        assert all(spool.category(line) is spool.category(same_leaf[0]) for line in same_leaf)
    assert not spool.path.exists()


@pytest.mark.parametrize("pseudo_novel", [frozenset(), frozenset({("A", "y")})])
def test_the_split_on_handles_is_the_split_on_records(tmp_path: Path, pseudo_novel) -> None:
    originals = records(200)
    with RecordSpool(tmp_path) as spool:
        lines = [spool.append(r) for r in originals]
        args = ({("C", "ünï")}, 0.2, 0.2)
        full = assign_splits(originals, *args, random.Random(5), pseudo_novel, random.Random(9))
        light = assign_splits(
            lines, *args, random.Random(5), pseudo_novel, random.Random(9), category_of=spool.category
        )
        for split in full:
            assert [r.id for r in full[split]] == [spool.read(line).id for line in light[split]]
        full_own, unseen_full = own_splits(originals, random.Random(3))
        light_own, unseen_light = own_splits(lines, random.Random(3), spool.category, spool.split)
        assert unseen_full == unseen_light
        for split in full_own:
            assert [r.id for r in full_own[split]] == [spool.read(line).id for line in light_own[split]]
        for split_folders in (False, True):
            drawn = draw_splits(originals, split_folders, 4, 0.1, 0.2, 0.25, 0.3)
            drawn_lines = draw_splits(
                range(len(spool)), split_folders, 4, 0.1, 0.2, 0.25, 0.3, spool.category, spool.split
            )
            assert drawn[1:] == drawn_lines[1:]  # unseen, pseudo-novel, tree
            for split in drawn[0]:
                assert [r.id for r in drawn[0][split]] == [
                    spool.read(line).id for line in drawn_lines[0][split]
                ]


def test_sharding_leaves_no_spool_and_clears_a_killed_runs_spool(tmp_path: Path, monkeypatch) -> None:
    yaml_path, expected = build_catalogue(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = Path("out")  # relative, as a config's work_dir usually is: the live spool must not count as stale
    out.mkdir()
    stale = out / f"{SPOOL_PREFIX}killed.jsonl"
    stale.write_text("[1]\n")
    manifest = shard_catalogue(str(yaml_path), str(out), shard_size=5, progress=False)
    assert manifest.sharded == len(expected)
    assert not list(out.glob(f"{SPOOL_PREFIX}*"))
    with pytest.raises(CatalogueError):
        shard_catalogue(str(yaml_path), str(tmp_path / "failed"), on_error="fail", progress=False)
    assert not (tmp_path / "failed").exists()  # a failed run that made the folder removes it again
