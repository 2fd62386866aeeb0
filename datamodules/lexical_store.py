"""The lexical token store's pieces on the data side: what text a product is tokenized from, the padded token rows,
and the tokenizer's cache key.

The tokenizer is the model's (``lightning_modules.lexical.LexicalSignal.tokenize``: :mod:`clipita_core.tokens`
with the model's bucket count), handed to the DataModule with the towers, so only its interface is used here:
``tokenize(texts) -> list[np.ndarray]``, ``tokenizer_id`` and ``num_buckets``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from datamodules.features import FeatureCacheError
from datamodules.shard_io import iter_shard_records


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


def shard_token_rows(tokenizer, urls: Iterable[str], names: Sequence[str]) -> Iterator[np.ndarray]:
    """The token rows of the products of shards (:func:`product_token_rows` of their records; no image is
    decoded), one ``[n, L]`` array per shard: what the raw path counts BM25 statistics from."""
    for url in urls:
        records = [record for record, _ in iter_shard_records(url)]
        titles, attributes = [r.title for r in records], [dict(r.attributes) for r in records]
        yield product_token_rows(tokenizer, titles, attributes, names)


def document_counts(chunks: Iterable[np.ndarray], num_buckets: int) -> dict:
    """BM25 corpus statistics of token rows given chunk by chunk (``[n, L]`` int arrays, ``-1`` padded): ``doc_freq``
    (``[num_buckets]`` float32: rows holding each bucket), ``num_docs`` and ``avg_len`` (tokens per row). Memory is
    a chunk plus the ``num_buckets`` counts."""
    doc_freq = np.zeros(num_buckets, dtype=np.int64)
    total = n = 0
    for chunk in chunks:
        rows = np.sort(chunk, axis=1)
        n += len(rows)
        valid = rows >= 0
        total += int(valid.sum())
        valid[:, 1:] &= rows[:, 1:] != rows[:, :-1]  # each bucket once per row: document frequency
        picked = rows[valid].astype(np.int64)
        if len(picked) and picked.max() >= num_buckets:
            raise FeatureCacheError(
                f"token id {int(picked.max())} is beyond num_buckets={num_buckets}; the token store was "
                "written with another tokenizer"
            )
        doc_freq += np.bincount(picked, minlength=num_buckets)
    return {"doc_freq": doc_freq.astype(np.float32), "num_docs": n, "avg_len": total / n if n else 0.0}


def tokenizer_key(tokenizer) -> dict:
    """A lexical tokenizer's cache key: its ``tokenizer_id`` and ``num_buckets`` (the statistics' size)."""
    return {
        "tokenizer": str(getattr(tokenizer, "tokenizer_id", type(tokenizer).__qualname__)),
        "num_buckets": int(tokenizer.num_buckets),
    }
