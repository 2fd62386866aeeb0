"""The lexical token store's pieces on the data side: what text a product is tokenized from, the padded token rows,
and the tokenizer's cache key.

The tokenizer is the model's (``lightning_modules.lexical.LexicalSignal.tokenize``: :mod:`clipita_core.tokens`
with the model's bucket count), handed to the DataModule with the towers, so only its interface is used here:
``tokenize(texts) -> list[np.ndarray]``, ``tokenizer_id`` and ``num_buckets``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def lexical_texts(
    titles: Sequence[str], attributes: Sequence[dict[str, str]], names: Sequence[str]
) -> list[str]:
    """What the lexical signal indexes of each product: its title and the values of its attributes (``names``
    order), space-joined; the tokenizer splits them into words."""
    return [
        " ".join([t, *(str(a[n]) for n in names if a.get(n) not in (None, ""))]).strip()
        for t, a in zip(titles, attributes, strict=True)
    ]


def lexical_token_rows(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """``[n, L]`` int32 token ids of ``tokenizer.tokenize(texts)``, ``-1`` padded (``L >= 1``)."""
    rows = tokenizer.tokenize(list(texts))
    out = np.full((len(rows), max([1, *(len(r) for r in rows)])), -1, dtype=np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def product_token_rows(
    tokenizer, titles: Sequence[str], attributes: Sequence[dict[str, str]], names: Sequence[str]
) -> np.ndarray:
    """The token rows of products (:func:`lexical_texts` through :func:`lexical_token_rows`): what the token store
    holds for them and what a raw-image batch carries as ``lexical_tokens``."""
    return lexical_token_rows(tokenizer, lexical_texts(titles, attributes, names))


def tokenizer_key(tokenizer) -> dict:
    """A lexical tokenizer's cache key: its ``tokenizer_id`` and ``num_buckets`` (the statistics' size)."""
    return {
        "tokenizer": str(getattr(tokenizer, "tokenizer_id", type(tokenizer).__qualname__)),
        "num_buckets": int(tokenizer.num_buckets),
    }
