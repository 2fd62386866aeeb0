"""The memory-mapped index (``clipita.retrieval.search_index``): old formats refused in one line, the exact float32
and float16 scans against a full sort."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_retrieval import synthetic_index

from clipita.cli import main as clipita
from clipita.retrieval.search_index import SearchIndex
from clipita_core.index_info import INDEX_JSON, INDEX_VERSION, IndexFormatError


def test_an_index_of_an_older_format_is_refused_with_one_line(tmp_path, capsys):
    folder = tmp_path / "v1"
    folder.mkdir()
    np.save(folder / "embeddings.npy", np.zeros((3, 4), dtype=np.float32))  # format 1: one embeddings.npy
    pd.DataFrame({"id": ["a", "b", "c"], "title": "", "category": "A", "split": "test"}).to_parquet(
        folder / "products.parquet"
    )
    (folder / INDEX_JSON).write_text(json.dumps({"version": 1, "checkpoint": "none", "tree": [["A"]]}))
    with pytest.raises(
        IndexFormatError, match=r"older clipita index \(index format 1.*rebuild it with clipita index"
    ):
        SearchIndex.load(folder)
    with pytest.raises(SystemExit) as exit_info:
        clipita(["search", "--index", str(folder), "A"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "index format 1" in err and "Traceback" not in err
    assert synthetic_index(tmp_path / "v2", n=20).info.version == INDEX_VERSION  # the current one loads


def test_exact_topk_matches_a_full_sort(tmp_path):
    index = synthetic_index(tmp_path / "idx")
    queries = torch.nn.functional.normalize(
        torch.randn(4, 32, generator=torch.Generator().manual_seed(1)), dim=1
    )
    scores, rows = index.topk(queries, k=7, chunk_size=64)  # several chunks
    full = queries @ torch.from_numpy(np.asarray(index.embeddings)).T
    expected = full.argsort(dim=1, descending=True)[:, :7]
    assert torch.equal(rows, expected)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    half_scores, half_rows = index.topk(queries, k=7, chunk_size=64, scan="float16")
    assert torch.equal(half_rows, rows)
    torch.testing.assert_close(half_scores, scores)
    hits = index.hits(scores, rows)
    assert [h["rank"] for h in hits[0]] == list(range(1, 8)) and hits[0][0]["id"] == f"p{expected[0, 0]}"
