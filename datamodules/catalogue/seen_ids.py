"""The ids a catalogue read has seen, with the row of each first occurrence, in flat arrays.

Finding duplicate ids needs every id seen so far. Instead of a ``dict`` of id strings to rows (several Python objects
per product), this table keeps a 128-bit BLAKE2b digest of each id and its row in flat numpy arrays: 24 bytes a slot,
open addressing with linear probing, kept at most half full (shard memory at 1M products: BENCHMARKS.md). Two different ids share a digest
with probability ~n^2 / 2^129 (about 1e-27 at 10^8 ids), so a digest match is taken as the same id.

Example:
    >>> seen = SeenIds()
    >>> seen.first_row("sku-1", 1), seen.first_row("sku-2", 2), seen.first_row("sku-1", 3)
    (None, None, 1)
    >>> len(seen)
    2
"""

from __future__ import annotations

import hashlib

import numpy as np


class SeenIds:
    """Ids seen so far with their first row; :meth:`first_row` records an id or names where it was first seen.

    Args:
        capacity: Initial number of slots (rounded up to a power of two; the table doubles as it fills).
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        size = 1 << max(4, (capacity - 1).bit_length())
        self._keys = np.zeros((size, 2), dtype=np.uint64)
        self._rows = np.zeros(size, dtype=np.int64)  # 0 = empty slot (rows are 1-based)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def first_row(self, product_id: str, row: int) -> int | None:
        """``None`` when ``product_id`` is new (it is recorded with ``row``, which must be >= 1); else the row where it
        was first seen."""
        if row < 1:
            raise ValueError(f"rows are 1-based, got {row}")
        digest = hashlib.blake2b(product_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        high, low = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")
        slot = self._find(high, low)
        first = int(self._rows[slot])
        if first:
            return first
        self._keys[slot, 0], self._keys[slot, 1], self._rows[slot] = high, low, row
        self._count += 1
        if 2 * self._count > len(self._rows):
            self._grow()
        return None

    def _find(self, high: int, low: int) -> int:
        """The slot holding this digest, or the empty slot where it belongs."""
        mask = len(self._rows) - 1
        slot = high & mask
        keys, rows = self._keys, self._rows
        while rows[slot] and (int(keys[slot, 0]) != high or int(keys[slot, 1]) != low):
            slot = (slot + 1) & mask
        return slot

    def _grow(self) -> None:
        keys, rows = self._keys[self._rows > 0], self._rows[self._rows > 0]
        size = 2 * len(self._rows)
        self._keys = np.zeros((size, 2), dtype=np.uint64)
        self._rows = np.zeros(size, dtype=np.int64)
        for start in range(0, len(rows), 1 << 15):  # a chunk of Python ints at a time
            part = zip(
                keys[start : start + (1 << 15)].tolist(),
                rows[start : start + (1 << 15)].tolist(),
                strict=True,
            )
            for (high, low), row in part:
                slot = self._find(high, low)
                self._keys[slot, 0], self._keys[slot, 1], self._rows[slot] = high, low, row
