"""The index folder's contract: ``index.json`` round-trips through :class:`IndexInfo`, an older format is refused
with one line, and a folder without ``index.json`` is told apart (unfinished vs no index)."""

from __future__ import annotations

import json

import pytest

from clipita_core.index_info import (
    INDEX_JSON,
    INDEX_VERSION,
    PRODUCT_IDS_NAME,
    PRODUCTS_NAME,
    SHARDS_DIR,
    IndexFormatError,
    IndexInfo,
    IndexShard,
    read,
    write,
)


def an_info() -> IndexInfo:
    return IndexInfo(
        checkpoint="/runs/a.ckpt",
        shards=[IndexShard("test", "test-000000.tar", 3), IndexShard("test", "test-000001.tar", 0)],
        arrays={"embedding": "float32", "embedding16": "float16"},
        num_products=3,
        embed_dim=8,
        tree=[("A",), ("A", "B")],
        unseen_categories=[("A", "B")],
        modalities=["image", "title"],
        splits=["test"],
        shard_dir="/work/shards",
        faiss={"kind": "hnsw", "file": "faiss.index", "ef_search": 128},
        provenance={"created_by": "clipita index", "data": {"batch_size": 4}, "seconds": 1.5},
    )


def test_index_json_round_trips(tmp_path):
    info = an_info()
    write(tmp_path, info)
    assert read(tmp_path) == info
    raw = json.loads((tmp_path / INDEX_JSON).read_text())
    # the on-disk keys clipita index has always written
    assert raw["version"] == INDEX_VERSION and raw["layout"] == "shards-v1" and raw["seconds"] == 1.5
    assert raw["files"] == {
        "products": PRODUCTS_NAME,
        "product_ids": PRODUCT_IDS_NAME,
        "shards": SHARDS_DIR,
        "arrays": {"embedding": "float32", "embedding16": "float16"},
    }
    assert raw["shards"][0] == {"split": "test", "name": "test-000000.tar", "count": 3}
    assert raw["tree"] == [["A"], ["A", "B"]] and raw["unseen_categories"] == [["A", "B"]]
    assert info.faiss_kind == "hnsw" and IndexInfo().faiss_kind is None


def test_a_minimal_index_json_reads_with_defaults():
    info = IndexInfo.from_json({"version": INDEX_VERSION, "checkpoint": "c", "shards": [], "extra": 1})
    assert info.arrays == {} and info.tree == [] and info.faiss is None and info.provenance == {"extra": 1}
    assert info.faiss_file == "faiss.index"


@pytest.mark.parametrize(
    "raw", [{"version": 1, "checkpoint": "c", "tree": [["A"]]}, {"checkpoint": "c"}, [1, 2]]
)
def test_an_older_format_is_refused_with_one_line(raw):
    with pytest.raises(IndexFormatError) as error:
        IndexInfo.from_json(raw, origin="/idx")
    message = str(error.value)
    assert "\n" not in message and message.startswith("/idx: written by an older clipita index (index format")
    assert message.endswith("rebuild it with clipita index")


def test_a_folder_without_index_json_is_unfinished_or_not_an_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a clipita index"):
        read(tmp_path)
    (tmp_path / SHARDS_DIR).mkdir()
    with pytest.raises(FileNotFoundError, match="unfinished clipita index"):
        read(tmp_path)
