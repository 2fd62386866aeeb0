"""The index folder's per-shard arrays: one set of files per input shard, written by whichever rank embedded it,
read back memory-mapped as one ``[N, ...]`` array (:class:`ShardedRows`).

Layout under ``<index>/shards/`` (``<stem>`` is the input shard's file name without ``.tar``)::

    meta.json                     what the shards were embedded with (checkpoint digest, shards' content hash,
                                  splits, feature or raw input); shards of another run are discarded, not mixed
    <stem>.embedding.npy          float32 [n, D], ClipIta.encode_product_for_retrieval as is (exact scoring)
    <stem>.embedding16.npy        float16 [n, D], the same rows rounded (the half-precision scan reads these)
    <stem>.<extra>.npy            any extra per-product arrays (:data:`EXTRA_ARRAYS`), row r = product r
    <stem>.products.parquet       the shard's product metadata (``shard_metadata.PRODUCT_COLUMNS``)
    <stem>.ids.npy                product ids, written last: its presence marks the shard done
                                  (every file under a temporary name, renamed: ``datamodules.shard_outputs``)

Row ``r`` of every file is the ``r``-th record of the input shard. The whole index is the concatenation of the
shards in split then manifest order, which is the row order of ``products.parquet``.

Extra arrays: register ``EXTRA_ARRAYS["name"] = fn`` where ``fn(products: DataFrame) -> ndarray`` returns one row
per product of a shard (e.g. lexical token ids of the titles for a BM25 signal). They are written beside the
embeddings, listed in ``index.json`` (``files.arrays``) and read with ``SearchIndex.array("name")``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clipita_core.index_info import SHARD_META, SHARDS_DIR, IndexShard
from clipita_core.manifest import Manifest
from datamodules.shard_outputs import IDS, output_shard_done, temporary, write_output_shard, write_text

EMBEDDING = "embedding"  # float32
EMBEDDING16 = "embedding16"  # float16
PRODUCTS = "products"
BASE_ARRAYS = (EMBEDDING, EMBEDDING16)

# name -> fn(the shard's products frame) -> one row per product; written as <stem>.<name>.npy
EXTRA_ARRAYS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {}


def manifest_index_shards(manifest: Manifest, splits: Sequence[str]) -> list[IndexShard]:
    """The input shards of ``splits`` in index row order (split order, then the manifest's shard order)."""
    out = []
    for split in splits:
        info = manifest.split(split)
        for name in info.shards:
            entry = info.shard_files.get(name)
            count = int(entry.count) if entry is not None and entry.count is not None else -1
            if count < 0:
                raise ValueError(
                    f"the manifest records no count for shard {name!r}; shard the catalogue again"
                )
            out.append(IndexShard(split, name, count))
    return out


class IndexShards:
    """The ``shards/`` folder of an index: which shards are done, writing one, reading all of them.

    Args:
        folder: the index folder (the shards live in ``folder/shards``).
        shards: every input shard of the index, in row order.
        arrays: the per-shard arrays besides the ids (default: the embeddings and the registered extras).
    """

    def __init__(self, folder: str | Path, shards: Sequence[IndexShard], arrays: Sequence[str] | None = None):
        self.folder = Path(folder) / SHARDS_DIR
        self.shards = list(shards)
        self.arrays = tuple(arrays) if arrays is not None else (*BASE_ARRAYS, *EXTRA_ARRAYS)

    def path(self, shard: str, array: str) -> Path:
        suffix = ".parquet" if array == PRODUCTS else ".npy"
        return self.folder / f"{Path(shard).stem}.{array}{suffix}"

    def done(self, shard: str) -> bool:
        return output_shard_done(lambda array: self.path(shard, array), (*self.arrays, PRODUCTS))

    def missing(self) -> list[str]:
        return [s.name for s in self.shards if not self.done(s.name)]

    def prepare(self, meta: dict[str, Any]) -> bool:
        """Create the folder for shards embedded with ``meta``; shards of other meta are deleted first.

        Call on one rank (global rank 0) before any rank writes. Returns whether earlier shards were discarded.
        """
        meta_path = self.folder / SHARD_META
        discarded = False
        if meta_path.is_file() and json.loads(meta_path.read_text()) != meta:
            for path in self.folder.iterdir():
                if path.is_file():
                    path.unlink()
            discarded = True
        self.folder.mkdir(parents=True, exist_ok=True)
        if not meta_path.is_file():
            write_text(meta_path, json.dumps(meta, indent=1, sort_keys=True))
        return discarded

    def write_shard(
        self, shard: str, ids: Sequence[str], arrays: dict[str, np.ndarray], products: pd.DataFrame
    ) -> None:
        """Write one shard's arrays and metadata (each under a temporary name, renamed), the ids last."""
        for name in self.arrays:
            if name not in arrays:
                raise ValueError(f"index shard {shard!r} lacks array {name!r}")
            if len(arrays[name]) != len(ids):
                raise ValueError(
                    f"index shard {shard!r}: {name} has {len(arrays[name])} rows, {len(ids)} ids"
                )
        write_output_shard(
            lambda array: self.path(shard, array),
            ids,
            {name: arrays[name] for name in self.arrays},
            {PRODUCTS: lambda tmp: products.to_parquet(tmp, index=False)},
        )

    def rows(self, array: str) -> ShardedRows:
        """Every shard's ``array`` as one read-only ``[N, ...]`` array (memory-mapped, never loaded whole)."""
        from datamodules.features import PADDED

        parts = [np.load(self.path(s.name, array), mmap_mode="r") for s in self.shards]
        return ShardedRows(parts, pad=PADDED.get(array))

    def ids(self, shard: str) -> list[str]:
        return [str(x) for x in np.load(self.path(shard, IDS))]


class ShardedRows:
    """Read-only row access over several memory-mapped ``.npy`` files as if they were one ``[N, ...]`` array.

    Supports ``len``, ``shape``, ``dtype``, slices with step 1 (a view of the file when the slice lies inside one
    shard, else a copy of just those rows) and integer-array indexing (any order): what the chunked scans and
    FAISS read. Empty shards are skipped. With ``pad`` (e.g. ``-1`` for token ids), 2-D shards of different widths
    read as the widest, narrower rows padded with ``pad`` (``datamodules.features.PADDED``).
    """

    def __init__(self, parts: Sequence[np.ndarray], pad: Any = None) -> None:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("an index with no products")
        row_shapes = {p.shape[1:] for p in parts}
        if len(row_shapes) != 1 and (pad is None or any(len(r) != 1 for r in row_shapes)):
            raise ValueError(f"index shards disagree on the row shape: {sorted(row_shapes)}")
        self.parts = parts
        self.pad = pad
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.dtype = parts[0].dtype
        row_shape = parts[0].shape[1:] if len(row_shapes) == 1 else (max(r[0] for r in row_shapes),)
        self.shape = (int(self.offsets[-1]), *row_shape)
        self.ndim = len(self.shape)

    def _fit(self, block: np.ndarray) -> np.ndarray:
        if block.shape[1:] == self.shape[1:]:
            return block
        out = np.full((len(block), *self.shape[1:]), self.pad, dtype=self.dtype)
        out[:, : block.shape[1]] = block
        return out

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("ShardedRows slices must have step 1")
            stop = max(start, stop)
            first = int(np.searchsorted(self.offsets, start, side="right") - 1)
            blocks = []
            s = first
            while s < len(self.parts) and self.offsets[s] < stop:
                lo, hi = max(start, self.offsets[s]), min(stop, self.offsets[s + 1])
                blocks.append(self._fit(self.parts[s][lo - self.offsets[s] : hi - self.offsets[s]]))
                s += 1
            if len(blocks) == 1:
                return blocks[0]
            if not blocks:
                return np.empty((0, *self.shape[1:]), dtype=self.dtype)
            return np.concatenate(blocks)
        index = np.asarray(key, dtype=np.int64)
        if index.ndim == 0:
            return self[int(index) : int(index) + 1][0]
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        out = np.empty((len(index), *self.shape[1:]), dtype=self.dtype)
        shard = np.searchsorted(self.offsets, index, side="right") - 1
        for s in np.unique(shard):
            picked = np.flatnonzero(shard == s)
            out[picked] = self._fit(self.parts[s][index[picked] - self.offsets[s]])
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[0 : len(self)]
        return out if dtype is None else out.astype(dtype)


def merge_products(shards: IndexShards, out: Path) -> list[str]:
    """Concatenate the shards' product tables into ``out`` (one shard in memory at a time); returns the ids.

    Raises:
        ValueError: a product id repeats across shards.
    """
    import pyarrow.parquet as pq

    ids: list[str] = []
    seen: set[str] = set()
    writer = None
    tmp = temporary(out)
    try:
        for shard in shards.shards:
            table = pq.read_table(shards.path(shard.name, PRODUCTS))
            if table.num_rows == 0:
                continue
            shard_ids = [str(x) for x in table.column("id").to_pylist()]
            repeated = [x for x in shard_ids if x in seen]
            if repeated or len(set(shard_ids)) != len(shard_ids):
                example = (
                    repeated[:5] or pd.Series(shard_ids)[pd.Series(shard_ids).duplicated()].head(5).tolist()
                )
                raise ValueError(f"product ids repeat across shards, e.g. {example}")
            seen.update(shard_ids)
            ids.extend(shard_ids)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
        if writer is None:
            raise ValueError("the index has no products (empty splits?)")
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, out)
    return ids
