"""Reusing encoded rows across feature stores: a product is encoded once per encoder, whatever the split.

A feature store belongs to one set of input shards (``features.products_fingerprint``), so another split seed or
``pseudo_novel_fraction`` makes a new store. The products are the same, though: each feature shard keeps a per-row
``<shard>.digest.npy`` (``S16``: the first 16 bytes of a sha256 over the product's original id and the record
content its encoder reads, less its split: the ``jpg`` bytes for an image store; title, attributes and category as
JSON for a text store). When a new store of the same encoder (same ``meta`` but for the products' fingerprint)
is built under the same features root, every input shard whose products are *all* found in the complete stores
there is written by copying their rows (a text store's ``category`` column is recomputed from the record against
the new manifest's category table) instead of running the encoders.

Stores written before digests existed get their ``digest.npy`` files back-filled once, from their input shards,
when a sibling shard folder (``<shards root>/*/manifest.json``) has the store's products' fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipita_core.manifest import Manifest
from datamodules.features import (
    COMPLETE_NAME,
    DIGEST,
    IDS,
    META_NAME,
    PADDED,
    FeatureStore,
    manifest_shards,
    products_fingerprint,
)
from datamodules.records import ShardRecord
from datamodules.shard_io import iter_shard_records
from datamodules.shard_outputs import save_npy

DIGEST_DTYPE = "S16"


def record_digest(product_id: str, content: bytes) -> bytes:
    """16 bytes identifying a product (its original id) with the content one encoder reads."""
    digest = hashlib.sha256(product_id.encode("utf-8"))
    digest.update(b"\0")
    digest.update(content)
    return digest.digest()[:16]


def text_content(record: ShardRecord) -> bytes:
    """What a text store encodes of a record (its split left out)."""
    body = {"title": record.title, "attributes": dict(record.attributes), "category": list(record.category)}
    return json.dumps(body, ensure_ascii=False, sort_keys=True).encode("utf-8")


def sample_digests(sample: dict, record: ShardRecord, kinds: Sequence[str]) -> dict[str, bytes]:
    """The digests of one WebDataset sample for the store kinds asked for (``image``, ``text``, ``lexical``: the
    token store reads what the text store reads)."""
    out = {}
    if "image" in kinds:
        out["image"] = record_digest(record.id, bytes(sample.get("jpg", b"")))
    for kind in ("text", "lexical"):
        if kind in kinds:
            out[kind] = record_digest(record.id, text_content(record))
    return out


def digest_array(digests: Sequence[bytes]) -> np.ndarray:
    return np.array(list(digests), dtype=DIGEST_DTYPE).reshape(len(digests))


def read_shard_records(url: str) -> tuple[list[ShardRecord], list[dict]]:
    """Every record of one input shard, in order, with its raw sample (images left encoded)."""
    records, samples = [], []
    for record, sample in iter_shard_records(url):
        records.append(record)
        samples.append(sample)
    return records, samples


def _same_encoder(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k != "products"} == {k: v for k, v in b.items() if k != "products"}


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def backfill_digests(store: FeatureStore, shard_dir: str | Path) -> int:
    """Write the missing ``digest.npy`` of a (complete) store from its input shards; returns shards written."""
    written = 0
    for name, _, _ in store.shards:
        target = store.path(name, DIGEST)
        if target.is_file() or not store.path(name, IDS).is_file():
            continue
        records, samples = read_shard_records(str(Path(shard_dir) / name))
        ids = np.load(store.path(name, IDS))
        if [r.id for r in records] != [str(i) for i in ids]:
            continue  # not this store's shard after all: leave it without digests
        digests = [
            sample_digests(s, r, (store.kind,))[store.kind] for s, r in zip(samples, records, strict=True)
        ]
        save_npy(target, digest_array(digests))
        written += 1
    return written


def _shard_dir_of(fingerprint: str, shard_roots: Sequence[Path]) -> tuple[Path, Manifest] | None:
    for root in shard_roots:
        for manifest_path in sorted(Path(root).glob("*/manifest.json")):
            data = _json(manifest_path)
            try:
                manifest = Manifest.from_dict(data) if data else None
                if manifest and products_fingerprint(manifest) == fingerprint:
                    return manifest_path.parent, manifest
            except Exception:  # noqa: BLE001 - an old or foreign manifest is simply not a match
                continue
    return None


class DonorIndex:
    """The rows of every other complete store of one encoder under a features root, found by digest.

    Held sorted (``S16`` digests, donor shard number, row: 24 bytes per product) and searched with
    ``np.searchsorted``; built once per encode by each rank that has shards to write.
    """

    def __init__(
        self, paths: list[tuple[Path, str]], digests: np.ndarray, shard: np.ndarray, row: np.ndarray
    ):
        self.paths = paths  # donor shard number -> (donor folder, shard name)
        order = np.argsort(digests, kind="stable")
        self.digests, self.shard, self.row = digests[order], shard[order], row[order]

    def __len__(self) -> int:
        return len(self.digests)

    @classmethod
    def build(cls, store: FeatureStore, shard_roots: Sequence[str | Path] = ()) -> DonorIndex | None:
        """The index of ``store``'s donors (None when there is none). ``shard_roots``: folders whose
        sub-folders hold input shards, searched to back-fill donors written without digests."""
        roots = [Path(r) for r in shard_roots]
        paths: list[tuple[Path, str]] = []
        digests, shards, rows = [], [], []
        for folder in sorted(store.folder.parent.glob(f"{store.kind}-*")):
            if folder == store.folder:
                continue
            meta, complete = _json(folder / META_NAME), _json(folder / COMPLETE_NAME)
            if (
                not meta
                or not complete
                or complete.get("meta") != meta
                or not _same_encoder(meta, store.meta)
            ):
                continue
            donor = FeatureStore(
                folder, meta, [(s["name"], s["count"], s["sha256"]) for s in complete["shards"]]
            )
            if donor.missing_shards():
                continue
            if any(not donor.path(n, DIGEST).is_file() for n, _, _ in donor.shards):
                found = _shard_dir_of(meta["products"], roots)
                if found is not None and manifest_shards(found[1]) == donor.shards:
                    backfill_digests(donor, found[0])
            for name, _, _ in donor.shards:
                path = donor.path(name, DIGEST)
                if not path.is_file():
                    continue
                digest = np.load(path)
                paths.append((folder, name))
                digests.append(digest)
                shards.append(np.full(len(digest), len(paths) - 1, dtype=np.int32))
                rows.append(np.arange(len(digest), dtype=np.int32))
        if not paths:
            return None
        return cls(paths, np.concatenate(digests), np.concatenate(shards), np.concatenate(rows))

    def lookup(self, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(donor shard, row)`` of each digest; ``-1`` where it is not found."""
        digests = np.asarray(digests, dtype=DIGEST_DTYPE)
        at = np.searchsorted(self.digests, digests)
        at = np.minimum(at, len(self.digests) - 1)
        hit = self.digests[at] == digests
        return np.where(hit, self.shard[at], -1), np.where(hit, self.row[at], -1)

    def gather(self, arrays: Sequence[str], shard: np.ndarray, row: np.ndarray) -> dict[str, np.ndarray]:
        """The rows ``(shard, row)`` of each named array, in the order asked for."""
        out: dict[str, Any] = {}
        for name in arrays:
            parts = []
            for s in np.unique(shard):
                picked = np.flatnonzero(shard == s)
                folder, shard_name = self.paths[int(s)]
                column = np.load(folder / f"{Path(shard_name).stem}.{name}.npy", mmap_mode="r")
                parts.append((picked, np.asarray(column[row[picked]])))
            first = parts[0][1]
            if name in PADDED:  # token rows: donor shards differ in width
                width = max(values.shape[1] for _, values in parts)
                result = np.full((len(shard), width), PADDED[name], dtype=first.dtype)
                for picked, values in parts:
                    result[picked, : values.shape[1]] = values
                used = (result != PADDED[name]).any(axis=0)  # as wide as the longest row, as an encode writes
                result = result[:, : max(1, int(np.flatnonzero(used).max() + 1) if used.any() else 1)]
            else:
                result = np.empty((len(shard), *first.shape[1:]), dtype=first.dtype)
                for picked, values in parts:
                    result[picked] = values
            out[name] = result
        return out


def reuse_indexes(
    stores: dict[str, FeatureStore], shard_dir: str | Path, enabled: bool = True
) -> dict[str, DonorIndex]:
    """The donor index of every store that still misses shards (``shard_dir``'s parent is searched for the
    input shards of donors written without digests)."""
    if not enabled:
        return {}
    out = {}
    for kind, store in stores.items():
        if store.missing_shards():
            index = DonorIndex.build(store, [Path(shard_dir).parent])
            if index is not None:
                out[kind] = index
    return out
