"""Score a baseline in the project's retrieval harness: same metric class, query table, groups and gallery."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from lightning_modules.metrics import CategoryRetrievalMetrics

from .gallery import TestGallery


class BaselineNotRun(RuntimeError):
    """The baseline cannot run in this environment (e.g. no image-text model offline); the message says why and is
    reported in the leaderboard instead of a number."""


@dataclass
class BaselineResult:
    """What one baseline produced on one test gallery, shaped like a tested ``ClipItaModule``.

    Attributes:
        per_query: ``{metric: Tensor [Q]}`` (NaN where a query has no relevant product), plus ``num_relevant``;
            the same keys as ``module.per_query["test"]``.
        ranking: ``[Q, max_rank]`` ranked product indices (``module.rankings["test"]``).
        metrics: group means ``{"all/map@10": value, ...}`` (what the module logs under ``test/``).
    """

    per_query: dict[str, torch.Tensor]
    ranking: torch.Tensor
    metrics: dict[str, float]


def evaluate_scores(
    scores: torch.Tensor | Iterable[torch.Tensor], gallery: TestGallery, chunk_size: int = 8192
) -> BaselineResult:
    """Rank the gallery by ``scores`` and compute every retrieval metric per query and per group.

    Args:
        scores: ``[Q, N]`` score of each query (category-table row) for each test product, higher = better, or an
            iterable of ``[Q, c]`` blocks covering the products in gallery order (a streamed gallery: only one
            block is in memory). Equal scores rank by product index (the harness's tie rule).
        gallery: the test gallery the scores refer to.
        chunk_size: products folded into the metric per ``update_scores`` call (a ``[Q, N]`` matrix).
    """
    if isinstance(scores, torch.Tensor) or hasattr(scores, "__array__"):
        matrix = torch.as_tensor(scores, dtype=torch.float32)
        expected = (gallery.num_queries, gallery.num_products)
        if tuple(matrix.shape) != expected:
            raise ValueError(f"scores must be [Q, N] = {list(expected)}, got {list(matrix.shape)}")
        blocks: Iterable[torch.Tensor] = (
            matrix[:, start : start + chunk_size] for start in range(0, gallery.num_products, chunk_size)
        )
    else:
        blocks = scores
    metric = CategoryRetrievalMetrics(**gallery.metric_kwargs)
    metric.set_queries(gallery.query_text_features, gallery.settings)
    start = 0
    for block in blocks:
        block = torch.as_tensor(block, dtype=torch.float32)
        stop = start + block.shape[1]
        if block.ndim != 2 or block.shape[0] != gallery.num_queries or stop > gallery.num_products:
            raise ValueError(
                f"score blocks must be [Q, c] = [{gallery.num_queries}, c] covering {gallery.num_products} "
                f"products, got {list(block.shape)} at product {start}"
            )
        if not torch.isfinite(block).all():
            raise ValueError("baseline scores must be finite")
        metric.update_scores(block, gallery.category_ids[start:stop], torch.arange(start, stop))
        start = stop
    if start != gallery.num_products:
        raise ValueError(f"score blocks covered {start} products, the gallery has {gallery.num_products}")
    means = {k: float(v) for k, v in metric.compute().items()}
    return BaselineResult(metric.compute_per_query(), metric.ranking()[1], means)
