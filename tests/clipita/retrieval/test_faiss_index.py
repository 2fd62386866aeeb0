"""FAISS beside the exact scan (``clipita.retrieval.faiss_index``): HNSW and IVF agree with it on a small set, its
candidates are re-ranked with the full score, and ``clipita search --faiss`` agrees on the tiny index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_retrieval import build_tiny_index, has_faiss, synthetic_index, tiny_base_dir

from clipita.cli import main as clipita
from clipita.retrieval.faiss_index import build_faiss_index, faiss_depth
from datamodules.features import LEXICAL_TOKENS


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory) -> Path:
    return build_tiny_index(tiny_base_dir(tmp_path_factory))


@pytest.mark.skipif(not has_faiss(), reason="faiss-cpu is not installed (pip install 'clipita[faiss]')")
@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_agrees_with_exact_on_a_small_set(tmp_path, kind):
    index = synthetic_index(tmp_path / "idx")
    faiss_index, params = build_faiss_index(np.asarray(index.embeddings), kind=kind, nprobe=None)
    if kind == "ivf":
        faiss_index.nprobe = params["nlist"]  # scan every list: exact
    queries = torch.nn.functional.normalize(
        torch.randn(8, 32, generator=torch.Generator().manual_seed(2)), dim=1
    )
    exact_scores, exact_rows = index.topk(queries, k=10)
    scores, rows = faiss_index.search(queries.numpy(), 10)
    assert np.array_equal(rows, exact_rows.numpy())
    np.testing.assert_allclose(scores, exact_scores.numpy(), atol=1e-5)


def ranks_alike(
    scores: torch.Tensor, rows: torch.Tensor, other_scores, other_rows, atol: float = 1e-5
) -> bool:
    """Two top-k lists agree: the same scores position by position (to ``atol``), and the same rows wherever a
    score is apart from its neighbours by more than ``atol`` (rows tied to float precision may swap)."""
    if scores.shape != other_scores.shape or not torch.allclose(scores, other_scores, atol=atol):
        return False
    for s, r, o in zip(scores.tolist(), rows.tolist(), other_rows.tolist(), strict=True):
        for i in range(len(s)):
            tied = (i > 0 and s[i - 1] - s[i] <= atol) or (i + 1 < len(s) and s[i] - s[i + 1] <= atol)
            if r[i] != o[i] and not tied:
                return False
    return True


@pytest.mark.skipif(not has_faiss(), reason="faiss-cpu is not installed (pip install 'clipita[faiss]')")
def test_faiss_candidates_are_reranked_with_the_full_score(tmp_path):
    from lightning_modules.lexical import LexicalSignal, document_statistics

    index = synthetic_index(tmp_path / "idx", n=600, vocabulary=40)
    tokens = torch.as_tensor(np.asarray(index.array(LEXICAL_TOKENS)))
    signal = LexicalSignal(num_buckets=40)
    signal.set_statistics(document_statistics([row[row >= 0].numpy() for row in tokens], 40))
    lexical = (torch.arange(40), torch.rand(6, 40, generator=torch.Generator().manual_seed(3)) / 20)

    def score(queries, vectors, rows):  # dense + a BM25 term of weight 1 (as ClipIta.score)
        return queries @ vectors.T + signal.scores(lexical, rows.long())

    queries = torch.nn.functional.normalize(
        torch.randn(6, 32, generator=torch.Generator().manual_seed(4)), dim=1
    )
    exact = index.topk(queries, k=10, score=score, chunk_size=128)
    full = (
        queries @ torch.from_numpy(np.asarray(index.embeddings)).T + signal.scores(lexical, tokens)
    ).argsort(dim=1, descending=True)
    assert torch.equal(exact[1], full[:, :10])  # the exact scan ranks by the full score
    dense_only = index.topk(queries, k=10)  # what FAISS alone returned before: the dense top 10
    assert not torch.equal(dense_only[1], exact[1]), (
        "the BM25 term must change some ranking for this to test it"
    )
    # FAISS at full depth: every product a candidate, re-ranked by the full score = the exact scan
    assert ranks_alike(*index.topk(queries, k=10, use_faiss=True, score=score, depth=len(index)), *exact)
    # at the default depth (max(10 k, 200)) FAISS's dense candidates still hold this small index's exact top 10
    assert faiss_depth(10) == 200
    assert ranks_alike(*index.topk(queries, k=10, use_faiss=True, score=score, chunk_size=50), *exact)
    # a depth of k re-ranks FAISS's dense top 10 only: the full score's top 10 is not recovered
    shallow = index.topk(queries, k=10, use_faiss=True, score=score, depth=10)
    assert set(shallow[1].flatten().tolist()) == set(dense_only[1].flatten().tolist())
    assert not ranks_alike(*shallow, *exact)


@pytest.mark.slow
@pytest.mark.skipif(not has_faiss(), reason="faiss-cpu is not installed (pip install 'clipita[faiss]')")
def test_faiss_search_agrees_with_exact_on_the_tiny_index(tiny_index, capsys):
    queries = ["Footwear", "Apparel > Topwear", "Handbags", "Home decor", "red summer dress"]
    base = ["search", "--index", str(tiny_index), *queries, "-k", "10", "--json"]
    clipita(base)
    exact = json.loads(capsys.readouterr().out)["queries"]
    clipita([*base, "--faiss"])
    approx = json.loads(capsys.readouterr().out)
    assert approx["backend"] == "faiss-hnsw"
    for e, a in zip(exact, approx["queries"], strict=True):
        assert [h["id"] for h in a["results"]] == [h["id"] for h in e["results"]]
        np.testing.assert_allclose(
            [h["score"] for h in a["results"]], [h["score"] for h in e["results"]], atol=1e-5
        )
