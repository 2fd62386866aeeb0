"""The shard-tar reader/writer (``datamodules.shard_io``): what is written is read back the same by every reader."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from datamodules.records import ShardRecord, id_from_key
from datamodules.shard_io import (
    ShardDecodeError,
    ShardTarWriter,
    count_shard_keys,
    iter_shard_records,
    iter_shard_samples,
    read_members,
    read_span,
    shard_members,
)

RECORDS = [
    ShardRecord(id="15970", category=("Apparel", "Topwear"), title="Shirt", split="train"),
    ShardRecord(id="B00.123", category=("Footwear",), attributes={"colour": "red"}, split="train"),
    ShardRecord(id="SKU/77", category=("Apparel", "Bottomwear"), description="wide legs", split="test"),
]


def write(path: Path) -> list[bytes]:
    images = [bytes([0xFF, 0xD8]) + bytes([n]) * (300 + n) for n in range(len(RECORDS))]
    with ShardTarWriter(path) as sink:
        for record, image in zip(RECORDS, images, strict=True):
            sample = sink.write(record, image)
            assert sample["jpg"] == image and id_from_key(sample["__key__"]) == record.id
    return images


def test_written_records_read_back_by_every_reader(tmp_path: Path) -> None:
    shard = tmp_path / "train-000000.tar"
    images = write(shard)
    pairs = list(iter_shard_records(shard))
    assert [record for record, _ in pairs] == RECORDS
    assert [sample["jpg"] for _, sample in pairs] == images
    assert [s["__url__"] for s in iter_shard_samples([shard, shard])] == [str(shard)] * 6
    assert count_shard_keys(shard) == 3
    members = {name: (offset, size, read()) for name, offset, size, read in shard_members(shard)}
    jpg = members[f"{RECORDS[1].key}.jpg"]
    assert jpg[2] == images[1] == read_span(shard, jpg[0], jpg[1])
    found = read_members(shard, [f"{RECORDS[2].key}.jpg", "absent.jpg"])
    assert found == {f"{RECORDS[2].key}.jpg": images[2]}
    with tarfile.open(shard) as archive:  # a plain tar: what the writer promises, with a fixed mtime
        assert {m.mtime for m in archive} == {0} and len(archive.getnames()) == 6


def test_the_same_records_give_the_same_bytes(tmp_path: Path) -> None:
    write(tmp_path / "a.tar")
    write(tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_a_corrupt_shard_fails_naming_the_file(tmp_path: Path) -> None:
    shard = tmp_path / "good.tar"
    write(shard)
    broken = tmp_path / "broken.tar"
    broken.write_bytes(shard.read_bytes()[:700])
    with pytest.raises(ShardDecodeError, match="broken.tar"):
        list(iter_shard_records(broken))
