"""The lexical signal: BM25 of a category name against a product's title + attribute values, normalised to [0, 1].

Why a lexical signal at all: on categories never seen in training, a dense text tower only knows what its
pre-training taught it, while the *words* of a new category name ("Tshirts", "Clutches") often appear verbatim in
the titles of the products that belong to it. BM25 (Robertson & Zaragoza, "The Probabilistic Relevance Framework:
BM25 and Beyond", Foundations and Trends in IR 3(4), 2009) scores exactly that match. The scorer mixes it with the
dense score, ``score(q, p) = dense(q, p) + w_lex(q) * bm25n(q, p)``.

The formula (the Lucene variant of the idf, which is never negative)::

    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    bm25(q, p)  = sum_{t in q} qtf(t) * idf(t) * tf(t, p) * (k1 + 1) / (tf(t, p) + k1 * (1 - b + b * |p| / avgdl))
    bm25n(q, p) = bm25(q, p) / sum_{t in q} qtf(t) * idf(t) * (k1 + 1)

``N`` (documents), ``df`` (documents holding ``t``) and ``avgdl`` (mean document length in tokens) are the *corpus
statistics*; ``tf(t, p)`` is how often ``t`` occurs in product ``p``, ``qtf(t)`` how often in the query. Each term's
saturation ``tf (k1+1) / (tf + K)`` is below ``k1 + 1``, so the denominator of ``bm25n`` is the query's maximum
attainable score and ``0 <= bm25n < 1``: one weight ``w_lex`` means the same on every catalogue and every query
length, and the score of a product depends on that product alone (no gallery-wide max), so streaming evaluation and
index shards compute it independently.

Why the statistics come from the *training* split and are frozen into the model (persistent buffers, so they travel
in the checkpoint): a product must score the same whether it sits in the test gallery, a search index or a
one-product request. Gallery-dependent statistics would make the score of a product change with its neighbours, and
would let the test gallery leak into the scorer. Terms never seen in training get ``df = 0``, the highest idf — a
new category's distinctive word counts fully.

The tokenizer (NFKC, lowercase, hyphenated compounds also joined, stopwords dropped, a light plural stemmer;
words hashed into ``num_buckets`` buckets by a stable hash) is :mod:`clipita_core.tokens`, shared with the
token store and the leakage guard.

Example:
    >>> signal = LexicalSignal()
    >>> rows = signal.tokenize(["Puma Men Grey T-shirt", "Nike Women Running Shoes"])
    >>> signal.set_statistics(document_statistics(rows, signal.num_buckets))
    >>> scores = signal.scores(signal.query_weights(["Tshirts", "Shoes"]), pad_tokens(rows))
    >>> bool(scores[0, 0] > 0), bool(scores[0, 1] == 0), bool(scores[1, 1] > 0)
    (True, True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clipita_core.tokens import NUM_BUCKETS, TOKENIZER_ID, lexical_tokens


def pad_tokens(rows: Sequence[np.ndarray]) -> torch.Tensor:
    """``[B, L]`` LongTensor of token rows, right-padded with ``-1`` (``L >= 1`` even when every row is empty)."""
    width = max([1, *(len(r) for r in rows)])
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            out[i, : len(row)] = torch.as_tensor(np.asarray(row), dtype=torch.long)
    return out


def document_statistics(rows: Sequence[np.ndarray], num_buckets: int = NUM_BUCKETS) -> dict:
    """The corpus statistics of token rows, in the form :meth:`LexicalSignal.set_statistics` takes (a reference
    implementation; the DataModule streams the same counts over its training split)."""
    doc_freq = np.zeros(num_buckets, dtype=np.float64)
    total = 0
    for row in rows:
        row = np.asarray(row, dtype=np.int64)
        total += len(row)
        if len(row):
            doc_freq[np.unique(row)] += 1
    n = len(rows)
    return {"doc_freq": doc_freq.astype(np.float32), "num_docs": n, "avg_len": total / n if n else 0.0}


class LexicalSignal(torch.nn.Module):
    """BM25 normalised per query (see the module docstring), with training-split statistics as persistent buffers.

    Args:
        k1: term-frequency saturation (``1.2`` is the common default).
        b: length normalisation (``0`` none, ``1`` full).
        num_buckets: hash buckets of the token ids; must match the stored token ids' ``num_buckets``.
    """

    doc_freq: torch.Tensor
    num_docs: torch.Tensor
    avg_len: torch.Tensor

    def __init__(self, k1: float = 1.2, b: float = 0.75, num_buckets: int = NUM_BUCKETS) -> None:
        super().__init__()
        if k1 <= 0 or not 0 <= b <= 1:
            raise ValueError(f"LexicalSignal needs k1 > 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b, self.num_buckets = float(k1), float(b), int(num_buckets)
        self.register_buffer("doc_freq", torch.zeros(self.num_buckets, dtype=torch.float32))
        self.register_buffer("num_docs", torch.zeros((), dtype=torch.float32))
        self.register_buffer("avg_len", torch.zeros((), dtype=torch.float32))

    @property
    def tokenizer_id(self) -> str:
        """Names the tokenizer and bucket count; a token store written under another id must not be reused."""
        return f"{TOKENIZER_ID}:{self.num_buckets}"

    def tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Hashed token ids of each text, identical in every process."""
        return lexical_tokens(texts, self.num_buckets)

    def set_statistics(self, stats: dict) -> None:
        """Install corpus statistics ``{"doc_freq": [num_buckets], "num_docs": int, "avg_len": float}``."""
        missing = {"doc_freq", "num_docs", "avg_len"} - set(stats)
        if missing:
            raise ValueError(f"lexical statistics lack {sorted(missing)}")
        doc_freq = torch.as_tensor(np.asarray(stats["doc_freq"]), dtype=torch.float32).reshape(-1)
        if doc_freq.numel() != self.num_buckets:
            raise ValueError(
                f"lexical statistics have {doc_freq.numel()} buckets, the signal {self.num_buckets}; "
                "the token store was written with another num_buckets"
            )
        num_docs, avg_len = float(stats["num_docs"]), float(stats["avg_len"])
        if num_docs < 1 or avg_len <= 0:
            raise ValueError(
                f"lexical statistics need num_docs >= 1 and avg_len > 0, got {num_docs}, {avg_len}"
            )
        self.doc_freq.copy_(doc_freq.to(self.doc_freq.device))
        self.num_docs.fill_(num_docs)
        self.avg_len.fill_(avg_len)

    @property
    def fitted(self) -> bool:
        return bool(self.num_docs > 0)

    def idf(self, ids: torch.Tensor) -> torch.Tensor:
        df = self.doc_freq[ids.to(self.doc_freq.device)]
        return torch.log1p((self.num_docs - df + 0.5) / (df + 0.5))

    def query_weights(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The query vocabulary ``[V]`` (bucket ids) and weights ``[Q, V]``: ``qtf * idf / sum(qtf * idf * (k1+1))``,
        so that :meth:`scores` of a perfect match tends to 1. A query without tokens gets an all-zero row."""
        if not self.fitted:
            raise RuntimeError("LexicalSignal has no corpus statistics; call set_statistics first")
        rows = self.tokenize(texts)
        vocab = np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *rows]))
        counts = np.zeros((len(rows), len(vocab)), dtype=np.float32)
        for i, row in enumerate(rows):
            if len(row):
                np.add.at(counts[i], np.searchsorted(vocab, row), 1.0)
        vocab_t = torch.from_numpy(vocab).to(self.doc_freq.device)
        weights = torch.from_numpy(counts).to(self.doc_freq.device) * self.idf(vocab_t)[None, :]
        total = weights.sum(dim=1, keepdim=True) * (self.k1 + 1)
        return vocab_t, weights / total.clamp_min(1e-12)

    def scores(
        self, query: tuple[torch.Tensor, torch.Tensor], tokens: torch.Tensor, chunk: int = 2**24
    ) -> torch.Tensor:
        """``[Q, B]`` normalised BM25 of every query against every product row of ``tokens`` (``[B, L]``, ``-1``
        padded). Only the query vocabulary is materialised: ``[B, L, V]`` matches, in chunks of ``B``."""
        vocab, weights = query
        device = tokens.device
        vocab, weights = vocab.to(device), weights.to(device=device, dtype=torch.float32)
        num_rows, width = tokens.shape
        if vocab.numel() == 0 or num_rows == 0:
            return torch.zeros(weights.shape[0], num_rows, device=device)
        lengths = (tokens >= 0).sum(dim=1).to(torch.float32)
        norm = self.k1 * (1 - self.b + self.b * lengths / self.avg_len.to(device).clamp_min(1e-12))
        step = max(1, chunk // max(1, width * vocab.numel()))
        out = []
        for start in range(0, num_rows, step):
            rows = tokens[start : start + step]
            tf = (rows[:, :, None] == vocab[None, None, :]).sum(dim=1).to(torch.float32)  # [b, V]
            saturation = tf * (self.k1 + 1) / (tf + norm[start : start + step, None])
            out.append(weights @ saturation.T)
        return torch.cat(out, dim=1)

    def extra_repr(self) -> str:
        return f"k1={self.k1}, b={self.b}, num_buckets={self.num_buckets}, fitted={self.fitted}"
