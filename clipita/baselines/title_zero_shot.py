"""The title zero-shot baseline: the frozen text encoder alone, category name vs product title, no training."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .gallery import TestGallery
from .harness import BaselineNotRun


def title_zero_shot_chunks(gallery: TestGallery, chunk_size: int = 65536) -> Iterator[torch.Tensor]:
    """``[Q, c]`` blocks of the cosine between the category-name embedding and the product-title embedding, in
    gallery order (the title features are streamed from the feature store: memory independent of the gallery).

    Both come from the same frozen text tower the models use (all-MiniLM-L6-v2 offline): the category side is the
    query table's frozen text features (``category_text`` style, ``leaf`` names by default), the product side the
    cached ``title_features``.

    Args:
        gallery: the test gallery (needs cached title features, i.e. a feature-cache DataModule).
        chunk_size: products per block.

    Raises:
        BaselineNotRun: no test product has a title.
    """
    if not gallery.has_titles:
        raise BaselineNotRun("the catalogue has no titles (title_zero_shot ranks products by their titles)")
    if not gallery.has_title_features:
        raise ValueError("title_zero_shot needs cached title features (data.use_features: true)")
    queries = F.normalize(gallery.query_text_features.float(), dim=-1)
    return (queries @ F.normalize(chunk, dim=-1).T for chunk in gallery.title_feature_chunks(chunk_size))


def title_zero_shot_scores(gallery: TestGallery) -> torch.Tensor:
    """The whole ``[Q, N]`` matrix of :func:`title_zero_shot_chunks` (small galleries; the leaderboard streams)."""
    return torch.cat(list(title_zero_shot_chunks(gallery)), dim=1)
