"""The category each training product is paired with at a step: its leaf, or a uniformly drawn level of its path
(``model.train_category_level``)."""

from __future__ import annotations

from typing import Literal

import torch

TrainLevel = Literal["leaf", "random"]


def training_targets(
    category_ids: torch.Tensor, level: TrainLevel, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """``[N]`` table ids: each product's leaf (``leaf``) or a uniformly drawn level of its path (``random``).

    Args:
        category_ids: ``[N, L]`` ancestor table ids per product, root first, ``-1`` padded (the batch key).
        level: ``leaf`` or ``random``.
        rank, world_size: this process's place in a DDP job. Every rank holds the same generator state (reseeded
            alike each step: :mod:`lightning_modules.step_seed`), so each draws the uniforms of the whole global batch
            and keeps its own block of them (the sampler's block; the gathered loss's order): the levels are those a
            one-process run with the global batch draws, and no two ranks share draws.
    """
    depth = (category_ids >= 0).sum(dim=1)
    if level == "leaf":
        chosen = depth - 1
    else:
        n = depth.shape[0]
        draws = torch.rand(n * world_size, device=depth.device)[rank * n : (rank + 1) * n]
        chosen = (draws * depth).long()
    return category_ids.gather(1, chosen.unsqueeze(1)).squeeze(1)
