"""The frozen-encoder feature store on disk: one feature shard per input shard and modality, written once.

Layout under ``features_root`` (one folder per encoder, so changing the text model does not re-encode images)::

    image-<hash>/<shard>.image.npy            [n, Di] float16, row r = the r-th record of input shard <shard>
    image-<hash>/<shard>.ids.npy              [n] product ids (written last: its presence marks the shard done)
    text-<hash>/<shard>.title.npy             [n, Dt] float16 (zero rows where the product has no title)
    text-<hash>/<shard>.title_mask.npy        [n] bool, True = the product has a title
    text-<hash>/<shard>.attributes.npy        [n, A, Dt] float16
    text-<hash>/<shard>.attribute_mask.npy    [n, A] bool
    text-<hash>/<shard>.category.npy          [n] int32, the product's node in the manifest's category table
    text-<hash>/<shard>.ids.npy
    lexical-<hash>/<shard>.lexical_tokens.npy [n, L] int32 hashed token ids of title + attribute values, -1 padded
                                              (``L`` = the shard's longest row; only for a model with a lexical
                                              signal: its ``tokenize`` is the "encoder", its ``tokenizer_id`` the key)
    <each>/<shard>.digest.npy                 [n] S16 per-row product digests (``feature_reuse``: rows are copied
                                              into a store of another split instead of encoded again)
    <each>/meta.json                          the encoder's cache key, the products' fingerprint, attribute names
    <each>/complete.json                      written only once every shard of the manifest is there

``<hash>`` is a sha256 over the meta. The products' fingerprint is derived from the manifest's per-shard sha256s
(no process re-reads the shards to compute it), so a cache belongs to one set of shards: other products, another
split seed or another encoder config live in another folder and are never served stale.

This module is the store's side: where a folder lives (``cache_dir`` over ``cache_meta``), which shards a manifest
holds (``manifest_shards``), how a feature shard is written (every array under a temporary name, renamed, the ids
file last, so a killed writer leaves no half shard that looks done) and when a folder counts as complete. Reading a
split's rows back is :class:`datamodules.feature_split.FeatureSplit`; encoding is ``datamodules.feature_encoding``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipita_core.manifest import Manifest
from clipita_core.vocabulary import SPLITS
from datamodules.shard_outputs import IDS as IDS  # written last; readers import it from here too
from datamodules.shard_outputs import output_shard_done, write_output_shard, write_text

META_NAME = "meta.json"
COMPLETE_NAME = "complete.json"
DIGEST = "digest"  # per-row product digests (datamodules.feature_reuse), optional
IMAGE_ARRAYS = ("image",)
TEXT_ARRAYS = ("title", "title_mask", "attributes", "attribute_mask", "category")
LEXICAL_TOKENS = "lexical_tokens"
LEXICAL_ARRAYS = (LEXICAL_TOKENS,)
ARRAYS = {"image": IMAGE_ARRAYS, "text": TEXT_ARRAYS, "lexical": LEXICAL_ARRAYS}
# arrays whose row width differs between shards (padded with -1 to the widest when rows of shards meet)
PADDED = {LEXICAL_TOKENS: -1}


class FeatureCacheError(RuntimeError):
    """A feature cache is missing, incomplete or does not match the shards it is used with."""


def manifest_shards(manifest: Manifest) -> list[tuple[str, int, str]]:
    """``(shard name, record count, sha256)`` of every input shard, in split then shard order."""
    out = []
    for split in SPLITS:
        info = manifest.split(split)
        for name in info.shards:
            entry = info.shard_files.get(name)
            count = entry.count if entry is not None and entry.count is not None else -1
            sha = entry.sha256 if entry is not None and entry.sha256 is not None else ""
            out.append((name, int(count), str(sha)))
    return out


def products_fingerprint(manifest: Manifest) -> str:
    """sha256 over the manifest's per-shard sha256s (and the category table the ``category`` arrays index)."""
    shards = manifest_shards(manifest)
    if any(not sha for _, _, sha in shards):
        raise FeatureCacheError("the manifest records no sha256 per shard; shard the catalogue again")
    digest = hashlib.sha256()
    for name, count, sha in shards:
        digest.update(f"{name}:{count}:{sha}\n".encode())
    digest.update(json.dumps(manifest.tree_paths).encode())
    return digest.hexdigest()


def cache_meta(
    kind: str, encoder_key: dict, fingerprint: str, attribute_names: list[str] | None = None
) -> dict:
    meta = {"kind": kind, "layout": "shards-v1", "encoder": encoder_key, "products": fingerprint}
    if attribute_names is not None:
        meta["attribute_names"] = list(attribute_names)
    return meta


def cache_dir(features_root: str | Path, meta: dict) -> Path:
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    return Path(features_root) / f"{meta['kind']}-{digest}"


class FeatureStore:
    """One encoder's feature folder for one set of input shards.

    Args:
        folder: the cache folder (``cache_dir(features_root, meta)``).
        meta: what the folder was built with (written to ``meta.json``).
        shards: ``(name, count, sha256)`` of every input shard (``manifest_shards``).
    """

    def __init__(self, folder: Path, meta: dict, shards: Sequence[tuple[str, int, str]]) -> None:
        self.folder = Path(folder)
        self.meta = meta
        self.shards = list(shards)
        self.arrays = ARRAYS[meta["kind"]]

    @classmethod
    def for_encoder(
        cls, features_root: str | Path, kind: str, encoder_key: dict, manifest: Manifest
    ) -> FeatureStore:
        names = manifest.attribute_names if kind in ("text", "lexical") else None
        meta = cache_meta(kind, encoder_key, products_fingerprint(manifest), names)
        return cls(cache_dir(features_root, meta), meta, manifest_shards(manifest))

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    def path(self, shard: str, array: str) -> Path:
        return self.folder / f"{Path(shard).stem}.{array}.npy"

    def shard_done(self, shard: str) -> bool:
        return output_shard_done(lambda array: self.path(shard, array), self.arrays)

    def missing_shards(self) -> list[str]:
        return [name for name, _, _ in self.shards if not self.shard_done(name)]

    def prepare(self) -> None:
        """Create the folder and its ``meta.json`` (idempotent; every rank may call it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / META_NAME
        if meta_path.is_file():
            if json.loads(meta_path.read_text()) != self.meta:
                raise FeatureCacheError(f"{str(meta_path)!r} describes another cache; delete the folder")
            return
        write_text(meta_path, json.dumps(self.meta, indent=2, sort_keys=True))

    def write_shard(self, shard: str, ids: Sequence[str], arrays: dict[str, np.ndarray]) -> None:
        """Write one feature shard: every array under a temporary name, renamed; the ids file last.

        ``arrays`` may also hold ``digest`` (the per-row product digests ``feature_reuse`` finds rows by)."""
        names = (*self.arrays, *([DIGEST] if DIGEST in arrays else []))
        for name in names:
            if name not in arrays:
                raise FeatureCacheError(f"feature shard {shard!r} lacks array {name!r}")
            if len(arrays[name]) != len(ids):
                raise FeatureCacheError(f"feature shard {shard!r}: {name} has {len(arrays[name])} rows")
        write_output_shard(lambda array: self.path(shard, array), ids, {n: arrays[n] for n in names})

    def is_complete(self) -> bool:
        marker = self.folder / COMPLETE_NAME
        if not marker.is_file():
            return False
        try:
            stored = json.loads(marker.read_text())
        except json.JSONDecodeError:
            return False
        return stored.get("meta") == self.meta and not self.missing_shards()

    def mark_complete(self) -> bool:
        """Write ``complete.json`` if every shard is there; returns whether the cache is complete."""
        missing = self.missing_shards()
        if missing:
            return False
        body = {
            "meta": self.meta,
            "shards": [{"name": n, "count": c, "sha256": s} for n, c, s in self.shards],
        }
        write_text(self.folder / COMPLETE_NAME, json.dumps(body, indent=1, sort_keys=True))
        return True

    def require_complete(self) -> None:
        if not self.is_complete():
            missing = self.missing_shards()
            detail = f"shards {missing[:5]} are missing" if missing else "it was never marked complete"
            raise FeatureCacheError(
                f"feature cache {str(self.folder)!r} is incomplete ({detail}); run `clipita encode` again"
            )


def concat_rows(parts: Sequence[np.ndarray], array: str) -> np.ndarray:
    """Concatenate row blocks of one array; a padded array's blocks are first padded to the widest."""
    if array not in PADDED or len({p.shape[1:] for p in parts}) <= 1:
        return np.concatenate(parts)
    width = max(p.shape[1] for p in parts)
    out = np.full((sum(len(p) for p in parts), width), PADDED[array], dtype=parts[0].dtype)
    start = 0
    for part in parts:
        out[start : start + len(part), : part.shape[1]] = part
        start += len(part)
    return out


def describe(stores: Sequence[FeatureStore]) -> dict[str, Any]:
    return {str(s.folder): {**s.meta, "complete": s.is_complete(), "shards": len(s.shards)} for s in stores}
