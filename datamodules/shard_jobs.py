"""The sharded, resumable predict job: what ``clipita encode`` (the feature cache, :mod:`datamodules.feature_encoding`)
and ``clipita index`` (the index folder, :mod:`clipita.retrieval.index_job`) both are.

A job reads an ordered list of input shards and writes one output shard per input shard
(:mod:`datamodules.shard_outputs`). The rules, written here once:

1. **Ranks.** Input shard ``n`` goes to global rank ``n % world_size`` whatever is already done, so ranks that look
   at the output folder at different moments still agree (:func:`rank_share`); a rank takes those of its shards
   whose output is not done, so a killed job resumes where it stopped.
2. **Workers.** Within a rank, DataLoader worker ``j % num_workers`` reads the rank's ``j``-th shard
   (:class:`ShardItems`): a batch never spans two shards, a shard's items arrive in order from one worker, and its
   last item is marked ``last``. A rank with nothing left still yields one empty item (``shard`` None): under DDP
   Lightning refuses a rank whose loader is empty, and the rank must still reach the barriers.
3. **Writing.** The main process collects a shard's outputs and writes its output shard when the last one is in
   (:class:`ShardCollector`).
4. **Assembly.** After a barrier over all ranks, global rank 0 assembles the result (marks the cache complete,
   writes ``index.json``), then, when the other ranks read that result next, a last barrier
   (:meth:`ShardPredictJob.finish`).

A job supplies only what differs (:class:`ShardPredictJob`): the items of one input shard (a :class:`ShardItems`
subclass), what one item computes (:meth:`~ShardPredictJob.encode_item`), what a finished shard writes
(:meth:`~ShardPredictJob.write_shard`) and how rank 0 assembles (:meth:`~ShardPredictJob.assemble`). It runs as a
Lightning predict job (``Trainer.predict``: devices/num_nodes/strategy, so torchrun and SLURM launch it unchanged)
or in this process with a given rank and barrier (:func:`run_in_process`, the DataModule's ``setup`` of a fit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

import lightning as L
import torch
from tqdm.auto import tqdm


class InputShard(Protocol):
    """What the runner needs of a job's input shard: its file name and record count."""

    name: str
    count: int


S = TypeVar("S")


def rank_share(shards: Sequence[S], rank: int, world_size: int, done: Callable[[S], bool]) -> list[S]:
    """This rank's shards (``n % world_size == rank``, whatever is done) whose output is not ``done`` yet."""
    return [s for n, s in enumerate(shards) if n % world_size == rank and not done(s)]


def empty_item() -> dict[str, Any]:
    """The one item of a rank with nothing left to do."""
    return {"shard": None, "last": False}


class ShardItems(torch.utils.data.IterableDataset):
    """The items of a rank's input shards, split across DataLoader workers shard by shard.

    A subclass yields one shard's items (dicts) in order from :meth:`shard_items` (at least one per shard); this
    adds ``shard`` (the shard's name) and ``last`` (True on its last item) and, with no shard at all, yields the
    one empty item.

    Args:
        jobs: this rank's input shards (``.name``, ``.count``).
        batch_size: records per item (for ``len``: the items a shard yields).
    """

    def __init__(self, jobs: Sequence[InputShard], batch_size: int) -> None:
        self.jobs, self.batch_size = list(jobs), batch_size

    def __len__(self) -> int:
        return max(1, sum(max(1, math.ceil(j.count / self.batch_size)) for j in self.jobs))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.jobs:
            yield empty_item()
            return
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for job in self.jobs[worker::workers]:
            pending = None
            for item in self.shard_items(job):
                if pending is not None:
                    yield pending
                pending = {**item, "shard": job.name, "last": False}
            if pending is None:
                raise RuntimeError(f"shard {job.name!r} yielded no item")
            yield self.last_item(job, {**pending, "last": True})

    def shard_items(self, job: Any) -> Iterator[dict[str, Any]]:
        """One input shard's items, in order (runs in a loader worker)."""
        raise NotImplementedError

    def last_item(self, job: Any, item: dict[str, Any]) -> dict[str, Any]:
        """The shard's last item, before it is handed on (e.g. with what is read once per shard)."""
        return item


def _as_is(item: Any) -> Any:
    return item


def shard_loader(dataset: ShardItems, num_workers: int) -> torch.utils.data.DataLoader:
    """The loader of a :class:`ShardItems`: at most one worker per shard, items handed on as they are."""
    workers = min(num_workers, len(dataset.jobs))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=4 if workers else None,
    )


class ShardCollector:
    """Collects each shard's outputs (they arrive in order from the one worker that reads the shard) and calls
    ``write(shard, parts)`` when its last one is in. Outputs are dicts with ``shard`` and ``last``; None and the
    empty item's output (``shard`` None) are ignored."""

    def __init__(self, write: Callable[[str, list[dict[str, Any]]], None]) -> None:
        self.write = write
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.written: list[str] = []

    def add(self, output: dict[str, Any] | None) -> None:
        if output is None or output["shard"] is None:
            return
        parts = self.pending.setdefault(output["shard"], [])
        parts.append(output)
        if output["last"]:
            del self.pending[output["shard"]]
            self.write(output["shard"], parts)
            self.written.append(output["shard"])

    def check_finished(self) -> None:
        if self.pending:
            raise RuntimeError(f"shards {sorted(self.pending)[:5]} ended without their last batch")


class ShardPredictJob(L.LightningModule):
    """``Trainer.predict`` over a job's :class:`ShardItems`: ``predict_step`` runs :meth:`encode_item` (the empty
    item gives None), ``on_predict_batch_end`` collects the outputs and writes finished shards, and
    ``on_predict_end`` waits for every rank, lets global rank 0 :meth:`assemble`, and waits again.

    Args:
        name: names the barriers (``<name>-written``, ``<name>-assembled``).
    """

    # whether the other ranks wait for rank 0's assembly (a job whose ranks read the assembled result next); a
    # job whose result only rank 0 returns leaves them free (a long assembly cannot time their barrier out)
    wait_for_assembly = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.job_name = name
        self.collector = ShardCollector(self.write_shard)

    # what a job supplies
    def encode_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """The output of one item: a dict with the item's ``shard`` and ``last`` and what :meth:`write_shard`
        reads."""
        raise NotImplementedError

    def write_shard(self, shard: str, parts: list[dict[str, Any]]) -> None:
        """Write the output shard of ``shard`` from its outputs, in order."""
        raise NotImplementedError

    def assemble(self) -> None:
        """Global rank 0, once every rank's shards are written: put the result together (default: nothing)."""

    def loader(self, rank: int, world_size: int) -> torch.utils.data.DataLoader:
        """This rank's loader (a :func:`shard_loader`); a job whose loader comes from a DataModule needs none."""
        raise NotImplementedError

    # the runner
    def predict_step(self, item: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        return None if item["shard"] is None else self.encode_item(item)

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.collector.add(outputs)

    def on_predict_end(self) -> None:
        self.finish(self.trainer.is_global_zero, self.trainer.strategy.barrier)

    def finish(self, is_global_zero: bool, barrier: Callable[[str], None] | None) -> None:
        """Every rank's shards written (barrier), then rank 0 assembles, then a barrier (with
        :attr:`wait_for_assembly`). An error of rank 0's assembly is raised after the last barrier, so the other
        ranks never wait for it."""
        self.collector.check_finished()
        if barrier is not None:
            barrier(f"{self.job_name}-written")
        error = None
        if is_global_zero:
            try:
                self.assemble()
            except Exception as err:  # noqa: BLE001 - re-raised below, once the other ranks are released
                error = err
        if barrier is not None and self.wait_for_assembly:
            barrier(f"{self.job_name}-assembled")
        if error is not None:
            raise error


def run_in_process(
    job: ShardPredictJob,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[..., None] | None = None,
    progress: bool = True,
) -> None:
    """Run ``job`` on this rank without a Trainer (every rank of a job calls it, with a ``barrier`` over all ranks;
    None for one process): the same loader, outputs, writes and assembly as ``Trainer.predict`` gives it. The
    progress bar (rank 0) counts the outputs' ``ids``."""
    loader = job.loader(rank, world_size)
    total = sum(j.count for j in loader.dataset.jobs)
    with tqdm(
        total=total, desc=f"{job.job_name} rank {rank}", unit=" products", disable=not progress or rank != 0
    ) as bar:
        for item in loader:
            output = job.predict_step(item, 0)
            job.collector.add(output)
            bar.update(len(output["ids"]) if output is not None else 0)
    job.finish(rank == 0, None if barrier is None else lambda name: barrier())
