"""The BM25 baseline: lexical match of the category name against product titles (``bm25s``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .gallery import TestGallery
from .harness import BaselineNotRun

StemmerName = Literal["plural", "none"]


def plural_stem(words: list[str]) -> list[str]:
    """A light English suffix stripper so ``"Shoes"`` matches ``"shoe"`` and ``"Watches"`` matches ``"watch"``.

    Only plural endings are removed (``-ies`` -> ``-y``, ``-ches/-shes/-sses/-xes`` -> drop ``es``, a final ``-s``
    except after ``s``, ``u`` or ``i``); it is symmetric, so titles and queries meet on the same stems.

    Example:
        >>> plural_stem(["shoes", "watches", "dresses", "accessories", "jeans", "bus"])
        ['shoe', 'watch', 'dress', 'accessory', 'jean', 'bus']
    """
    out = []
    for word in words:
        if len(word) > 4 and word.endswith("ies"):
            word = word[:-3] + "y"
        elif len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
            word = word[:-2]
        elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        out.append(word)
    return out


def _tokenize(texts: Sequence[str], stemmer: StemmerName) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(
        list(texts),
        stopwords="en",
        stemmer=plural_stem if stemmer == "plural" else None,
        return_ids=False,
        show_progress=False,
    )


def bm25_texts(
    queries: Sequence[str],
    documents: Sequence[str],
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stemmer: StemmerName = "plural",
) -> torch.Tensor:
    """``[Q, N]`` BM25 score of every query text against every document text.

    Args:
        queries: query texts (category names).
        documents: document texts (product titles).
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        method: ``bm25s`` scoring variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
        stemmer: ``plural`` (:func:`plural_stem`) or ``none``.
    """
    import bm25s

    if not documents:
        return torch.zeros(len(queries), 0)
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(_tokenize(documents, stemmer), show_progress=False)
    out = np.zeros((len(queries), len(documents)), dtype=np.float32)
    for i, tokens in enumerate(_tokenize(queries, stemmer)):
        tokens = [t for t in tokens if t]
        if tokens:
            out[i] = retriever.get_scores(tokens)
    return torch.from_numpy(out)


def bm25_scores(
    gallery: TestGallery,
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stemmer: StemmerName = "plural",
) -> torch.Tensor:
    """``[Q, N]`` BM25 of each category's text (the module's ``category_text`` style) against each test title.

    The index is built over the test gallery's titles only (document frequencies from the gallery searched).
    Products sharing no term with the query score 0 and rank by product index (the harness's tie rule).

    Args:
        gallery: the test gallery.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        method: ``bm25s`` scoring variant.
        stemmer: ``plural`` or ``none``.

    Raises:
        BaselineNotRun: no test product has a title.
    """
    if not gallery.has_titles:
        raise BaselineNotRun("the catalogue has no titles (bm25 ranks products by their titles)")
    return bm25_texts(gallery.query_texts, gallery.titles, k1=k1, b=b, method=method, stemmer=stemmer)
