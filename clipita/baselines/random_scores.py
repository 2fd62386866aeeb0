"""The random baseline: every metric at chance level, for the given gallery and query table."""

from __future__ import annotations

import numpy as np
import torch

from .gallery import TestGallery


def random_scores(gallery: TestGallery, seed: int = 0) -> torch.Tensor:
    """``[Q, N]`` uniform random scores, reproducible from ``seed`` and the gallery's split seed.

    Args:
        gallery: the test gallery.
        seed: base seed; combined with ``gallery.split_seed`` so each held-out split gets its own draw.
    """
    rng = np.random.default_rng([seed, gallery.split_seed])
    return torch.from_numpy(rng.random((gallery.num_queries, gallery.num_products), dtype=np.float32))
