"""Shard the real Fashion Product Images catalogue (11,882 products) end to end: nothing lost, tree 6/40/120."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import webdataset as wds

from clipita_core.tree import CategoryTree
from datamodules.sharding import load_manifest, shard_catalogue

REPO = Path(__file__).resolve().parents[2]
FASHION = REPO.parent / "shared/datasets/fashion-product-images"
SCHEMA = REPO / "experiments" / "catalogues" / "fashion.yaml"
FASHION_ROWS = 11_882

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (FASHION / "styles.csv").is_file(),
        reason=f"the fashion catalogue is not present at {FASHION} (styles.csv + images/)",
    ),
]


def test_shard_the_fashion_catalogue(tmp_path: Path) -> None:
    out = tmp_path / "shards"
    started = time.perf_counter()
    manifest = shard_catalogue(str(SCHEMA), str(out), seed=0, progress=False)
    elapsed = time.perf_counter() - started

    assert manifest.input_rows == FASHION_ROWS
    assert manifest.sharded + len(manifest.skipped) == FASHION_ROWS
    assert sum(manifest.count(s) for s in ("train", "val", "test")) == manifest.sharded

    tree = CategoryTree.from_json(manifest.tree_paths)
    assert [len(tree.nodes_at_depth(d)) for d in (1, 2, 3)] == [6, 40, 120]
    assert manifest.tree_levels == ["masterCategory", "subCategory", "articleType"]
    assert manifest.attribute_names == ["gender", "baseColour", "season", "year", "usage"]

    unseen = set(manifest.unseen_categories)
    assert len(unseen) == 24  # ceil(0.2 * 120 leaves)
    for split in ("train", "val"):
        for sample in wds.WebDataset(manifest.shard_urls(out, split), shardshuffle=False):
            meta = json.loads(sample["json"])
            assert tuple(meta["category"]) not in unseen, f"unseen leaf {meta['category']} in {split}"
            assert meta["split"] == split
    assert load_manifest(str(out)) == manifest
    assert elapsed < 300, f"sharding the fashion catalogue took {elapsed:.0f} s"
