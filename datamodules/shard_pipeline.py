"""WebDataset streaming of product shards into training batches, for one or many GPUs.

The raw-input path (images decoded on the fly) reads the ``{split}-NNNNNN.tar`` shards written by
``datamodules.sharding`` (one record per product: ``jpg`` + ``json``, see ARCHITECTURE.md) and yields the
batch dict the LightningModule consumes. It follows the layout WebDataset's maintainers and open_clip use:

Training (``training=True``)
    Shards are drawn *with replacement* (``wds.ResampledShards``) by every rank and every DataLoader worker
    from its own deterministic random stream, seeded by ``(seed, epoch, rank, worker)``, so the shard order is
    reproducible for a seed and different every epoch. Shards are read by WebDataset's tar reader. Samples then pass a
    shuffle buffer (before decoding, so the buffer holds JPEG bytes, not tensors), are decoded, transformed
    and batched inside the workers.
    Because the stream never runs dry, the epoch is cut (WebDataset's ``with_epoch``) to exactly
    ``n = ceil(epoch_samples / (world_size * batch_size))`` full batches on *every* rank, however uneven the
    shards are: DDP steps stay in lock-step and the per-step gradient all-reduce never waits for a rank that
    has run out of data. ``epoch_samples`` is the split's count from ``manifest.json``. The cut is made inside
    the workers, each taking its share of ``n`` (shares differ by at most one), rather than on the loader:
    a loader-level ``with_epoch`` would also decode the batches the workers prefetched and then drop them at
    every epoch end (up to ``num_workers * prefetch_factor`` batches, a large part of a small epoch).

    With ``resampled=False`` every rank and worker instead cycles over its own disjoint slice of the
    (per-epoch reshuffled) shard list; the same cut fixes the step count. That needs at least
    ``world_size * num_workers`` shards (``check_enough_shards``).

Validation / test (``training=False``)
    Every shard is read exactly once across all ranks and workers: the list is split by rank
    (``shards[rank::world_size]``), then by worker, with no resampling and no ``with_epoch``; the last batch
    may be partial. Ranks therefore get uneven batch counts when shards are uneven (a rank can even get none).
    That is fine here because our evaluation does no collective call per step: the metrics accumulate
    locally and synchronise their states once, in ``compute()``. Do not log with ``sync_dist=True`` per
    evaluation step on this path.

Epochs: each iteration of the returned loader is one epoch; the epoch number (which seeds the shard order)
counts up from 0, or is pinned with ``ShardLoader.set_epoch`` (e.g. to the trainer's epoch after a resume).

Example:
    >>> train_count = manifest.count("train")  # doctest: +SKIP
    >>> loader = build_shard_pipeline(urls, transform, tree, batch_size=64, training=True,
    ...                               epoch_samples=train_count, num_workers=4)  # doctest: +SKIP
    >>> for batch in loader:  # doctest: +SKIP
    ...     batch["image"].shape, batch["category_ids"].shape

Why one file over ~400 lines: resampled shards, the shared epoch, per-rank/per-worker splitting and the fixed step
count per rank are one mechanism (equal steps on every DDP rank) that has to change together.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import random
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from itertools import count, islice
from typing import Any

import torch
import torch.distributed
import torch.utils.data
import webdataset as wds
from PIL import Image
from torch import Tensor

from clipita_core.paths import format_path
from clipita_core.tree import CategoryTree
from datamodules.records import decode_sample

ImageTransform = Callable[[Image.Image], Tensor]


class ShardDecodeError(RuntimeError):
    """A shard record could not be decoded; the message names the shard URL and the sample key."""


# ----------------------------------------------------------------------------------------------- ranks


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """The (rank, world size) this process reads for.

    Explicit values win; otherwise ``torch.distributed`` when it is initialised; otherwise the ``RANK`` /
    ``WORLD_SIZE`` environment variables when both are set; otherwise a single process ``(0, 1)``.

    Args:
        rank: Explicit rank (tests, or a launcher that knows better).
        world_size: Explicit world size; required together with ``rank``.

    Returns:
        ``(rank, world_size)``.
    """
    if (rank is None) != (world_size is None):
        raise ValueError("pass both rank and world_size, or neither")
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        elif "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        else:
            rank, world_size = 0, 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world size {world_size}")
    return rank, world_size


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def check_enough_shards(num_shards: int, world_size: int, num_workers: int) -> None:
    """Fail early when shards cannot be split without resampling: every rank's every worker needs one.

    Args:
        num_shards: Number of shard URLs.
        world_size: Number of ranks.
        num_workers: DataLoader workers per rank (0 counts as 1: the main process reads).

    Raises:
        ValueError: With the numbers, when ``num_shards < world_size * max(1, num_workers)``.
    """
    readers = max(1, num_workers)
    needed = world_size * readers
    if num_shards < needed:
        raise ValueError(
            f"non-resampled training splits shards over world_size x num_workers = {world_size} x "
            f"{readers} = {needed} readers, but only {num_shards} shard(s) were given; use resampled=True, "
            f"fewer workers, or reshard with a smaller shard_size"
        )


def training_steps_per_epoch(epoch_samples: int, batch_size: int, world_size: int = 1) -> int:
    """Batches every rank takes per training epoch: ``ceil(epoch_samples / (world_size * batch_size))``.

    Args:
        epoch_samples: Samples per epoch across all ranks (the split's manifest count).
        batch_size: Per-rank batch size.
        world_size: Number of ranks.

    Returns:
        The per-rank step count (at least 1).
    """
    if epoch_samples < 1 or batch_size < 1 or world_size < 1:
        raise ValueError(
            "need positive epoch_samples, batch_size and world_size, "
            f"got {epoch_samples}, {batch_size}, {world_size}"
        )
    return max(1, math.ceil(epoch_samples / (world_size * batch_size)))


def count_shard_samples(urls: Sequence[str]) -> int:
    """Count the records in local tar shards by reading their headers (no decoding).

    Args:
        urls: Local paths of ``.tar`` shards.

    Returns:
        Number of distinct sample keys over all shards.
    """
    total = 0
    for url in urls:
        if not os.path.isfile(url):
            raise ValueError(f"cannot count samples of {url!r}: not a local file; pass epoch_samples")
        keys: set[str] = set()
        with tarfile.open(url, mode="r:*") as archive:
            for member in archive:
                if member.isreg():
                    directory, _, name = member.name.rpartition("/")
                    keys.add(f"{directory}/{name.split('.', 1)[0]}")
        total += len(keys)
    return total


# ----------------------------------------------------------------------------------------------- records


def decode_record(sample: Mapping[str, Any], transform: ImageTransform) -> dict[str, Any]:
    """Decode one raw shard record (``jpg`` + ``json`` bytes) into tensors and plain values.

    Args:
        sample: The raw WebDataset sample: ``__key__``, ``__url__``, ``jpg`` and ``json`` bytes.
        transform: PIL RGB image -> float tensor ``[3, H, W]`` (resize, normalise...).

    Returns:
        ``{"image", "title", "attributes", "product_id", "category_path"}``.

    Raises:
        ShardDecodeError: Naming the shard URL and the sample key, on any failure (missing field, broken
            JPEG or JSON, a transform error).
    """
    key, url = sample.get("__key__"), sample.get("__url__")
    try:
        missing = [field for field in ("jpg", "json") if field not in sample]
        if missing:
            raise KeyError(f"record has no {' or '.join(missing)} field (fields: {sorted(sample)})")
        with Image.open(io.BytesIO(sample["jpg"])) as raw:
            image = raw.convert("RGB")
        record = decode_sample(sample)  # the one record codec: original id, category as a tuple of names
        return {
            "image": transform(image),
            "title": record.title,
            "attributes": dict(record.attributes),
            "product_id": record.id,
            "category_path": record.category,
        }
    except Exception as exc:
        raise ShardDecodeError(
            f"cannot decode sample {key!r} of shard {url}: {type(exc).__name__}: {exc}"
        ) from exc


def collate_records(samples: Sequence[Mapping[str, Any]], tree: CategoryTree) -> dict[str, Any]:
    """Stack decoded records into the batch dict of ARCHITECTURE.md.

    Args:
        samples: Outputs of ``decode_record``.
        tree: The category table; ``category_ids`` index into it.

    Returns:
        ``image`` float ``[B,3,H,W]``, ``title`` ``list[str]`` (``""`` when missing), ``title_mask`` bool ``[B]``
        (True = the product has a title), ``attributes`` ``list[dict]``, ``product_id``
        ``list[str]``, ``category_ids`` LongTensor ``[B, L]`` (ancestor per level, ``-1`` padded) and
        ``category_path`` ``list[tuple[str, ...]]``.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    paths = [tuple(s["category_path"]) for s in samples]
    unknown = [(s["product_id"], p) for s, p in zip(samples, paths, strict=True) if p not in tree]
    if unknown:
        product_id, path = unknown[0]
        raise KeyError(f"product {product_id!r} has category {format_path(path)!r}, which is not in the tree")
    return {
        # default_collate stacks straight into shared memory inside a DataLoader worker: no extra copy when
        # the batch is handed to the main process.
        "image": torch.utils.data.default_collate([s["image"] for s in samples]),
        "title": [s["title"] for s in samples],
        "title_mask": torch.tensor([bool(s["title"]) for s in samples], dtype=torch.bool),
        "attributes": [dict(s["attributes"]) for s in samples],
        "product_id": [s["product_id"] for s in samples],
        "category_ids": torch.from_numpy(tree.ancestor_matrix(paths)),
        "category_path": paths,
    }


# ----------------------------------------------------------------------------------------------- stages


class SharedEpoch:
    """An epoch number shared with DataLoader worker processes (they read it when an epoch starts).

    Args:
        epoch: Initial value.
    """

    def __init__(self, epoch: int = 0) -> None:
        self._value = multiprocessing.Value("i", epoch)

    def get(self) -> int:
        return int(self._value.value)

    def set(self, epoch: int) -> None:
        self._value.value = epoch


def _seed_for(rank: int) -> int:
    worker, _ = _worker()
    return rank * 1000 + worker


class _EpochResampledShards(wds.ResampledShards):
    """``wds.ResampledShards`` seeded by ``(seed, epoch, rank, worker)`` with the epoch taken from a shared
    counter, so freshly started (or persistent) workers agree with the main process on the epoch."""

    def __init__(self, urls: list[str], seed: int, rank: int, epoch: SharedEpoch) -> None:
        super().__init__(urls, seed=seed, worker_seed=partial(_seed_for, rank), deterministic=True)
        self.shared_epoch = epoch

    def __iter__(self) -> Iterator[dict[str, str]]:
        self.epoch = self.shared_epoch.get() - 1  # the parent increments it before seeding
        yield from super().__iter__()


class _ShardCycle(torch.utils.data.IterableDataset):
    """Non-resampled training source: the epoch's shuffled shard list (the same on every rank), split by rank
    and worker, read over and over (reshuffled each pass) as an endless sample stream."""

    def __init__(self, urls: list[str], seed: int, rank: int, world_size: int, epoch: SharedEpoch) -> None:
        super().__init__()
        self.urls, self.seed, self.rank, self.world_size, self.epoch = urls, seed, rank, world_size, epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker()
        epoch = self.epoch.get()
        for pass_number in count():
            order = list(self.urls)
            random.Random(f"shards:{self.seed}:{epoch}:{pass_number}").shuffle(order)
            mine = order[self.rank :: self.world_size][worker::num_workers]
            produced = 0
            for sample in tar_samples(iter([{"url": url} for url in mine])):
                produced += 1
                yield sample
            if produced == 0:
                raise ValueError(f"rank {self.rank} worker {worker} read no samples from its shards {mine}")


def tar_samples(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Shard URLs -> raw WebDataset samples (``__key__``, ``__url__`` and one bytes entry per extension).

    WebDataset's own tar reader and sample grouping; a truncated or corrupt shard raises ``ShardDecodeError``
    naming the file instead of a bare ``tarfile`` error.

    Args:
        src: Iterator of ``{"url": ...}`` dicts (what the shard-list stages yield).
    """
    for item in src:
        url = item["url"]
        try:
            yield from wds.tarfile_samples(iter([dict(item)]))
        except (tarfile.TarError, OSError, ValueError) as err:
            raise ShardDecodeError(f"cannot read shard {url}: {err}") from err


def _split_by_rank(src: Iterator[dict[str, str]], rank: int, world_size: int) -> Iterator[dict[str, str]]:
    yield from islice(src, rank, None, world_size)


def _worker_epoch(src: Iterator[dict[str, Any]], num_batches: int) -> Iterator[dict[str, Any]]:
    """``with_epoch`` shared over DataLoader workers: worker ``i`` of ``W`` yields its share of
    ``num_batches`` (shares differ by at most one)."""
    worker, num_workers = _worker()
    yield from islice(src, num_batches // num_workers + (1 if worker < num_batches % num_workers else 0))


class _EpochShuffle:
    """A sample shuffle buffer whose RNG is seeded by ``(seed, epoch, rank, worker)``."""

    def __init__(self, bufsize: int, seed: int, rank: int, epoch: SharedEpoch) -> None:
        self.bufsize, self.seed, self.rank, self.epoch = bufsize, seed, rank, epoch

    def __call__(self, src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        worker, _ = _worker()
        rng = random.Random(f"samples:{self.seed}:{self.epoch.get()}:{self.rank}:{worker}")
        # A small initial fill: the buffer restarts at every epoch, and shards are drawn at random anyway.
        return wds.shuffle(self.bufsize, initial=max(1, self.bufsize // 10), rng=rng)(src)


# ----------------------------------------------------------------------------------------------- loader


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


class ShardLoader(wds.WebLoader):
    """``wds.WebLoader`` that numbers its epochs (the number seeds the shard and sample order).

    Each iteration is one epoch. Attributes: ``num_batches`` (per-rank batches per epoch, ``None`` for the
    evaluation stream whose length depends on the shards), ``rank``, ``world_size``, ``epoch`` (of the last
    iteration started).
    """

    def __init__(self, dataset: wds.DataPipeline, shared_epoch: SharedEpoch, **loader_kwargs: Any) -> None:
        super().__init__(dataset, **loader_kwargs)
        self.shared_epoch = shared_epoch
        self.epoch = -1
        self.num_batches: int | None = None
        self.rank, self.world_size = 0, 1
        self._pinned_epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration (later ones count up from it).

        Args:
            epoch: Epoch number, e.g. the trainer's current epoch after resuming.
        """
        self._pinned_epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # A generator: the epoch only advances when iteration really starts (Lightning calls iter() once
        # just to check that the loader is iterable).
        epoch = self.epoch + 1 if self._pinned_epoch is None else self._pinned_epoch
        self._pinned_epoch = None
        self.epoch = epoch
        self.shared_epoch.set(epoch)
        yield from super().__iter__()

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("the evaluation stream has no fixed length: it depends on this rank's shards")
        return self.num_batches


def build_shard_pipeline(
    urls: list[str],
    transform: ImageTransform,
    tree: CategoryTree,
    batch_size: int,
    *,
    training: bool,
    epoch_samples: int | None = None,
    shuffle_buffer: int = 1000,
    seed: int = 0,
    num_workers: int = 0,
    resampled: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    prefetch_factor: int | None = None,
    pin_memory: bool = False,
) -> ShardLoader:
    """Build the streaming loader over product shards (see the module docstring for the layout).

    Args:
        urls: Shard paths or URLs (``{split}-NNNNNN.tar``).
        transform: PIL RGB image -> normalised float tensor ``[3, H, W]``; must be picklable for workers.
        tree: The category table (``category_ids`` index into it).
        batch_size: Per-rank batch size.
        training: Training stream (resampled, shuffled, fixed step count, full batches) or evaluation
            stream (every shard once over all ranks and workers, last batch partial).
        epoch_samples: Training only: samples per epoch over all ranks, normally the split's count in
            ``manifest.json``; ``None`` counts the records of local shards.
        shuffle_buffer: Training only: size of the sample shuffle buffer (``<= 1``: no sample shuffle).
        seed: Seed of the shard and sample order (combined with epoch, rank and worker).
        num_workers: DataLoader worker processes per rank (persistent when > 0).
        resampled: Training only: draw shards with replacement (default) or cycle over a disjoint slice
            per rank and worker (needs ``len(urls) >= world_size * max(1, num_workers)``).
        rank: Override of this process's rank (default: ``torch.distributed``, then ``RANK``).
        world_size: Override of the world size (give both or neither).
        prefetch_factor: Batches prefetched per worker (DataLoader default when ``None``).
        pin_memory: DataLoader ``pin_memory``.

    Returns:
        A ``ShardLoader`` yielding batch dicts (``collate_records``); ``len()`` is the per-rank step count of
        a training epoch.
    """
    urls = [str(u) for u in urls]
    if not urls:
        raise ValueError("no shard URLs given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rank, world_size = resolve_rank(rank, world_size)
    shared_epoch = SharedEpoch(0)
    num_batches: int | None = None
    if training:
        if epoch_samples is None:
            epoch_samples = count_shard_samples(urls)
        num_batches = training_steps_per_epoch(epoch_samples, batch_size, world_size)

    stages: list[Any]
    if training:
        if resampled:
            stages = [_EpochResampledShards(urls, seed, rank, shared_epoch), tar_samples]
        else:
            check_enough_shards(len(urls), world_size, num_workers)
            stages = [_ShardCycle(urls, seed, rank, world_size, shared_epoch)]
        if shuffle_buffer > 1:
            stages.append(_EpochShuffle(shuffle_buffer, seed, rank, shared_epoch))
    else:
        stages = [
            wds.SimpleShardList(urls),
            partial(_split_by_rank, rank=rank, world_size=world_size),
            wds.split_by_worker,
            tar_samples,
        ]
    stages += [
        wds.map(partial(decode_record, transform=transform)),
        wds.batched(batch_size, collation_fn=partial(collate_records, tree=tree), partial=not training),
    ]
    if num_batches is not None:
        stages.append(partial(_worker_epoch, num_batches=num_batches))
    loader_kwargs: dict[str, Any] = {
        "batch_size": None,  # batches are made inside the workers
        "collate_fn": _as_is,  # not torch's default_convert, which turns the category_path tuples into lists
        "shuffle": False,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "pin_memory": pin_memory,
    }
    if num_workers > 0 and prefetch_factor is not None:
        loader_kwargs["prefetch_factor"] = prefetch_factor
    loader = ShardLoader(wds.DataPipeline(*stages), shared_epoch, **loader_kwargs)
    loader.rank, loader.world_size, loader.num_batches = rank, world_size, num_batches
    return loader
