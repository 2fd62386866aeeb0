"""Samplers whose order depends only on (seed, epoch), so a run resumed at an epoch boundary replays exactly."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler


class EpochSeededSampler(DistributedSampler):
    """Shuffle (or draw by weight) with a generator seeded from ``seed`` and the epoch Lightning sets.

    Lightning calls ``set_epoch`` on a loader's sampler before each epoch (as it does for ``DistributedSampler``), so
    epoch ``e`` always sees the same order whether the run went straight through or was killed and resumed.

    Across ``world_size`` ranks, global batch ``k`` is the one-process run's batch ``k`` (``order[k*B:(k+1)*B]``,
    ``B = world_size * batch_size``) and rank ``r`` takes its ``r``-th contiguous block of ``batch_size`` samples, so
    the ranks' batches gathered in rank order (as the contrastive loss gathers them) are that batch, row for row. The
    incomplete last global batch is left out on every rank (as ``drop_last`` does on one process). It subclasses
    ``DistributedSampler`` only so that Lightning uses it as it is instead of wrapping it in a second, differently
    seeded distributed shuffle.

    Args:
        num_samples: dataset length.
        seed: base seed.
        weights: per-sample weights for drawing with replacement (category balancing); None = a permutation.
        batch_size: samples per rank and step; None (one process only) = yield the whole order.
        rank: this process's rank.
        world_size: number of ranks.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        weights: torch.Tensor | None = None,
        batch_size: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if world_size > 1 and batch_size is None:
            raise ValueError(
                f"EpochSeededSampler needs batch_size to split batches across {world_size} ranks"
            )
        super().__init__(range(num_samples), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.weights = None if weights is None else weights.double()

    def __len__(self) -> int:
        if self.batch_size is None:
            return self.num_samples
        return self.num_samples // (self.batch_size * self.num_replicas) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
        if self.batch_size is not None:
            step = self.batch_size * self.num_replicas
            blocks = order[: self.num_samples // step * step].view(-1, self.num_replicas, self.batch_size)
            order = blocks[:, self.rank].flatten()
        return _as_ints(order)


def _as_ints(order: torch.Tensor, chunk: int = 1 << 16) -> Iterator[int]:
    """The order as Python ints, a chunk at a time: 8 bytes per sample stay resident (the int64 tensor), not the
    ~36 of a list of Python ints."""
    for part in order.split(chunk):
        yield from part.tolist()
