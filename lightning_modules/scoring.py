"""How a query's score mixes the retrieval signals: the query side of :class:`~lightning_modules.model.ClipIta`.

The weights live in ``ClipIta.retrieval`` (the retrieval record, kept in checkpoints; chosen on validation by
:mod:`lightning_modules.scorer_choice`); the score of a query ``q`` against a product ``p`` is

    (1 - w) * (1 - v) * <category(q), fused(p)> + (1 - w) * v * <category(q), image(p)> + w * <name(q), title(p)>
    + l * bm25n(q, p)

with ``w`` the title weight (``route_novel_categories``), ``v`` the image-only weight (``image_evidence``) and ``l``
the lexical weight (``lexical_signal``), each with a seen and a novel value. Two tree terms may be added to the
dense query vector (:mod:`lightning_modules.taxonomy_scoring`): a novel query borrows its closest trained ancestor's
vector (``novel_parent_weight``) and an inner node the mean of its trained descendants' (``descendant_weight``). The dense part is one dot product of
:meth:`RetrievalScorer.encode_query` with ``ClipIta.encode_product_for_retrieval``; :meth:`RetrievalScorer.score`
adds the lexical part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .taxonomy_scoring import DESCENDANT_WEIGHT, NOVEL_PARENT_WEIGHT, TaxonomyRows, apply_taxonomy

NOVEL_TITLE_WEIGHT = "novel_title_weight"  # retrieval-record keys
SEEN_TITLE_WEIGHT = "seen_title_weight"
NOVEL_IMAGE_WEIGHT = "novel_image_weight"
SEEN_IMAGE_WEIGHT = "seen_image_weight"
NOVEL_LEXICAL_WEIGHT = "novel_lexical_weight"
SEEN_LEXICAL_WEIGHT = "seen_lexical_weight"
LexicalQuery = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor
]  # (vocabulary [V], idf weights [Q, V], weight [Q])


class RetrievalScorer:
    """The query side of the scorer, mixed into :class:`~lightning_modules.model.ClipIta` (which provides
    ``retrieval``, ``route_novel_categories``, ``image_evidence``, ``lexical``, ``novel_mask`` and
    ``encode_category``)."""

    retrieval: dict[str, Any]

    def _weights(self, seen_key: str, novel_key: str, seen_default: float, novel_default: float):
        seen = float(self.retrieval.get(seen_key, seen_default))
        novel = float(self.retrieval.get(novel_key, novel_default))
        for name, w in ((seen_key, seen), (novel_key, novel)):
            if not 0.0 <= w <= 1.0:
                raise ValueError(f"retrieval {name} must be in [0, 1], got {w}")
        return seen, novel

    def title_weights(self) -> tuple[float, float]:
        """``(seen, novel)``: the weight of the frozen title match in a trained / a novel query's score, from
        :attr:`retrieval` (defaults 0.0 and 1.0: trained queries by the towers, novel ones by the title match)."""
        return self._weights(SEEN_TITLE_WEIGHT, NOVEL_TITLE_WEIGHT, 0.0, 1.0)

    def lexical_weights(self) -> tuple[float, float]:
        """``(seen, novel)``: the weight of the normalised BM25 term added to a trained / a novel query's dense
        score, from :attr:`retrieval` (defaults 0.0: none)."""
        return self._weights(SEEN_LEXICAL_WEIGHT, NOVEL_LEXICAL_WEIGHT, 0.0, 0.0)

    def lexical_query(
        self,
        texts: Sequence[str],
        paths: Sequence[Sequence[str] | None] | None = None,
        weights: tuple[float, float] | None = None,
    ) -> LexicalQuery | None:
        """The lexical side of queries for :meth:`score`: ``(vocabulary [V], idf weights [Q, V], weight [Q])``, or
        None when the scorer has no lexical term (no ``lexical_signal``, no corpus statistics, or both weights 0).
        ``weights`` overrides :meth:`lexical_weights` (``(seen, novel)``)."""
        if self.lexical is None or not self.lexical.fitted:
            return None
        seen, novel = self.lexical_weights() if weights is None else weights
        if seen == 0 and novel == 0:
            return None
        vocab, idf = self.lexical.query_weights(list(texts))
        mask = self.novel_mask(texts, paths).to(idf.device)
        return vocab, idf, torch.where(mask, novel, seen).to(idf.dtype)

    def score(
        self,
        queries: torch.Tensor,
        products: torch.Tensor,
        lexical: LexicalQuery | None = None,
        lexical_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[Q, B]`` scores of query vectors (:meth:`encode_query_texts`) against product retrieval vectors
        (:meth:`encode_product_for_retrieval`): their dot product, plus ``weight * bm25n`` when ``lexical``
        (:meth:`lexical_query`) and the products' ``lexical_tokens`` (``[B, L]``, -1 padded) are given. Evaluation
        scores through this function, so index and search rank the same way when they do."""
        dense = queries.to(products.dtype) @ products.T
        if lexical is None or lexical_tokens is None:
            return dense
        vocab, idf, weight = lexical
        bm25 = self.lexical.scores((vocab, idf), lexical_tokens.to(dense.device))
        return dense + weight.to(dense)[:, None] * bm25.to(dense)

    def taxonomy_weights(self) -> tuple[float, float]:
        """``(novel_parent_weight, descendant_weight)`` from :attr:`retrieval` (defaults 0.0: no tree terms)."""
        parent = float(self.retrieval.get(NOVEL_PARENT_WEIGHT, 0.0))
        descendants = float(self.retrieval.get(DESCENDANT_WEIGHT, 0.0))
        if parent < 0 or descendants < 0:
            raise ValueError(f"retrieval tree weights must be >= 0, got {parent}, {descendants}")
        return parent, descendants

    def trained_text_features(self) -> torch.Tensor:
        """Text-tower features of the trained categories' names (cached while the text tower is frozen)."""
        key = (tuple(self.trained_categories), self.category_text)
        cache = getattr(self, "_trained_features_cache", None)
        if cache is not None and cache[0] == key and not self.text_encoder.trainable:
            return cache[1]
        texts = [self.category_text_of(p) for p in self.trained_categories]
        features = self.text_encoder(texts)
        if not self.text_encoder.trainable:
            self._trained_features_cache = (key, features.detach())
        return features

    def add_taxonomy(
        self,
        queries: torch.Tensor,
        paths: Sequence[Sequence[str] | None] | None,
        novel: torch.Tensor,
        title_weights: tuple[float, float] | None = None,
        image_only_weights: tuple[float, float] | None = None,
        taxonomy_weights: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """``queries`` with the tree terms of :mod:`.taxonomy_scoring` added (weights from :meth:`taxonomy_weights`
        or ``taxonomy_weights``); the borrowed vectors are the trained categories as seen queries under the same
        signal weights. Unchanged without paths, without a trained set or with both weights 0."""
        parent, descendants = self.taxonomy_weights() if taxonomy_weights is None else taxonomy_weights
        if (parent == 0 and descendants == 0) or paths is None or not self.trained_categories:
            return queries
        rows = TaxonomyRows.of(paths, self.trained_categories)
        if not rows.needs_trained_queries:
            return queries
        trained = self.encode_query(
            self.trained_text_features().to(queries.device), None, title_weights, image_only_weights
        )
        return apply_taxonomy(queries, trained, rows, novel, parent, descendants)

    def image_only_weights(self) -> tuple[float, float]:
        """``(seen, novel)``: the share of the image-only tower in the trained part of a trained / a novel query's
        score, from :attr:`retrieval` (defaults 0.0: the fused towers)."""
        return self._weights(SEEN_IMAGE_WEIGHT, NOVEL_IMAGE_WEIGHT, 0.0, 0.0)

    def encode_query(
        self,
        text_features: torch.Tensor,
        novel: torch.Tensor | None = None,
        title_weights: tuple[float, float] | None = None,
        image_only_weights: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Query vectors matching :meth:`encode_product_for_retrieval` for category-name features ``[C, text_dim]``;
        ``novel [C]`` marks names not in the trained set (see :meth:`encode_query_texts`).

        A query is ``[(1 - w)(1 - v) * category, (1 - w) v * category, w * name]`` (the image-only block with
        ``image_evidence``, the name block with ``route_novel_categories``), so its score is the convex mix of the
        fused towers, the image-only towers and the title match (see the module docstring), with ``w`` =
        :meth:`title_weights` and ``v`` = :meth:`image_only_weights` (seen or novel), or ``title_weights`` /
        ``image_only_weights`` when given (the validation grid of :mod:`.scorer_choice`)."""
        category = self.encode_category(text_features)
        if not self.route_novel_categories and not self.image_evidence:
            return category
        novel = (
            torch.zeros(len(category), dtype=torch.bool, device=category.device)
            if novel is None
            else novel.to(category.device)
        )

        def per_query(pair: tuple[float, float]) -> torch.Tensor:
            return torch.where(novel, pair[1], pair[0]).to(category.dtype).unsqueeze(1)

        zero = torch.zeros(len(category), 1, dtype=category.dtype, device=category.device)
        w = per_query(self.title_weights() if title_weights is None else title_weights)
        w = w if self.route_novel_categories else zero
        v = per_query(self.image_only_weights() if image_only_weights is None else image_only_weights)
        v = v if self.image_evidence else zero
        blocks = [(1 - w) * (1 - v) * category]
        if self.image_evidence:
            blocks.append((1 - w) * v * category)
        if self.route_novel_categories:
            blocks.append(w * F.normalize(text_features.to(category.dtype), dim=-1))
        return torch.cat(blocks, dim=-1)
