"""Product metadata read from a shard's tar headers (``clipita.retrieval.shard_metadata``)."""

from __future__ import annotations

import json
import os

import webdataset as wds

from clipita.retrieval.shard_metadata import read_shard_metadata


def test_shard_metadata_records_jpeg_byte_ranges(tmp_path):
    shard = tmp_path / "test-000000.tar"
    images = {f"p{i}": bytes([0xFF, 0xD8]) + os.urandom(100 + 37 * i) for i in range(3)}
    with wds.TarWriter(str(shard), encoder=False) as sink:
        for key, jpg in images.items():
            meta = {
                "id": key,
                "title": f"title {key}",
                "category": ["A", "B"],
                "split": "test",
                "attributes": {},
            }
            sink.write({"__key__": key, "jpg": jpg, "json": json.dumps(meta).encode()})
    rows = read_shard_metadata(shard)
    assert [r["id"] for r in rows] == list(images)
    with open(shard, "rb") as handle:
        for row in rows:
            handle.seek(row["jpg_offset"])
            assert handle.read(row["jpg_size"]) == images[row["id"]]
            assert row["category"] == "A > B" and row["shard"] == shard.name
            assert json.loads(row["category_path"]) == ["A", "B"]
