"""WebDataset streaming of product shards into training batches, for one or many GPUs.

The raw-input path (images decoded on the fly) reads the ``{split}-NNNNNN.tar`` shards written by
``datamodules.sharding`` (one record per product: ``jpg`` + ``json``, see ARCHITECTURE.md) and yields the
batch dict the LightningModule consumes. It follows the layout WebDataset's maintainers and open_clip use:

Training (``training=True``)
    Shards are drawn *with replacement* (``wds.ResampledShards``) by every rank and every DataLoader worker
    from its own deterministic random stream, seeded by ``(seed, epoch, rank, worker)``, so the shard order is
    reproducible for a seed and different every epoch. Shards are read by the shard codec's stage
    (``shard_io.tar_samples``, WebDataset's tar reader). Samples then pass a shuffle buffer (before decoding, so the buffer holds JPEG bytes, not tensors), are decoded, transformed,
    augmented (``augmentation``, e.g. a random resized crop + flip, seeded per sample) and batched inside the
    workers.
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
counts up from 0, or is pinned with ``ShardLoader.set_epoch``. The training loader is stateful
(``state_dict``/``load_state_dict``: epoch and batch), so Lightning resumes it exactly in the middle of an epoch.
The stages themselves live in ``datamodules/training_stream.py``.

Example:
    >>> train_count = manifest.count("train")  # doctest: +SKIP
    >>> loader = build_shard_pipeline(urls, transform, tree, batch_size=64, training=True,
    ...                               epoch_samples=train_count, num_workers=4)  # doctest: +SKIP
    >>> for batch in loader:  # doctest: +SKIP
    ...     batch["image"].shape, batch["category_ids"].shape
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from itertools import islice
from typing import Any

import torch
import torch.distributed
import torch.utils.data
import webdataset as wds

from clipita_core.tree import CategoryTree
from datamodules.raw_batches import ImageTransform, collate_records, decode_record
from datamodules.shard_io import ShardDecodeError as ShardDecodeError  # a bad record in the stream
from datamodules.shard_io import count_shard_keys, tar_samples
from datamodules.training_stream import (
    Augmentation,
    DecodeAugment,
    EpochCut,
    EpochResampledShards,
    EpochShuffle,
    ShardCycle,
    StreamPosition,
)

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
        total += count_shard_keys(url)
    return total


# ----------------------------------------------------------------------------------------------- stages


def _split_by_rank(src: Iterator[dict[str, str]], rank: int, world_size: int) -> Iterator[dict[str, str]]:
    yield from islice(src, rank, None, world_size)


# ----------------------------------------------------------------------------------------------- loader


def _as_is(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


class ShardLoader(wds.WebLoader):
    """``wds.WebLoader`` that numbers its epochs (the number seeds the shard and sample order) and, for training,
    can resume in the middle of one.

    Each iteration is one epoch. Attributes: ``num_batches`` (per-rank batches per epoch, ``None`` for the
    evaluation stream whose length depends on the shards), ``rank``, ``world_size``, ``epoch`` (of the last
    iteration started).

    ``state_dict`` / ``load_state_dict`` make it a stateful loader for Lightning, which keeps the state of the
    training loader in every checkpoint (``loops.fit_loop.state_dict.combined_loader``) and restores it before the
    resumed run's first iteration: ``{"epoch", "batches"}`` (the batches of that epoch handed out so far; the same
    on every rank, which move in lock-step). A resumed loader starts at that batch of that epoch and yields what
    the uninterrupted run would have yielded from there (``datamodules/training_stream.py``).
    """

    def __init__(self, dataset: wds.DataPipeline, position: StreamPosition, **loader_kwargs: Any) -> None:
        super().__init__(dataset, **loader_kwargs)
        self.position = position
        self.epoch = -1
        self.num_batches: int | None = None
        self.rank, self.world_size = 0, 1
        self._pinned: tuple[int, int] | None = None  # (epoch, first batch) of the next iteration
        self._handed_out = 0  # batches of the current epoch handed out (counting a resume's skipped ones)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration, from its first batch (later ones count up from it).

        Args:
            epoch: Epoch number, e.g. the trainer's current epoch after resuming.
        """
        self._pinned = (epoch, 0)

    def state_dict(self) -> dict[str, int | None]:
        """Where the stream is: ``epoch`` and the ``batches`` of it handed out (the next iteration's start when
        none has started since a ``set_epoch``/``load_state_dict``)."""
        if self._pinned is not None:
            epoch, batches = self._pinned
        elif self.epoch < 0:
            epoch, batches = 0, 0
        else:
            epoch, batches = self.epoch, self._handed_out
        return {"epoch": epoch, "batches": batches, "num_batches": self.num_batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``: its epoch from its ``batches``-th batch (the next epoch when that one was done).

        A state saved with another epoch length (another batch size, world size or ``epoch_samples``) cannot be
        resumed batch for batch: the stream then starts the next epoch, with a warning.
        """
        if self.num_batches is None:  # the evaluation stream has no position to restore
            return
        epoch, batches = int(state["epoch"]), int(state["batches"])
        saved_length = state.get("num_batches")
        if saved_length is not None and int(saved_length) != self.num_batches:
            warnings.warn(
                f"the checkpoint's training stream had {saved_length} batches per epoch, this one has "
                f"{self.num_batches} (batch size, world size or epoch_samples changed): resuming at the start of "
                f"epoch {epoch + 1 if batches else epoch}, not at batch {batches} of epoch {epoch}",
                stacklevel=2,
            )
            epoch, batches = (epoch + 1, 0) if batches else (epoch, 0)
        if batches >= self.num_batches:
            epoch, batches = epoch + 1, 0
        self._pinned = (epoch, batches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # A generator: the epoch only advances when iteration really starts (Lightning calls iter() once
        # just to check that the loader is iterable).
        epoch, first = (self.epoch + 1, 0) if self._pinned is None else self._pinned
        self._pinned = None
        self.epoch, self._handed_out = epoch, first
        self.position.set(epoch, first)  # read by the workers when their iteration starts
        for batch in super().__iter__():
            self._handed_out += 1
            yield batch

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
    augmentation: Augmentation | None = None,
    tokenizer: Any = None,
    attribute_names: Sequence[str] = (),
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
        augmentation: Training only: ``(image, rng) -> image`` applied to each decoded image (e.g.
            ``datamodules.augmentation.CropFlip``), its draws seeded per sample; None: none.
        tokenizer: The model's lexical tokenizer, or None: with one, batches carry ``lexical_tokens`` of each
            product's title + ``attribute_names`` values (``collate_records``).
        attribute_names: The catalogue's attribute names (the manifest's order).

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
    position = StreamPosition(0)
    num_batches: int | None = None
    if training:
        if epoch_samples is None:
            epoch_samples = count_shard_samples(urls)
        num_batches = training_steps_per_epoch(epoch_samples, batch_size, world_size)

    decode = partial(decode_record, transform=transform)
    collate = partial(collate_records, tree=tree, tokenizer=tokenizer, attribute_names=tuple(attribute_names))
    stages: list[Any]
    if training:
        if resampled:
            stages = [EpochResampledShards(urls, seed, rank, position), tar_samples]
        else:
            check_enough_shards(len(urls), world_size, num_workers)
            stages = [ShardCycle(urls, seed, rank, world_size, position, read=tar_samples)]
        if shuffle_buffer > 1:
            stages.append(EpochShuffle(shuffle_buffer, seed, rank, position))
        stages += [
            DecodeAugment(decode, augmentation, batch_size, seed, rank, position),
            wds.batched(batch_size, collation_fn=collate, partial=False),
            EpochCut(num_batches, position),
        ]
    else:
        stages = [
            wds.SimpleShardList(urls),
            partial(_split_by_rank, rank=rank, world_size=world_size),
            wds.split_by_worker,
            tar_samples,
            wds.map(decode),
            wds.batched(batch_size, collation_fn=collate, partial=True),
        ]
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
    loader = ShardLoader(wds.DataPipeline(*stages), position, **loader_kwargs)
    loader.rank, loader.world_size, loader.num_batches = rank, world_size, num_batches
    return loader
