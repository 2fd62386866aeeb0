"""The title zero-shot baseline: the frozen text encoder alone, category name vs product title, no training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .gallery import TestGallery
from .harness import BaselineNotRun


def cosine_scores(queries: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
    """``[Q, N]`` cosine similarity of every query row with every product row."""
    return F.normalize(queries.float(), dim=-1) @ F.normalize(products.float(), dim=-1).T


def title_zero_shot_scores(gallery: TestGallery) -> torch.Tensor:
    """``[Q, N]`` cosine between the category-name embedding and the product-title embedding.

    Both come from the same frozen text tower the models use (all-MiniLM-L6-v2 offline): the category side is the
    module's ``category_text_features`` (``category_text`` style, ``leaf`` names by default), the product side the
    cached ``title_features``.

    Args:
        gallery: the test gallery (needs ``title_features``, i.e. a feature-cache DataModule).

    Raises:
        BaselineNotRun: no test product has a title.
    """
    if not gallery.has_titles:
        raise BaselineNotRun("the catalogue has no titles (title_zero_shot ranks products by their titles)")
    if gallery.title_features is None:
        raise ValueError("title_zero_shot needs cached title features (data.use_features: true)")
    return cosine_scores(gallery.query_text_features, gallery.title_features)
