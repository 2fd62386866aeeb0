"""How a query's score mixes the retrieval signals: :class:`Scorer`, owned by a
:class:`~lightning_modules.model.ClipIta` as ``net.scorer``.

The weights are the scorer's :class:`~clipita_core.weights.RetrievalWeights` (``net.scorer.weights``; on disk the
checkpoint record's ``retrieval`` dict, read and written through ``ClipIta.retrieval``; chosen on validation by
:mod:`lightning_modules.scorer_choice`); the score of a query ``q`` against a product ``p`` is

    (1 - w) * (1 - v) * <category(q), fused(p)> + (1 - w) * v * <category(q), image(p)> + w * <name(q), title(p)>
    + l * bm25n(q, p)

with ``w`` the title weight (``route_novel_categories``), ``v`` the image-only weight (``image_evidence``) and ``l``
the lexical weight (``lexical_signal``), each with a seen and a novel value. Two tree terms may be added to the
dense query vector (:mod:`lightning_modules.taxonomy_scoring`): a novel query borrows its closest trained ancestor's
vector (``novel_parent_weight``) and an inner node the mean of its trained descendants' (``descendant_weight``).
The dense part is one dot product of :meth:`Scorer.encode_query` with ``ClipIta.encode_product_for_retrieval``;
:meth:`Scorer.score` adds the lexical part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from clipita_core.weights import RetrievalWeights

from .taxonomy_scoring import TaxonomyRows, apply_taxonomy

if TYPE_CHECKING:
    from .components.text_encoder import TextEncoder
    from .lexical import LexicalSignal

LexicalQuery = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor
]  # (vocabulary [V], idf weights [Q, V], weight [Q])


class ScoredNetwork(Protocol):
    """What :class:`Scorer` reads of its network (:class:`~lightning_modules.model.ClipIta`)."""

    route_novel_categories: bool
    image_evidence: bool
    lexical: LexicalSignal | None
    trained_categories: list[tuple[str, ...]]
    category_text: str
    text_encoder: TextEncoder

    def novel_mask(
        self, texts: Sequence[str], paths: Sequence[Sequence[str] | None] | None = None
    ) -> torch.Tensor: ...

    def encode_category(self, text_features: torch.Tensor, normalize: bool = True) -> torch.Tensor: ...

    def category_text_of(self, path: Sequence[str]) -> str: ...


class Scorer:
    """The scorer of a :class:`~lightning_modules.model.ClipIta`, owned by it as ``net.scorer``: its
    :class:`~clipita_core.weights.RetrievalWeights` (:attr:`weights`) and the query side of the score. It reads the
    network's towers and switches (``route_novel_categories``, ``image_evidence``, ``lexical``, ``novel_mask``,
    ``encode_category``, the text tower and ``trained_categories``); the network calls it, never the other way round
    for anything but those."""

    def __init__(self, net: ScoredNetwork, weights: RetrievalWeights | None = None) -> None:
        self.net = net
        self.weights = RetrievalWeights() if weights is None else weights
        self._trained_features_cache: tuple | None = None

    def title_weights(self) -> tuple[float, float]:
        """``(seen, novel)``: the weight of the frozen title match in a trained / a novel query's score (defaults
        0.0 and 1.0: trained queries by the towers, novel ones by the title match)."""
        return self.weights.pair("title")

    def lexical_weights(self) -> tuple[float, float]:
        """``(seen, novel)``: the weight of the normalised BM25 term added to a trained / a novel query's dense
        score (defaults 0.0: none)."""
        return self.weights.pair("lexical")

    def image_only_weights(self) -> tuple[float, float]:
        """``(seen, novel)``: the share of the image-only tower in the trained part of a trained / a novel query's
        score (defaults 0.0: the fused towers)."""
        return self.weights.pair("image")

    def taxonomy_weights(self) -> tuple[float, float]:
        """``(novel_parent_weight, descendant_weight)`` (defaults 0.0: no tree terms)."""
        return self.weights.taxonomy

    def lexical_query(
        self,
        texts: Sequence[str],
        paths: Sequence[Sequence[str] | None] | None = None,
        weights: tuple[float, float] | None = None,
    ) -> LexicalQuery | None:
        """The lexical side of queries for :meth:`score`: ``(vocabulary [V], idf weights [Q, V], weight [Q])``, or
        None when the scorer has no lexical term (no ``lexical_signal``, no corpus statistics, or both weights 0).
        ``weights`` overrides :meth:`lexical_weights` (``(seen, novel)``)."""
        if self.net.lexical is None or not self.net.lexical.fitted:
            return None
        seen, novel = self.lexical_weights() if weights is None else weights
        if seen == 0 and novel == 0:
            return None
        vocab, idf = self.net.lexical.query_weights(list(texts))
        mask = self.net.novel_mask(texts, paths).to(idf.device)
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
        bm25 = self.net.lexical.scores((vocab, idf), lexical_tokens.to(dense.device))
        return dense + weight.to(dense)[:, None] * bm25.to(dense)

    def trained_text_features(self) -> torch.Tensor:
        """Text-tower features of the trained categories' names (cached while the text tower is frozen)."""
        key = (tuple(self.net.trained_categories), self.net.category_text)
        cache = self._trained_features_cache
        if cache is not None and cache[0] == key and not self.net.text_encoder.trainable:
            return cache[1]
        texts = [self.net.category_text_of(p) for p in self.net.trained_categories]
        features = self.net.text_encoder(texts)
        if not self.net.text_encoder.trainable:
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
        if (parent == 0 and descendants == 0) or paths is None or not self.net.trained_categories:
            return queries
        rows = TaxonomyRows.of(paths, self.net.trained_categories)
        if not rows.needs_trained_queries:
            return queries
        trained = self.encode_query(
            self.trained_text_features().to(queries.device), None, title_weights, image_only_weights
        )
        return apply_taxonomy(queries, trained, rows, novel, parent, descendants)

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
        category = self.net.encode_category(text_features)
        if not self.net.route_novel_categories and not self.net.image_evidence:
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
        w = w if self.net.route_novel_categories else zero
        v = per_query(self.image_only_weights() if image_only_weights is None else image_only_weights)
        v = v if self.net.image_evidence else zero
        blocks = [(1 - w) * (1 - v) * category]
        if self.net.image_evidence:
            blocks.append((1 - w) * v * category)
        if self.net.route_novel_categories:
            blocks.append(w * F.normalize(text_features.to(category.dtype), dim=-1))
        return torch.cat(blocks, dim=-1)
