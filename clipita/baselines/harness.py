"""Score a baseline in the project's retrieval harness: same metric class, query table, groups and gallery."""

from __future__ import annotations

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


def evaluate_scores(scores: torch.Tensor, gallery: TestGallery, chunk_size: int = 8192) -> BaselineResult:
    """Rank the gallery by ``scores`` and compute every retrieval metric per query and per group.

    Args:
        scores: ``[Q, N]`` score of each query (category-table row) for each test product, higher = better.
            Equal scores rank by product index (the harness's tie rule).
        gallery: the test gallery the scores refer to.
        chunk_size: products folded into the metric per ``update_scores`` call.
    """
    scores = torch.as_tensor(scores, dtype=torch.float32)
    expected = (gallery.num_queries, gallery.num_products)
    if tuple(scores.shape) != expected:
        raise ValueError(f"scores must be [Q, N] = {list(expected)}, got {list(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("baseline scores must be finite")
    metric = CategoryRetrievalMetrics(**gallery.metric_kwargs)
    metric.set_queries(gallery.query_text_features, gallery.settings)
    for start in range(0, gallery.num_products, chunk_size):
        stop = min(gallery.num_products, start + chunk_size)
        metric.update_scores(
            scores[:, start:stop], gallery.category_ids[start:stop], torch.arange(start, stop)
        )
    means = {k: float(v) for k, v in metric.compute().items()}
    return BaselineResult(metric.compute_per_query(), metric.ranking()[1], means)
