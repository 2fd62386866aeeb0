"""Reading a split's rows out of the feature store: :class:`FeatureSplit`, the map-style dataset training and
evaluation draw batches from.

A split is a list of input shards; its feature rows live in one ``.npy`` file per shard, array and store
(``datamodules.features``). Split position ``i`` falls in shard ``s`` where ``offsets[s] <= i < offsets[s + 1]``,
at row ``i - offsets[s]`` of that shard's files: a batch is grouped by shard and each run of consecutive rows is
one positional read.

Why ``pread`` and not memory maps: a memory-mapped page that training touches stays in the rank's resident set
until the kernel needs it back, so an epoch over a memory-mapped store grows RSS to the store's size. Positional
reads keep each rank's resident memory at a batch, a few open file handles (an LRU sized from the process's
descriptor limit, reopened in each forked DataLoader worker), the per-shard headers and the category table.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from clipita_core.tree import CategoryTree
from datamodules.features import IDS, LEXICAL_TOKENS, PADDED, FeatureCacheError, FeatureStore
from datamodules.lexical_store import document_counts

# feature-store array -> batch key (ARCHITECTURE.md)
BATCH_KEYS = {
    "image": "image_features",
    "title": "title_features",
    "title_mask": "title_mask",
    "attributes": "attribute_features",
    "attribute_mask": "attribute_mask",
}


class _NpyRows:
    """Rows of one ``.npy`` file read with ``os.pread`` (no memory map, no full load)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(handle)
            self.offset = handle.tell()
        if fortran:
            raise FeatureCacheError(f"{self.path!r} is Fortran-ordered; rebuild the cache")
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    def read(self, fd: int, rows: np.ndarray) -> np.ndarray:
        """``rows`` must be sorted ascending; consecutive runs are read with one call each."""
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        if len(rows) == 0 or self.row_bytes == 0:
            return out
        n = len(rows)
        flat = out.reshape(n, -1).view(np.uint8)
        # one row per shard is the common case of a random batch over many shards: no numpy run-finding for it
        bounds = [0, n] if n == 1 else [0, *(np.flatnonzero(np.diff(rows) != 1) + 1).tolist(), n]
        for start, stop in zip(bounds[:-1], bounds[1:]):  # noqa: B905 - same length by construction
            size = (stop - start) * self.row_bytes
            data = os.pread(fd, size, self.offset + int(rows[start]) * self.row_bytes)
            if len(data) != size:
                raise FeatureCacheError(f"{self.path!r} is truncated; delete the cache and encode again")
            flat[start:stop] = np.frombuffer(data, dtype=np.uint8).reshape(stop - start, -1)
        return out


def _handle_capacity() -> int:
    """Open descriptors a reader may keep: half the process's soft limit, at most 8192 (at least 64). A random
    batch touches a row in most shards, so fewer handles than feature files means an open/close per row (measured:
    a 1M-product training epoch over 640 shards x 7 arrays took 2.2x the time per product of 100k with 64)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):  # no resource module (Windows)
        return 64
    if soft == resource.RLIM_INFINITY:
        return 8192
    return max(64, min(8192, soft // 2))


class _Handles:
    """A per-process LRU of open file descriptors (a store may have thousands of shard files)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity, self.pid = capacity or _handle_capacity(), os.getpid()
        self.open: OrderedDict[str, int] = OrderedDict()

    def fd(self, path: str) -> int:
        if self.pid != os.getpid():  # a forked DataLoader worker: open its own descriptors
            self.pid, self.open = os.getpid(), OrderedDict()
        if path in self.open:
            self.open.move_to_end(path)
            return self.open[path]
        if len(self.open) >= self.capacity:
            _, old = self.open.popitem(last=False)
            os.close(old)
        self.open[path] = os.open(path, os.O_RDONLY)
        return self.open[path]

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity, "pid": -1, "open": OrderedDict()}


class FeatureSplit(Dataset):
    """Map-style dataset over one split's feature shards; items are batch-dict rows (ARCHITECTURE.md).

    Only per-shard headers and the category table are held in memory; rows are read when asked for.
    ``__getitems__`` reads a whole batch with one positional read per run of consecutive rows per file.

    Args:
        stores: the complete feature stores (image and/or text).
        shards: ``(name, count)`` of the split's input shards, in loader order.
        tree: the category table (``category_ids`` rows are its ancestor ids).
    """

    def __init__(
        self, stores: Sequence[FeatureStore], shards: Sequence[tuple[str, int]], tree: CategoryTree
    ) -> None:
        self.stores = list(stores)
        self.shard_names = [name for name, _ in shards]
        self.offsets = np.cumsum([0] + [count for _, count in shards])
        self.ancestors = torch.from_numpy(tree.ancestor_matrix(tree.paths)) if len(tree) else None
        self.columns: dict[str, list[_NpyRows]] = {}
        for store in self.stores:
            for array in (*store.arrays, IDS):
                if array in self.columns and array == IDS:
                    continue
                self.columns[array] = [_NpyRows(store.path(name, array)) for name in self.shard_names]
        for column in self.columns.values():
            for shard, rows, expected in zip(self.shard_names, column, np.diff(self.offsets), strict=True):
                if rows.shape[0] != expected:
                    raise FeatureCacheError(
                        f"{rows.path!r} has {rows.shape[0]} rows but shard {shard!r} has {expected} products"
                    )
        self.handles = _Handles()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, array: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows ``indices`` (split positions, any order) of one stored array."""
        indices = np.asarray(indices, dtype=np.int64)
        column = self.columns[array]
        if array in PADDED:  # rows of every shard padded to the split's widest (equal shapes collate)
            width = max([1, *(c.row_shape[0] for c in column)])
            out = np.full((len(indices), width), PADDED[array], dtype=column[0].dtype)
        else:
            out = np.empty((len(indices), *column[0].row_shape), dtype=column[0].dtype)
        if len(indices) == 0:
            return out
        if indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"index out of range for a split of {len(self)} products")
        shard = np.searchsorted(self.offsets, indices, side="right") - 1
        order = np.lexsort((indices, shard))
        sorted_shard = shard[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_shard)) + 1]
        for start, stop in zip(starts, np.r_[starts[1:], len(order)], strict=True):
            s = int(sorted_shard[start])
            picked = order[start:stop]
            rows = indices[picked] - self.offsets[s]
            npy = column[s]
            values = npy.read(self.handles.fd(npy.path), rows)
            if array in PADDED:
                out[picked, : values.shape[1]] = values
            else:
                out[picked] = values
        return out

    def batch(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch dict of ``indices`` (already collated)."""
        out: dict[str, Any] = {}
        for array, key in BATCH_KEYS.items():
            if array in self.columns:
                values = self.read(array, indices)
                tensor = torch.from_numpy(values)
                out[key] = tensor if values.dtype == np.bool_ else tensor.float()
        if LEXICAL_TOKENS in self.columns:
            out[LEXICAL_TOKENS] = torch.from_numpy(self.read(LEXICAL_TOKENS, indices).astype(np.int64))
        out["product_id"] = [str(x) for x in self.read(IDS, indices)]
        out["category_ids"] = self._category_ids(self.read("category", indices))
        return out

    def _category_ids(self, nodes: np.ndarray) -> torch.Tensor:
        if self.ancestors is None:
            return torch.full((len(nodes), 0), -1, dtype=torch.long)
        return self.ancestors[torch.from_numpy(nodes.astype(np.int64))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        batch = self.batch([int(i)])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        batch = self.batch(indices)
        return [{k: v[n] for k, v in batch.items()} for n in range(len(indices))]

    # whole-split views (the test gallery, the category-balanced sampler): O(split) memory, built on demand
    @property
    def product_id(self) -> list[str]:
        return [str(x) for x in self.read(IDS, np.arange(len(self)))]

    @property
    def category_nodes(self) -> torch.Tensor:
        return torch.from_numpy(self.read("category", np.arange(len(self))).astype(np.int64))

    @property
    def category_ids(self) -> torch.Tensor:
        return self._category_ids(self.read("category", np.arange(len(self))))

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """Every feature of the split as float32 tensors (small galleries only: loads the whole split)."""
        return self.batch(np.arange(len(self))) if len(self) else {}

    def lexical_statistics(self, num_buckets: int, chunk_size: int = 65536) -> dict[str, Any] | None:
        """BM25 corpus statistics of this split's token rows (None without a token store): ``doc_freq``
        (``[num_buckets]`` float32: rows holding each bucket), ``num_docs`` and ``avg_len`` (tokens per row).
        Streams ``chunk_size`` rows at a time: memory is a chunk plus the ``num_buckets`` counts."""
        if LEXICAL_TOKENS not in self.columns:
            return None
        chunks = (
            self.read(LEXICAL_TOKENS, np.arange(start, min(start + chunk_size, len(self))))
            for start in range(0, len(self), chunk_size)
        )
        return document_counts(chunks, num_buckets)

    def iter_chunks(self, chunk_size: int = 65536):
        """The split in order, ``chunk_size`` products at a time (batch dicts): evaluation at any scale."""
        for start in range(0, len(self), chunk_size):
            yield self.batch(np.arange(start, min(start + chunk_size, len(self))))
