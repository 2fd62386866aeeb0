"""The BM25 baseline: lexical match of the category name against product titles (``bm25s``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from clipita_core.tokens import plural_stem

from .gallery import TestGallery
from .harness import BaselineNotRun

if TYPE_CHECKING:
    from scipy import sparse

StemmerName = Literal["plural", "none"]


def _tokenize(texts: Sequence[str], stemmer: StemmerName) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(
        list(texts),
        stopwords="en",
        stemmer=(lambda words: [plural_stem(w) for w in words]) if stemmer == "plural" else None,
        return_ids=False,
        show_progress=False,
    )


def bm25_sparse(
    queries: Sequence[str],
    documents: Sequence[str],
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stemmer: StemmerName = "plural",
) -> sparse.csc_array:
    """``[Q, N]`` BM25 score of every query text against every document text, as a sparse float32 matrix.

    Only documents sharing a term with a query score non-zero, so the matrix holds a few entries per query: memory
    is ``O(nonzeros)`` plus one ``[N]`` score row at a time, never ``Q x N``. Column-compressed, so product blocks
    (:func:`bm25_chunks`) slice out in time proportional to their entries.

    Args:
        queries: query texts (category names).
        documents: document texts (product titles).
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        method: ``bm25s`` scoring variant (``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``).
        stemmer: ``plural`` (:func:`clipita_core.tokens.plural_stem`) or ``none``.
    """
    import bm25s
    from scipy import sparse

    shape = (len(queries), len(documents))
    indptr = np.zeros(len(queries) + 1, dtype=np.int64)
    indices: list[np.ndarray] = []
    values: list[np.ndarray] = []
    if documents:
        retriever = bm25s.BM25(k1=k1, b=b, method=method)
        retriever.index(_tokenize(documents, stemmer), show_progress=False)
        for i, tokens in enumerate(_tokenize(queries, stemmer)):
            tokens = [t for t in tokens if t]
            if tokens:
                row = np.asarray(retriever.get_scores(tokens), dtype=np.float32)
                nonzero = np.flatnonzero(row)
                indices.append(nonzero)
                values.append(row[nonzero])
                indptr[i + 1] = len(nonzero)
    np.cumsum(indptr, out=indptr)
    matrix = sparse.csr_array(
        (
            np.concatenate(values) if values else np.zeros(0, dtype=np.float32),
            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
            indptr,
        ),
        shape=shape,
    )
    return matrix.tocsc()


def bm25_texts(queries: Sequence[str], documents: Sequence[str], **options: Any) -> torch.Tensor:
    """The dense ``[Q, N]`` matrix of :func:`bm25_sparse` (small sets: tests, benchmarks; galleries stream);
    ``options`` are its ``k1``, ``b``, ``method`` and ``stemmer``."""
    return torch.from_numpy(bm25_sparse(queries, documents, **options).toarray())


def bm25_chunks(
    gallery: TestGallery,
    chunk_size: int = 8192,
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stemmer: StemmerName = "plural",
) -> Iterator[torch.Tensor]:
    """``[Q, c]`` blocks of the BM25 of each category's text (the module's ``category_text`` style) against each
    test title, in gallery order: what the leaderboard evaluates (:func:`~.harness.evaluate_scores` streams them).

    The index is built over the test gallery's titles only (document frequencies from the gallery searched). The
    scores are held sparse (:func:`bm25_sparse`) and each block is made dense on its own: memory
    ``O(nonzeros + Q * chunk_size)``, never ``Q x N``; the values are those of the dense matrix. Products sharing
    no term with the query score 0 and rank by product index (the harness's tie rule).

    Args:
        gallery: the test gallery.
        chunk_size: products per block.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        method: ``bm25s`` scoring variant.
        stemmer: ``plural`` or ``none``.

    Raises:
        BaselineNotRun: no test product has a title.
    """
    if not gallery.has_titles:
        raise BaselineNotRun("the catalogue has no titles (bm25 ranks products by their titles)")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    matrix = bm25_sparse(gallery.query_texts, gallery.titles, k1=k1, b=b, method=method, stemmer=stemmer)
    return (
        torch.from_numpy(matrix[:, start : start + chunk_size].toarray())
        for start in range(0, gallery.num_products, chunk_size)
    )


def bm25_scores(
    gallery: TestGallery,
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stemmer: StemmerName = "plural",
) -> torch.Tensor:
    """The whole ``[Q, N]`` matrix of :func:`bm25_chunks` (small galleries; the leaderboard streams the blocks).

    Raises:
        BaselineNotRun: no test product has a title.
    """
    chunks = list(bm25_chunks(gallery, k1=k1, b=b, method=method, stemmer=stemmer))
    return torch.cat(chunks, dim=1) if chunks else torch.zeros(gallery.num_queries, 0)
