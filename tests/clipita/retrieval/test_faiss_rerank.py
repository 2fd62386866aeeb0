"""FAISS as a candidate generator with lexical candidates: when the full score has a BM25 term, each query's best
``depth`` products by that term join FAISS's dense candidates before the re-ranking (``clipita.retrieval.faiss_index``).

The index is built so that the dense candidates alone provably miss the exact top 10 at depth 10: each query has a
rare token held by a few products outside its dense top 10, and its BM25 weight (forced to 1.0) lifts
them into its exact top 10. Fast: synthetic vectors and tokens, an exact IVF (every list probed)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from clipita.retrieval.faiss_index import LexicalTerm, build_faiss_index, lexical_candidates, union_candidates
from clipita.retrieval.index_shards import IndexShards, merge_products
from clipita.retrieval.search_index import SearchIndex
from clipita_core.index_info import INDEX_JSON, INDEX_VERSION, IndexShard
from datamodules.features import LEXICAL_TOKENS
from lightning_modules.lexical import LexicalSignal, document_statistics
from lightning_modules.scoring import Scorer

pytest.importorskip("faiss")

N, D, Q, K = 400, 16, 8, 10
COMMON = 20  # buckets 0..19: common words; bucket COMMON + q: query q's rare word
BUCKETS = COMMON + Q
HOLDERS = 6  # products holding each rare word (<= the depth: all of them are lexical candidates)


def build(folder: Path, seed: int = 0) -> tuple[SearchIndex, torch.Tensor]:
    """An index of ``N`` random unit vectors in 3 shards with token rows (``-1`` padded), an exact IVF FAISS index,
    and ``Q`` query vectors; query ``q``'s rare word is held by ``HOLDERS`` of its 20th to 60th most similar products
    (outside its dense top 10, but close enough that a BM25 weight of 1.0 lifts them into its top 10)."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((N, D)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queries = torch.nn.functional.normalize(
        torch.from_numpy(rng.standard_normal((Q, D)).astype(np.float32)), dim=1
    )
    tokens = np.full((N, 6), -1, dtype=np.int32)
    tokens[:, :4] = rng.integers(0, COMMON, size=(N, 4))
    taken: set[int] = set()
    for q in range(Q):
        near = [int(r) for r in np.argsort(-(emb @ queries[q].numpy()))[2 * K : 6 * K] if int(r) not in taken]
        for r in rng.choice(near, HOLDERS, replace=False):
            tokens[r, 4] = COMMON + q
            taken.add(int(r))
    bounds = [0, 150, 290, N]
    layout = IndexShards(folder, [IndexShard("test", f"s{s}.tar", bounds[s + 1] - bounds[s]) for s in range(3)], ["embedding", LEXICAL_TOKENS])  # fmt: skip
    layout.prepare({"seed": seed})
    for s, shard in enumerate(layout.shards):
        rows = slice(bounds[s], bounds[s + 1])
        ids = [f"p{i}" for i in range(bounds[s], bounds[s + 1])]
        frame = pd.DataFrame(
            {"id": ids, "title": ids, "category": "A", "category_path": '["A"]', "split": "test"}
        )
        layout.write_shard(shard.name, ids, {"embedding": emb[rows], LEXICAL_TOKENS: tokens[rows]}, frame)
    merge_products(layout, folder / "products.parquet")
    faiss_index, params = build_faiss_index(emb, kind="ivf")
    params["nprobe"] = params["nlist"]  # every list probed: FAISS returns the exact dense top depth
    import faiss

    faiss.write_index(faiss_index, str(folder / params["file"]))
    info = {
        "version": INDEX_VERSION, "checkpoint": "none", "tree": [["A"]], "faiss": params,
        "files": {"products": "products.parquet", "arrays": {"embedding": "", LEXICAL_TOKENS: ""}},
        "shards": [{"split": x.split, "name": x.name, "count": x.count} for x in layout.shards],
    }  # fmt: skip
    (folder / INDEX_JSON).write_text(json.dumps(info))
    return SearchIndex.load(folder), queries


def model_scorer(index: SearchIndex) -> Scorer:
    """``ClipIta.score`` (its :class:`Scorer`) over a BM25 signal with the index's corpus statistics."""
    signal = LexicalSignal(num_buckets=BUCKETS)
    rows = np.asarray(index.array(LEXICAL_TOKENS))
    signal.set_statistics(document_statistics([r[r >= 0] for r in rows], BUCKETS))
    return Scorer(SimpleNamespace(lexical=signal))  # the scorer reads only the network's lexical signal here


def lexical_side(scorer: Scorer, weight: list[float], common: bool = True) -> tuple:
    """Each query's lexical side in ``ClipIta.lexical_query``'s form (``qtf * idf / sum(qtf * idf * (k1 + 1))``):
    its rare word, and with ``common`` one common word (held by many products)."""
    vocab = torch.arange(BUCKETS)
    counts = torch.zeros(Q, BUCKETS)
    for q in range(Q):
        counts[q, COMMON + q] = 1.0
        counts[q, q % COMMON] = float(common)
    idf = counts * scorer.net.lexical.idf(vocab)[None, :]
    return vocab, idf / (idf.sum(dim=1, keepdim=True) * (scorer.net.lexical.k1 + 1)), torch.tensor(weight)


def test_lexical_term_is_the_bm25_part_of_the_model_score(tmp_path):
    index, queries = build(tmp_path / "idx")
    scorer = model_scorer(index)
    query = lexical_side(scorer, [1.0] * (Q // 2) + [0.5] * (Q // 2))
    vectors = torch.from_numpy(np.asarray(index.embeddings))
    tokens = torch.from_numpy(np.asarray(index.array(LEXICAL_TOKENS))).long()
    full = scorer.score(queries, vectors, query, tokens)
    torch.testing.assert_close(LexicalTerm(scorer.net.lexical, query)(tokens), full - queries @ vectors.T)


def test_lexical_candidates_are_the_best_by_the_bm25_term(tmp_path):
    index, _ = build(tmp_path / "idx")
    scorer = model_scorer(index)
    weight = [1.0] * (Q - 1) + [0.0]  # the last query has no BM25 term: no lexical candidates
    term = LexicalTerm(scorer.net.lexical, lexical_side(scorer, weight))
    tokens = index.array(LEXICAL_TOKENS)
    expected = term(torch.from_numpy(np.asarray(tokens)).long())
    for depth in (5, 30, N):
        got = lexical_candidates(term, tokens, depth, chunk_size=64)  # several chunks, across shards
        for q in range(Q):
            rows = [r for r in got[q].tolist() if r >= 0]
            if weight[q] == 0:
                assert rows == []
                continue
            positive = int((expected[q] > 0).sum())
            assert positive > depth or depth == N  # the bound is what limits them, except at full depth
            order = sorted(range(N), key=lambda r: (-float(expected[q, r]), r))[: min(depth, positive)]
            assert rows == order  # best term first, ties by lower row, only terms > 0


def test_union_lists_each_row_once():
    merged = union_candidates(np.array([[3, 1, -1], [2, 2, 5]]), np.array([[1, 4], [-1, 7]]))
    assert [sorted(r for r in row if r >= 0) for row in merged.tolist()] == [[1, 3, 4], [2, 5, 7]]


def test_faiss_with_lexical_candidates_equals_exact_at_a_small_depth(tmp_path):
    index, queries = build(tmp_path / "idx")
    scorer = model_scorer(index)
    query = lexical_side(scorer, [1.0] * Q, common=False)  # a forced BM25 weight; the rare words only
    lexical = LexicalTerm(scorer.net.lexical, query)

    def score(q, vectors, tokens):
        return scorer.score(q, vectors, query, tokens)

    exact = index.topk(queries, K, score=score, chunk_size=100)
    rare = {
        q: set(np.flatnonzero((np.asarray(index.array(LEXICAL_TOKENS)) == COMMON + q).any(1)))
        for q in range(Q)
    }
    assert all(rare[q] & set(exact[1][q].tolist()) for q in range(Q)), "BM25 must lift rare-word holders"
    dense_only = index.topk(queries, K, use_faiss=True, score=score, depth=K)
    assert not torch.equal(dense_only[1], exact[1]), "the dense candidates alone must miss the exact top 10"
    with_lexical = index.topk(
        queries, K, use_faiss=True, score=score, depth=K, lexical=lexical, chunk_size=100
    )
    assert torch.equal(with_lexical[1], exact[1])
    torch.testing.assert_close(with_lexical[0], exact[0])


def test_zero_lexical_weights_leave_faiss_as_it_was(tmp_path):
    index, queries = build(tmp_path / "idx")
    scorer = model_scorer(index)
    query = lexical_side(scorer, [0.0] * Q)
    lexical = LexicalTerm(scorer.net.lexical, query)
    assert len(lexical.vocab) == 0

    def score(q, vectors, tokens):
        return scorer.score(q, vectors, query, tokens)

    plain = index.topk(queries, K, use_faiss=True, score=score, depth=K)
    assert lexical_candidates(lexical, index.array(LEXICAL_TOKENS), K).shape == (Q, 0)
    for a, b in zip(
        plain, index.topk(queries, K, use_faiss=True, score=score, depth=K, lexical=lexical), strict=True
    ):
        assert torch.equal(a, b)
