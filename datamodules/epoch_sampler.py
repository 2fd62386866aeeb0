"""Samplers whose order depends only on (seed, epoch), so a run resumed at an epoch boundary replays exactly."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler[int]):
    """Shuffle (or draw by weight) with a generator seeded from ``seed`` and the epoch Lightning sets.

    Lightning calls ``set_epoch`` on a loader's sampler before each epoch (as it does for ``DistributedSampler``), so
    epoch ``e`` always sees the same order whether the run went straight through or was killed and resumed.

    Args:
        num_samples: dataset length.
        seed: base seed.
        weights: per-sample weights for drawing with replacement (category balancing); None = a permutation.
    """

    def __init__(self, num_samples: int, seed: int = 0, weights: torch.Tensor | None = None) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.weights = None if weights is None else weights.double()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        return iter(order.tolist())
