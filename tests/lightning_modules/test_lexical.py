"""The lexical signal: normalised BM25 equals a reference BM25 (bm25s, and a hand computation), is bounded by 1,
and its hashed token ids are the same in every process."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clipita_core.tokens import NUM_BUCKETS, lexical_tokens, words
from lightning_modules.lexical import LexicalSignal, document_statistics, pad_tokens

REPO = Path(__file__).resolve().parents[2]
CORPUS = [
    "Puma Men Grey T-shirt",
    "Nike Women Running Shoes",
    "Nike Men Running Shoes Black Shoes",
    "Titan Women Silver Watch",
    "Fastrack Men Black Watches Sports",
    "Quechua Men Sweat Proof Blue Tshirts Sports Sports Sports",
]
QUERIES = ["Tshirts", "Shoes", "Watches Sports", "Running Shoes", "Handbags"]


def fitted(corpus=CORPUS, **kwargs) -> tuple[LexicalSignal, list[np.ndarray]]:
    signal = LexicalSignal(**kwargs)
    rows = signal.tokenize(corpus)
    signal.set_statistics(document_statistics(rows, signal.num_buckets))
    return signal, rows


def test_scores_equal_bm25s_lucene_divided_by_the_query_maximum():
    bm25s = pytest.importorskip("bm25s")
    k1, b = 1.3, 0.7
    signal, rows = fitted(k1=k1, b=b)
    ours = signal.scores(signal.query_weights(QUERIES), pad_tokens(rows)).numpy()

    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    retriever.index([words(t) for t in CORPUS], show_progress=False)
    n, df = len(CORPUS), {}
    for doc in CORPUS:
        for w in set(words(doc)):
            df[w] = df.get(w, 0) + 1
    for i, query in enumerate(QUERIES):
        terms = words(query)
        assert len(set(terms)) == len(terms)
        known = [t for t in terms if t in df]
        raw = retriever.get_scores(known) if known else np.zeros(n)
        # bm25s's lucene tf part has no (k1 + 1) factor, so the maximum is sum(idf); unseen terms count there too.
        maximum = sum(math.log1p((n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in terms)
        np.testing.assert_allclose(ours[i], raw / maximum, rtol=1e-5, atol=1e-6, err_msg=query)
    assert ours[4].max() == 0  # "Handbags" occurs nowhere


def test_scores_equal_a_hand_computation_with_repeated_terms():
    signal, rows = fitted()
    query = "sports sports watch"
    got = signal.scores(signal.query_weights([query]), pad_tokens(rows))[0].numpy()
    docs = [words(t) for t in CORPUS]
    n, avgdl = len(docs), sum(map(len, docs)) / len(docs)
    idf = {
        t: math.log1p((n - sum(t in d for d in docs) + 0.5) / (sum(t in d for d in docs) + 0.5))
        for t in ("sport", "watch")
    }
    qtf = {"sport": 2, "watch": 1}
    maximum = sum(qtf[t] * idf[t] * (signal.k1 + 1) for t in qtf)
    for j, doc in enumerate(docs):
        norm = signal.k1 * (1 - signal.b + signal.b * len(doc) / avgdl)
        raw = sum(qtf[t] * idf[t] * doc.count(t) * (signal.k1 + 1) / (doc.count(t) + norm) for t in qtf)
        assert got[j] == pytest.approx(raw / maximum, rel=1e-5, abs=1e-7), CORPUS[j]
    assert got[4] > 0 and got[5] > 0 and got[3] > 0  # both terms, "sports" alone, "watch" alone
    assert got[0] == got[1] == got[2] == 0


def test_a_perfect_match_is_bounded_by_one_and_approaches_it():
    signal, rows = fitted()
    scores = signal.scores(signal.query_weights(CORPUS + QUERIES), pad_tokens(rows))
    assert (scores >= 0).all() and (scores < 1).all()
    # Without length normalisation (b = 0) the saturation tf (k1+1) / (tf + k1) tends to k1 + 1, the bound.
    flat, _ = fitted(b=0.0)
    near_one = flat.scores(flat.query_weights(["watches"]), pad_tokens(flat.tokenize(["watch " * 500])))
    assert 0.95 < near_one.item() < 1.0


def test_hashed_ids_are_stable_across_processes():
    code = (
        "from clipita_core.tokens import lexical_tokens;"
        "print([r.tolist() for r in lexical_tokens(['Puma Men Grey T-shirt', 'Sports Shoes'])])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    here = [r.tolist() for r in lexical_tokens(["Puma Men Grey T-shirt", "Sports Shoes"])]
    assert out.stdout.strip() == str(here)
    assert all(0 <= i < NUM_BUCKETS for row in here for i in row)


def test_statistics_travel_in_the_state_dict_and_bad_statistics_are_refused():
    signal, rows = fitted(num_buckets=1024)
    clone = LexicalSignal(num_buckets=1024)
    assert not clone.fitted
    with pytest.raises(RuntimeError, match="set_statistics"):
        clone.query_weights(["shoes"])
    clone.load_state_dict(signal.state_dict())
    query = clone.query_weights(QUERIES)
    assert torch.equal(clone.scores(query, pad_tokens(rows)), signal.scores(query, pad_tokens(rows)))
    with pytest.raises(ValueError, match="buckets"):
        LexicalSignal(num_buckets=2048).set_statistics(document_statistics(rows, 1024))


def test_chunked_scores_equal_one_pass_and_empty_rows_score_zero():
    signal, rows = fitted()
    tokens = pad_tokens([*rows, np.zeros(0, dtype=np.int64)])
    query = signal.query_weights(QUERIES)
    whole = signal.scores(query, tokens)
    assert torch.allclose(signal.scores(query, tokens, chunk=1), whole)
    assert whole[:, -1].abs().max() == 0
    assert pad_tokens([]).shape == (0, 1)
