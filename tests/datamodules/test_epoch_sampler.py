"""The epoch sampler splits the one-process run's global batches across ranks, each rank a contiguous block."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from datamodules.epoch_sampler import EpochSeededSampler


@pytest.mark.parametrize("weights", [None, torch.rand(50) + 0.1])
def test_ranks_take_their_blocks_of_the_one_process_batches(weights):
    one = EpochSeededSampler(50, seed=4, weights=weights, batch_size=12)
    ranks = [
        EpochSeededSampler(50, seed=4, weights=weights, batch_size=4, rank=r, world_size=3) for r in range(3)
    ]
    for sampler in (one, *ranks):
        sampler.set_epoch(2)
        assert isinstance(sampler, DistributedSampler)  # so Lightning does not wrap it in a second shuffle
    batches = list(DataLoader(range(50), batch_size=12, sampler=one, drop_last=True))
    per_rank = [list(DataLoader(range(50), batch_size=4, sampler=s, drop_last=True)) for s in ranks]
    assert len(batches) == 4 and all(len(p) == 4 for p in per_rank)  # 50 // 12 whole global batches
    for k, batch in enumerate(batches):
        assert torch.cat([p[k] for p in per_rank]).tolist() == batch.tolist()
    assert len(ranks[0]) == 16 and len(one) == 48

    # the whole order without a batch size (one process), the same for the same (seed, epoch), new for the next
    plain = EpochSeededSampler(50, seed=4, weights=weights)
    plain.set_epoch(2)
    assert len(plain) == 50 and list(plain)[:48] == list(one)
    plain.set_epoch(3)
    assert list(plain)[:48] != list(one)


def test_several_ranks_need_the_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        EpochSeededSampler(50, world_size=2, rank=1)
