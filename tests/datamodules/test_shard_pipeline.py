"""Tests for the WebDataset streaming pipeline (single process; ranks simulated with explicit overrides)."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image
from torchvision import transforms

from clipita_core.tree import CategoryTree
from datamodules.shard_pipeline import (
    ShardDecodeError,
    build_shard_pipeline,
    check_enough_shards,
    collate_records,
    count_shard_samples,
    decode_record,
    resolve_rank,
    tar_samples,
    training_steps_per_epoch,
)

PATHS = [("Apparel", "Topwear", "Shirts"), ("Apparel", "Topwear", "Sweaters"), ("Home", "Candles")]
TREE = CategoryTree.from_paths(PATHS)
TRANSFORM = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (value % 256, 40, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_shards(folder: Path, sizes: list[int], split: str = "train") -> tuple[list[str], list[str]]:
    """Write ``len(sizes)`` shards of ARCHITECTURE.md records; return (urls, product ids)."""
    urls, ids = [], []
    for shard, size in enumerate(sizes):
        url = str(folder / f"{split}-{shard:06d}.tar")
        with wds.TarWriter(url) as sink:
            for i in range(size):
                product_id = f"s{shard}-{i:03d}"
                attributes = {"colour": "Blue"} if i % 3 else {"colour": "Red", "season": "Summer"}
                record = {
                    "id": product_id,
                    "title": f"Product {product_id}",
                    "attributes": attributes,
                    "category": list(PATHS[(shard + i) % len(PATHS)]),
                    "split": split,
                }
                sink.write({"__key__": product_id, "jpg": _jpeg(i), "json": json.dumps(record).encode()})
                ids.append(product_id)
        urls.append(url)
    return urls, ids


def _ids(loader) -> list[str]:
    return [pid for batch in loader for pid in batch["product_id"]]


def test_batch_has_the_architecture_keys_and_shapes(tmp_path: Path) -> None:
    urls, ids = write_shards(tmp_path, [7, 3])
    loader = build_shard_pipeline(urls, TRANSFORM, TREE, batch_size=4, training=False)
    batches = list(loader)
    assert [len(b["product_id"]) for b in batches] == [4, 4, 2]  # the last batch may be partial
    batch = batches[0]
    assert set(batch) == {
        "image", "title", "title_mask", "attributes", "product_id", "category_ids", "category_path",
    }  # fmt: skip
    assert batch["title_mask"].dtype == torch.bool
    assert batch["title_mask"].tolist() == [bool(t) for t in batch["title"]]
    assert batch["image"].shape == (4, 3, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["category_ids"].dtype == torch.long and batch["category_ids"].shape == (4, TREE.max_depth)
    assert all(isinstance(t, str) for t in batch["title"])
    assert all(isinstance(a, dict) for a in batch["attributes"])
    assert batch["attributes"][0] == {"colour": "Red", "season": "Summer"}
    for row, path in zip(batch["category_ids"].tolist(), batch["category_path"], strict=True):
        assert isinstance(path, tuple)
        assert row[: len(path)] == TREE.ancestor_ids(path)
        assert row[len(path) :] == [-1] * (TREE.max_depth - len(path))
    assert sorted(_ids(batches)) == sorted(ids)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resampled_training_gives_the_exact_number_of_batches(tmp_path: Path, num_workers: int) -> None:
    urls, _ = write_shards(tmp_path, [5, 17, 40])
    loader = build_shard_pipeline(
        urls, TRANSFORM, TREE, batch_size=4, training=True, epoch_samples=62, shuffle_buffer=8,
        num_workers=num_workers,
    )  # fmt: skip
    assert len(loader) == training_steps_per_epoch(62, 4) == 16
    for _ in range(2):  # two epochs
        sizes = [len(b["product_id"]) for b in loader]
        assert sizes == [4] * 16


@pytest.mark.parametrize("resampled", [True, False])
def test_two_ranks_over_uneven_shards_take_the_same_number_of_steps(tmp_path: Path, resampled: bool) -> None:
    urls, _ = write_shards(tmp_path, [5, 17, 40])
    steps = []
    for rank in (0, 1):
        loader = build_shard_pipeline(
            urls, TRANSFORM, TREE, batch_size=4, training=True, epoch_samples=62, resampled=resampled,
            rank=rank, world_size=2,
        )  # fmt: skip
        assert len(loader) == 8
        steps.append([sum(1 for _ in loader) for _epoch in range(2)])
    assert steps == [[8, 8], [8, 8]]


def test_non_resampled_training_gives_each_rank_its_own_shards(tmp_path: Path) -> None:
    urls, _ = write_shards(tmp_path, [6, 6, 6, 6])
    seen = []
    for rank in (0, 1):
        loader = build_shard_pipeline(
            urls, TRANSFORM, TREE, batch_size=3, training=True, epoch_samples=24, resampled=False,
            shuffle_buffer=1, rank=rank, world_size=2,
        )  # fmt: skip
        seen.append(set(_ids(loader)))
    assert not seen[0] & seen[1]
    assert len(seen[0]) == len(seen[1]) == 12


@pytest.mark.parametrize(("world_size", "num_workers"), [(2, 0), (3, 0), (2, 2), (4, 1)])
def test_evaluation_reads_every_sample_exactly_once_across_ranks(
    tmp_path: Path, world_size: int, num_workers: int
) -> None:
    urls, ids = write_shards(tmp_path, [5, 17, 40], split="val")
    seen: Counter[str] = Counter()
    batches_per_rank = []
    for rank in range(world_size):
        loader = build_shard_pipeline(
            urls, TRANSFORM, TREE, batch_size=4, training=False, num_workers=num_workers,
            rank=rank, world_size=world_size,
        )  # fmt: skip
        batches = list(loader)
        batches_per_rank.append(len(batches))
        seen.update(pid for b in batches for pid in b["product_id"])
    assert seen == Counter(ids)
    assert len(set(batches_per_rank)) > 1  # uneven shards -> uneven batch counts, by design


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shard_order_is_deterministic_per_seed_and_differs_between_epochs(
    tmp_path: Path, num_workers: int
) -> None:
    urls, _ = write_shards(tmp_path, [4] * 8)

    def make(seed: int):
        return build_shard_pipeline(
            urls,
            TRANSFORM,
            TREE,
            batch_size=4,
            training=True,
            epoch_samples=32,
            shuffle_buffer=1,
            seed=seed,
            num_workers=num_workers,
        )

    loader = make(0)
    epoch0, epoch1 = _ids(loader), _ids(loader)
    assert len(epoch0) == len(epoch1) == 32
    assert epoch0 != epoch1
    again = make(0)
    assert [_ids(again), _ids(again)] == [epoch0, epoch1]
    pinned = make(0)
    pinned.set_epoch(1)
    assert _ids(pinned) == epoch1
    assert _ids(make(1)) != epoch0


def test_lazy_iter_does_not_advance_the_epoch(tmp_path: Path) -> None:
    urls, _ = write_shards(tmp_path, [4] * 4)
    loader = build_shard_pipeline(urls, TRANSFORM, TREE, batch_size=2, training=True, epoch_samples=8)
    iter(loader)  # e.g. Lightning checking that the loader is iterable
    next(iter(loader))
    assert loader.epoch == 0


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_broken_sample_names_its_shard_and_key(tmp_path: Path, num_workers: int) -> None:
    urls, _ = write_shards(tmp_path, [3])
    bad = str(tmp_path / "val-000001.tar")
    with wds.TarWriter(bad) as sink:
        record = {
            "id": "broken-7",
            "title": "x",
            "attributes": {},
            "category": list(PATHS[0]),
            "split": "val",
        }
        sink.write({"__key__": "broken-7", "jpg": b"not a jpeg", "json": json.dumps(record).encode()})
    loader = build_shard_pipeline(
        [*urls, bad], TRANSFORM, TREE, batch_size=2, training=False, num_workers=num_workers
    )
    with pytest.raises(ShardDecodeError) as info:  # re-raised in the main process when read by a worker
        list(loader)
    assert "broken-7" in str(info.value) and bad in str(info.value)


def test_a_record_without_json_is_an_error() -> None:
    with pytest.raises(ShardDecodeError, match="no json"):
        decode_record({"__key__": "k1", "__url__": "x.tar", "jpg": _jpeg(1)}, TRANSFORM)


def test_collate_rejects_a_category_outside_the_tree() -> None:
    sample = {
        "image": torch.zeros(3, 8, 8),
        "title": "t",
        "attributes": {},
        "product_id": "p9",
        "category_path": ("Garden", "Tools"),
    }
    with pytest.raises(KeyError, match="p9"):
        collate_records([sample], TREE)


def test_non_resampled_training_needs_a_shard_per_reader(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"2 x 2 = 4 readers, but only 3 shard"):
        check_enough_shards(3, world_size=2, num_workers=2)
    check_enough_shards(4, world_size=2, num_workers=2)
    check_enough_shards(2, world_size=2, num_workers=0)
    urls, _ = write_shards(tmp_path, [2, 2, 2])
    with pytest.raises(ValueError, match="3 shard"):
        build_shard_pipeline(
            urls, TRANSFORM, TREE, batch_size=2, training=True, epoch_samples=6, resampled=False,
            num_workers=2, rank=0, world_size=2,
        )  # fmt: skip


def test_epoch_samples_default_to_the_shard_count(tmp_path: Path) -> None:
    urls, ids = write_shards(tmp_path, [5, 9])
    assert count_shard_samples(urls) == len(ids) == 14
    loader = build_shard_pipeline(urls, TRANSFORM, TREE, batch_size=4, training=True)
    assert len(loader) == 4


def test_resolve_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve_rank() == (0, 1)
    assert resolve_rank(1, 3) == (1, 3)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_rank() == (2, 4)
    with pytest.raises(ValueError):
        resolve_rank(rank=1)
    with pytest.raises(ValueError):
        resolve_rank(3, 2)


def test_damaged_shards_fail_naming_the_file(tmp_path: Path) -> None:
    urls, _ = write_shards(tmp_path, [2])
    data = Path(urls[0]).read_bytes()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(data[: 512 + 100])  # in the middle of the first member
    with pytest.raises(ShardDecodeError, match="truncated.tar"):
        list(tar_samples(iter([{"url": str(truncated)}])))
    ours = list(tar_samples(iter([{"url": u} for u in urls])))
    assert ours == list(wds.tarfile_samples(iter([{"url": u} for u in urls])))
