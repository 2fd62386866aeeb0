"""The raw training stream's stages: the shard source, the sample shuffle, decoding + augmentation, the epoch cut,
all seeded by ``(seed, epoch, rank, worker)`` so that an epoch can be replayed, or resumed in its middle.

``datamodules.shard_pipeline.build_shard_pipeline`` puts them together (see its module docstring for the layout).

How a resume in the middle of an epoch is exact
    Each DataLoader worker reads its own deterministic stream: its shards, its shuffle buffer and each sample's
    augmentation are seeded by ``(seed, epoch, rank, worker)`` (and the sample's index in that stream), and it yields
    its share of the epoch's ``N`` batches. The DataLoader takes batches from its ``W`` workers in turn, so batch
    ``b`` of an epoch is batch ``b // W`` of worker stream ``b % W``. To resume at batch ``s`` (the loader's
    ``state_dict``, kept by Lightning in the checkpoint), worker process ``p`` plays stream ``(p + s) % W`` (a fresh
    DataLoader iterator asks worker 0 first, and batch ``s`` belongs to stream ``s % W``) and drops that stream's
    first ``ceil((s - stream) / W)`` batches as raw samples, before decoding: batches ``s..N-1`` come out exactly as
    in the uninterrupted run, and skipping costs reading the skipped JPEG bytes, not decoding them.

The shared :class:`StreamPosition` carries ``(epoch, first batch)`` from the main process to persistent workers,
which read it when an epoch's iteration starts.
"""

from __future__ import annotations

import multiprocessing
import random
from collections.abc import Callable, Iterator
from functools import partial
from itertools import count, islice
from typing import Any

import torch
import torch.utils.data
import webdataset as wds

Augmentation = Callable[[torch.Tensor, random.Random], torch.Tensor]


def worker_process() -> tuple[int, int]:
    """``(worker id, number of workers)`` of this DataLoader worker process; ``(0, 1)`` in the main process."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class StreamPosition:
    """Where the training stream starts its next epoch: ``(epoch, first batch)``, shared with DataLoader workers.

    Args:
        epoch: initial epoch.
    """

    def __init__(self, epoch: int = 0) -> None:
        self._value = multiprocessing.Array("q", [epoch, 0])

    def get(self) -> tuple[int, int]:
        """``(epoch, first batch of that epoch)``."""
        return int(self._value[0]), int(self._value[1])

    def set(self, epoch: int, first_batch: int = 0) -> None:
        if first_batch < 0:
            raise ValueError(f"the first batch must be >= 0, got {first_batch}")
        with self._value.get_lock():
            self._value[0], self._value[1] = epoch, first_batch

    @property
    def epoch(self) -> int:
        return self.get()[0]

    def stream(self) -> tuple[int, int, int]:
        """``(stream, number of streams, batches of that stream to skip)`` for this worker process."""
        worker, num_workers = worker_process()
        first = self.get()[1]
        stream = (worker + first) % num_workers
        return stream, num_workers, batches_before(first, stream, num_workers)


def batches_before(first_batch: int, stream: int, num_streams: int) -> int:
    """How many of batches ``0..first_batch-1`` stream ``stream`` made (batch ``b`` comes from ``b % num_streams``).

    Example:
        >>> [batches_before(5, stream, 2) for stream in (0, 1)]
        [3, 2]
    """
    return max(0, -(-(first_batch - stream) // num_streams))


def stream_share(num_batches: int, stream: int, num_streams: int) -> int:
    """Stream ``stream``'s share of an epoch's ``num_batches`` (shares differ by at most one)."""
    return num_batches // num_streams + (1 if stream < num_batches % num_streams else 0)


def _stream_seed(rank: int, position: StreamPosition) -> int:
    return rank * 1000 + position.stream()[0]


class EpochResampledShards(wds.ResampledShards):
    """``wds.ResampledShards`` seeded by ``(seed, epoch, rank, stream)``, the epoch read from the shared position, so
    freshly started (or persistent) workers agree with the main process on it."""

    def __init__(self, urls: list[str], seed: int, rank: int, position: StreamPosition) -> None:
        super().__init__(
            urls, seed=seed, worker_seed=partial(_stream_seed, rank, position), deterministic=True
        )
        self.position = position

    def __iter__(self) -> Iterator[dict[str, str]]:
        self.epoch = self.position.epoch - 1  # the parent increments it before seeding
        yield from super().__iter__()


class ShardCycle(torch.utils.data.IterableDataset):
    """Non-resampled training source: the epoch's shuffled shard list (the same on every rank), split by rank and
    stream, read over and over (reshuffled each pass) as an endless sample stream.

    Args:
        urls: the shard URLs.
        seed: seed of the shard order.
        rank: this process's rank.
        world_size: number of ranks.
        position: the shared epoch.
        read: shard-URL dicts -> raw samples (``shard_io.tar_samples``).
    """

    def __init__(
        self,
        urls: list[str],
        seed: int,
        rank: int,
        world_size: int,
        position: StreamPosition,
        read: Callable[[Iterator[dict[str, Any]]], Iterator[dict[str, Any]]],
    ) -> None:
        super().__init__()
        self.urls, self.seed, self.rank, self.world_size = urls, seed, rank, world_size
        self.position, self.read = position, read

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stream, num_streams, _ = self.position.stream()
        epoch = self.position.epoch
        for pass_number in count():
            order = list(self.urls)
            random.Random(f"shards:{self.seed}:{epoch}:{pass_number}").shuffle(order)
            mine = order[self.rank :: self.world_size][stream::num_streams]
            produced = 0
            for sample in self.read(iter([{"url": url} for url in mine])):
                produced += 1
                yield sample
            if produced == 0:
                raise ValueError(f"rank {self.rank} stream {stream} read no samples from its shards {mine}")


class EpochShuffle:
    """A sample shuffle buffer whose RNG is seeded by ``(seed, epoch, rank, stream)``."""

    def __init__(self, bufsize: int, seed: int, rank: int, position: StreamPosition) -> None:
        self.bufsize, self.seed, self.rank, self.position = bufsize, seed, rank, position

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        stream = self.position.stream()[0]
        rng = random.Random(f"samples:{self.seed}:{self.position.epoch}:{self.rank}:{stream}")
        # A small initial fill: the buffer restarts at every epoch, and shards are drawn at random anyway.
        return wds.shuffle(self.bufsize, initial=max(1, self.bufsize // 10), rng=rng)(src)


class DecodeAugment:
    """Skip the batches a resumed epoch already made (as raw samples), then decode and augment each sample, the
    augmentation seeded by ``(seed, epoch, rank, stream, sample index)``.

    Args:
        decode: raw sample -> decoded record (``raw_batches.decode_record`` with the tower's transform).
        augmentation: ``(image, rng) -> image`` or None.
        batch_size: per-rank batch size (a skipped batch is this many raw samples).
        seed: the stream's seed.
        rank: this process's rank.
        position: the shared epoch and first batch.
    """

    def __init__(
        self,
        decode: Callable[[dict[str, Any]], dict[str, Any]],
        augmentation: Augmentation | None,
        batch_size: int,
        seed: int,
        rank: int,
        position: StreamPosition,
    ) -> None:
        self.decode, self.augmentation, self.batch_size = decode, augmentation, batch_size
        self.seed, self.rank, self.position = seed, rank, position

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        stream, _, skipped = self.position.stream()
        first = skipped * self.batch_size
        prefix = f"augment:{self.seed}:{self.position.epoch}:{self.rank}:{stream}"
        for index, sample in enumerate(islice(src, first, None), start=first):
            record = self.decode(sample)
            if self.augmentation is not None:
                record["image"] = self.augmentation(record["image"], random.Random(f"{prefix}:{index}"))
            yield record


class EpochCut:
    """``with_epoch`` shared over DataLoader workers: stream ``i`` of ``W`` yields its share of ``num_batches``,
    less the batches a resumed epoch already made."""

    def __init__(self, num_batches: int, position: StreamPosition) -> None:
        self.num_batches, self.position = num_batches, position

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        stream, num_streams, skipped = self.position.stream()
        yield from islice(src, max(0, stream_share(self.num_batches, stream, num_streams) - skipped))
