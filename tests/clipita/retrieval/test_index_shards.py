"""The index's per-shard arrays: writing, the done marker, stale shards discarded, and reading them as one array."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from clipita.retrieval.index_job import plan
from clipita.retrieval.index_shards import IndexShards, ShardedRows, merge_products
from clipita.retrieval.search_index import SearchIndex
from clipita.retrieval.shard_metadata import PRODUCT_COLUMNS
from clipita_core.index_info import IndexShard


def products(ids: list[str]) -> pd.DataFrame:
    rows = [
        {"id": i, "title": f"t {i}", "category": "A > B", "category_path": json.dumps(["A", "B"]), "split": "test",
         "shard": "s.tar", "key": i, "jpg_offset": 0, "jpg_size": 1}
        for i in ids
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=PRODUCT_COLUMNS)


def write_index(folder, counts: list[int], d: int = 8, seed: int = 0) -> tuple[IndexShards, np.ndarray]:
    rng = np.random.default_rng(seed)
    shards = IndexShards(folder, [IndexShard("test", f"test-{n:06d}.tar", c) for n, c in enumerate(counts)])
    shards.prepare({"checkpoint_sha256": "x"})
    blocks = []
    for n, shard in enumerate(shards.shards):
        emb = rng.standard_normal((shard.count, d)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        ids = [f"p{n}-{r}" for r in range(shard.count)]
        shards.write_shard(
            shard.name, ids, {"embedding": emb, "embedding16": emb.astype(np.float16)}, products(ids)
        )
        blocks.append(emb)
    return shards, np.concatenate(blocks)


def test_sharded_rows_read_like_one_array(tmp_path):
    shards, full = write_index(tmp_path, [5, 0, 3, 7])
    rows = shards.rows("embedding")
    assert len(rows) == 15 and rows.shape == (15, 8) and rows.dtype == np.float32
    for sl in (slice(0, 15), slice(2, 9), slice(5, 8), slice(14, 40), slice(9, 9)):
        np.testing.assert_array_equal(rows[sl], full[sl])
    picked = np.array([14, 0, 6, 5, 5])
    np.testing.assert_array_equal(rows[picked], full[picked])
    np.testing.assert_array_equal(np.asarray(rows), full)
    with pytest.raises(IndexError):
        rows[np.array([15])]
    with pytest.raises(ValueError, match="no products"):
        ShardedRows([np.zeros((0, 3))])


def test_done_marker_plan_and_stale_shards(tmp_path):
    shards, _ = write_index(tmp_path, [2, 2, 2])
    assert shards.missing() == []
    (shards.path("test-000001.tar", "ids")).unlink()  # a shard killed before its ids were written
    assert shards.missing() == ["test-000001.tar"]
    assert [s.name for s in plan(shards, 1, 2)] == ["test-000001.tar"] and plan(shards, 0, 2) == []
    assert not shards.prepare({"checkpoint_sha256": "x"})  # same meta: shards kept
    assert shards.done("test-000000.tar")
    assert shards.prepare({"checkpoint_sha256": "y"})  # another checkpoint: everything discarded
    assert shards.missing() == [s.name for s in shards.shards]


def test_merge_products_concatenates_in_order_and_rejects_repeats(tmp_path):
    shards, _ = write_index(tmp_path, [3, 0, 2])
    ids = merge_products(shards, tmp_path / "products.parquet")
    assert ids == ["p0-0", "p0-1", "p0-2", "p2-0", "p2-1"]
    assert pd.read_parquet(tmp_path / "products.parquet")["id"].tolist() == ids
    again = IndexShards(tmp_path / "b", [IndexShard("test", "a.tar", 1), IndexShard("test", "b.tar", 1)])
    again.prepare({})
    for name in ("a.tar", "b.tar"):
        again.write_shard(name, ["same"], {"embedding": np.zeros((1, 2)), "embedding16": np.zeros((1, 2))},
                          products(["same"]))  # fmt: skip
    with pytest.raises(ValueError, match="repeat"):
        merge_products(again, tmp_path / "b.parquet")


def test_search_index_scans_the_shards_like_one_array(tmp_path):
    shards, full = write_index(tmp_path, [40, 0, 33, 50], d=16)
    ids = merge_products(shards, tmp_path / "products.parquet")
    info = {
        "version": 2, "checkpoint": "none", "tree": [["A"], ["A", "B"]], "faiss": None,
        "files": {"products": "products.parquet", "arrays": {"embedding": "float32", "embedding16": "float16"}},
        "shards": [{"split": s.split, "name": s.name, "count": s.count} for s in shards.shards],
    }  # fmt: skip
    (tmp_path / "index.json").write_text(json.dumps(info))
    index = SearchIndex.load(tmp_path)
    assert len(index) == 123
    queries = torch.nn.functional.normalize(
        torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), dim=1
    )
    expected = (queries @ torch.from_numpy(full).T).argsort(dim=1, descending=True)[:, :9]
    scores, rows = index.topk(queries, k=9, chunk_size=16)  # chunks straddle shard boundaries
    assert torch.equal(rows, expected)
    half_scores, half_rows = index.topk(queries, k=9, chunk_size=16, scan="float16")
    assert torch.equal(half_rows, rows)
    torch.testing.assert_close(half_scores, scores)
    assert index._half_rows is not None  # the float16 scan reads the shards' float16 arrays (no copy)
    hits = index.hits(scores, rows)
    assert [h["id"] for h in hits[0]] == [ids[r] for r in rows[0].tolist()]
    assert hits[0][0]["category_path"] == ["A", "B"] and index.category_path(int(rows[1, 0])) == ("A", "B")
    assert index._products is None  # the hits read their shards' tables, not the whole products.parquet
    assert index.products["id"].tolist() == ids
    assert index.hits(scores, rows) == hits  # the same rows from the whole table
    np.testing.assert_array_equal(index.array("embedding16")[5:7], full[5:7].astype(np.float16))
    with pytest.raises(KeyError, match="tokens"):
        index.array("tokens")
    (tmp_path / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match="unfinished"):
        SearchIndex.load(tmp_path)


def test_padded_arrays_of_different_widths_read_as_the_widest():
    a = np.array([[1, 2, -1], [3, -1, -1]], dtype=np.int32)
    b = np.array([[4, 5, 6, 7]], dtype=np.int32)
    rows = ShardedRows([a, b], pad=-1)
    assert rows.shape == (3, 4)
    np.testing.assert_array_equal(rows[0:3], [[1, 2, -1, -1], [3, -1, -1, -1], [4, 5, 6, 7]])
    np.testing.assert_array_equal(rows[np.array([2, 0])], [[4, 5, 6, 7], [1, 2, -1, -1]])
    with pytest.raises(ValueError, match="row shape"):
        ShardedRows([a, b])  # float embeddings of different widths are an error, not padding


def test_fast_tar_reader_agrees_with_tarfile(tmp_path, monkeypatch):
    import os

    import webdataset as wds

    import datamodules.shard_io as shard_io
    from clipita.retrieval.shard_metadata import read_shard_metadata

    shard = tmp_path / "test-000000.tar"
    keys = [
        "p0",
        "d" * 120,
        "sub/dir/p2",
        "prodüct-3",
    ]  # plain, a pax long name, a directory, a non-ASCII name
    with wds.TarWriter(str(shard), encoder=False) as sink:
        for n, key in enumerate(keys):
            meta = {
                "id": f"id{n}",
                "title": f"t{n}",
                "category": ["A", "B"],
                "split": "test",
                "attributes": {},
            }
            sink.write({"__key__": key, "jpg": bytes([0xFF, 0xD8]) + os.urandom(700 + n),
                        "json": json.dumps(meta).encode()})  # fmt: skip
    fast = read_shard_metadata(shard)

    def refuse(handle):
        raise shard_io._NotSimpleTar
        yield

    monkeypatch.setattr(shard_io, "_fast_tar_members", refuse)
    assert fast == read_shard_metadata(shard)  # the tarfile path
    assert [r["key"] for r in fast] == keys and [r["id"] for r in fast] == ["id0", "id1", "id2", "id3"]
    assert all(r["jpg_size"] > 700 for r in fast)
