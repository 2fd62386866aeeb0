"""The sharded predict-job runner (``datamodules.shard_jobs``) that encode and index both run on: which rank takes
which shard, how a shard's items come out of the loader workers, when a shard is written, and rank 0's assembly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from datamodules.shard_jobs import (
    ShardCollector,
    ShardItems,
    ShardPredictJob,
    rank_share,
    run_in_process,
    shard_loader,
)
from datamodules.shard_outputs import IDS, output_shard_done, write_output_shard


@dataclass(frozen=True)
class Shard:
    name: str
    count: int


class Rows(ShardItems):
    """Each shard's record numbers in batches."""

    def shard_items(self, job):
        for start in range(0, job.count, self.batch_size):
            yield {"ids": [f"{job.name}:{i}" for i in range(start, min(job.count, start + self.batch_size))]}
        if job.count == 0:
            yield {"ids": []}


SHARDS = [Shard("a", 5), Shard("b", 0), Shard("c", 3), Shard("d", 4), Shard("e", 2)]


def test_a_shard_goes_to_rank_n_mod_world_size_whatever_is_done():
    done = {"c"}
    assert [s.name for s in rank_share(SHARDS, 0, 2, lambda s: s.name in done)] == ["a", "e"]
    assert [s.name for s in rank_share(SHARDS, 1, 2, lambda s: s.name in done)] == ["b", "d"]
    assert rank_share(SHARDS, 0, 1, lambda s: True) == []


@pytest.mark.parametrize("workers", [0, 2])
def test_each_shard_comes_whole_and_in_order_its_last_item_marked(workers):
    items = list(shard_loader(Rows(SHARDS, batch_size=2), workers))
    by_shard: dict[str, list[dict]] = {}
    for item in items:
        by_shard.setdefault(item["shard"], []).append(item)
    assert sorted(by_shard) == [s.name for s in SHARDS]
    for shard in SHARDS:
        parts = by_shard[shard.name]
        assert [p["last"] for p in parts] == [False] * (len(parts) - 1) + [True]
        assert [i for p in parts for i in p["ids"]] == [f"{shard.name}:{i}" for i in range(shard.count)]


def test_a_rank_with_nothing_left_yields_one_empty_item():
    assert list(shard_loader(Rows([], batch_size=2), 2)) == [{"shard": None, "last": False}]


def test_the_collector_writes_a_shard_when_its_last_part_is_in():
    written = []
    collector = ShardCollector(lambda shard, parts: written.append((shard, [p["n"] for p in parts])))
    for output in ({"shard": "a", "last": False, "n": 0}, None, {"shard": None, "last": False},
                   {"shard": "b", "last": True, "n": 1}, {"shard": "a", "last": True, "n": 2}):  # fmt: skip
        collector.add(output)
    assert written == [("b", [1]), ("a", [0, 2])] and collector.written == ["b", "a"]
    collector.add({"shard": "c", "last": False, "n": 3})
    with pytest.raises(RuntimeError, match="ended without their last batch"):
        collector.check_finished()


class CopyJob(ShardPredictJob):
    """Writes each shard's ids as an output shard; rank 0 assembles the list of shards."""

    def __init__(self, folder, shards, fail=False):
        super().__init__("copy")
        self.folder, self.shards, self.fail, self.assembled = folder, shards, fail, None

    def path(self, shard, name):
        return self.folder / f"{shard}.{name}.npy"

    def done(self, shard):
        return output_shard_done(lambda name: self.path(shard.name, name), ())

    def loader(self, rank, world_size):
        return shard_loader(Rows(rank_share(self.shards, rank, world_size, self.done), 2), 0)

    def encode_item(self, item):
        return {"shard": item["shard"], "last": item["last"], "ids": item["ids"]}

    def write_shard(self, shard, parts):
        write_output_shard(lambda name: self.path(shard, name), [i for p in parts for i in p["ids"]], {})

    def assemble(self):
        if self.fail:
            raise ValueError("assembly failed")
        self.assembled = sorted(p.name for p in self.folder.glob(f"*.{IDS}.npy"))


def test_two_ranks_write_every_shard_once_and_rank_0_assembles_after_both(tmp_path):
    barriers = []
    ranks = [CopyJob(tmp_path, SHARDS) for _ in range(2)]
    for rank, job in enumerate(ranks):  # one after the other: the barrier only records it was reached
        run_in_process(job, rank, 2, barrier=lambda: barriers.append(1), progress=False)
    assert len(barriers) == 4 and ranks[1].assembled is None
    assert ranks[0].collector.written == ["a", "c", "e"] and ranks[1].collector.written == ["b", "d"]
    assert [str(i) for i in np.load(tmp_path / "d.ids.npy")] == [f"d:{i}" for i in range(4)]
    again = CopyJob(tmp_path, SHARDS)
    run_in_process(again, progress=False)  # resumed: every shard is done, nothing is written again
    assert again.collector.written == [] and again.assembled == sorted(f"{s.name}.ids.npy" for s in SHARDS)


def test_an_assembly_error_is_raised_after_the_last_barrier(tmp_path):
    barriers = []
    with pytest.raises(ValueError, match="assembly failed"):
        run_in_process(CopyJob(tmp_path, SHARDS, fail=True), 0, 2, lambda: barriers.append(1), progress=False)
    assert len(barriers) == 2  # the other ranks are released before rank 0 raises


def test_a_job_whose_result_only_rank_0_returns_does_not_hold_the_other_ranks(tmp_path):
    barriers = []
    job = CopyJob(tmp_path, SHARDS)
    job.wait_for_assembly = (
        False  # as clipita index: the other ranks return as soon as every shard is written
    )
    run_in_process(job, 1, 2, lambda: barriers.append(1), progress=False)
    assert len(barriers) == 1 and job.assembled is None
