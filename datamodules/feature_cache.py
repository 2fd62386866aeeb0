"""Frozen-encoder feature cache: encode every product once, reuse until the encoder or the products change.

Layout under ``features_root`` (one folder per encoder, so changing the text model does not re-encode images)::

    image-<hash>/features.npz   product_id (sorted), image [N, Di] float16
    text-<hash>/features.npz    product_id (sorted), title [N, Dt] (zeros where missing), title_mask [N] (True =
                                the product has a title), attributes [N, A, Dt], attribute_mask [N, A],
                                category (each path as a JSON list of names: records.category_to_text)
    <each>/meta.json            the encoder's cache key, the products' fingerprint, attribute names

The cache holds every product of the catalogue whatever split it is in, so re-splitting with another seed reuses it.
``<hash>`` is a sha256 over the meta; the products' fingerprint covers every id, image and text, so a cache built
from other products or another encoder config lives in another folder and is never served stale. A folder is
written under a temporary name and renamed when complete, so a crash never leaves a half cache that looks whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from tqdm.auto import tqdm

from datamodules.records import category_to_text, decode_sample, sample_id
from datamodules.sharding import SPLITS, shard_urls

META_NAME = "meta.json"
CACHE_FORMAT = 2  # 2: title_mask; category stored as JSON lists; ids are the original ids, not shard keys
FEATURES_NAME = "features.npz"


class FeatureCacheError(RuntimeError):
    """A feature cache is missing, incomplete or does not match the shards it is used with."""


def all_urls(manifest: dict, shard_dir: str) -> list[str]:
    return [u for split in SPLITS for u in shard_urls(manifest, shard_dir, split)]


def products_fingerprint(manifest: dict, shard_dir: str) -> str:
    """sha256 over every product's id, image bytes and record (less its split): the same products give the same
    fingerprint however they are split. Remembered beside the shards (keyed by their content hash)."""
    cached = Path(shard_dir) / "products_fingerprint.json"
    if cached.is_file():
        stored = json.loads(cached.read_text())
        if stored.get("content_hash") == manifest["content_hash"]:
            return stored["fingerprint"]
    entries = []
    for sample in _records(all_urls(manifest, shard_dir)):
        record = json.loads(sample["json"])
        record.pop("split", None)
        text = json.dumps(record, sort_keys=True).encode()
        image_digest = hashlib.sha256(sample["jpg"]).hexdigest()
        entries.append(f"{sample['__key__']}:{image_digest}:{hashlib.sha256(text).hexdigest()}")
    digest = hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()
    cached.write_text(json.dumps({"content_hash": manifest["content_hash"], "fingerprint": digest}))
    return digest


def split_product_ids(manifest: dict, shard_dir: str, split: str) -> list[str]:
    """Product ids of a split in shard order (the order its loader serves them)."""
    return [sample_id(s) for s in _records(shard_urls(manifest, shard_dir, split))]


def cache_meta(
    kind: str, encoder_key: dict, fingerprint: str, attribute_names: list[str] | None = None
) -> dict:
    meta = {"kind": kind, "encoder": encoder_key, "products": fingerprint, "format": CACHE_FORMAT}
    if attribute_names is not None:
        meta["attribute_names"] = list(attribute_names)
    return meta


def cache_dir(features_root: str | Path, meta: dict) -> Path:
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    return Path(features_root) / f"{meta['kind']}-{digest}"


def is_fresh(folder: Path, meta: dict) -> bool:
    """True when ``folder`` holds a complete cache built with exactly ``meta``."""
    path = folder / META_NAME
    if not path.is_file():
        return False
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return stored == meta and (folder / FEATURES_NAME).is_file()


def _records(urls: list[str]) -> wds.WebDataset:
    # shards in manifest order, each read once, no shuffling: row n of the cache is the n-th record
    # every rank reads every shard here (ids, fingerprints, the cache itself): no node splitting
    return wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None)


def _decode_image(sample: dict, transform) -> tuple[str, torch.Tensor]:
    try:
        image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
    except Exception as err:  # noqa: BLE001 - re-raised with the record named
        raise FeatureCacheError(
            f"cannot decode image of product {sample['__key__']!r} in {sample['__url__']}: {err}"
        ) from err
    return sample_id(sample), transform(image)


class _ImageBatches(torch.utils.data.IterableDataset):
    def __init__(self, urls: list[str], transform, batch_size: int) -> None:
        self.urls, self.transform, self.batch_size = urls, transform, batch_size

    def __iter__(self):
        ids, images = [], []
        for sample in _records(self.urls):
            key, image = _decode_image(sample, self.transform)
            ids.append(key)
            images.append(image)
            if len(ids) == self.batch_size:
                yield ids, torch.stack(images)
                ids, images = [], []
        if ids:
            yield ids, torch.stack(images)


def _atomic_write(folder: Path, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    order = np.argsort(arrays["product_id"], kind="stable")  # sorted ids: rows are found by binary search
    np.savez(tmp / FEATURES_NAME, **{k: v[order] for k, v in arrays.items()})
    (tmp / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


@torch.no_grad()
def encode_image_features(
    shard_dir: str,
    manifest: dict,
    image_encoder,
    features_root: str,
    batch_size: int = 64,
    num_workers: int = 1,
    progress: bool = True,
) -> Path:
    """Run the (frozen) image tower once over every product; returns the cache folder (reused if fresh).

    Decoding runs in ``num_workers`` (0 or 1) loader processes while the encoder runs in the main one.
    """
    meta = cache_meta("image", image_encoder.cache_key(), products_fingerprint(manifest, shard_dir))
    folder = cache_dir(features_root, meta)
    if is_fresh(folder, meta):
        return folder
    image_encoder.eval()
    device = next(image_encoder.parameters()).device
    ids: list[str] = []
    feats: list[np.ndarray] = []
    loader = torch.utils.data.DataLoader(
        _ImageBatches(all_urls(manifest, shard_dir), image_encoder.transform, batch_size),
        batch_size=None,
        num_workers=min(num_workers, 1),  # one worker keeps record order (shards are not split)
    )
    with tqdm(total=manifest["sharded"], desc="encode images", unit="img", disable=not progress) as bar:
        for batch_ids, images in loader:
            feats.append(image_encoder(images.to(device)).float().cpu().numpy().astype(np.float16))
            ids += batch_ids
            bar.update(len(batch_ids))
    arrays = {
        "product_id": np.array(ids, dtype=str),
        "image": np.concatenate(feats) if feats else np.zeros((0, image_encoder.output_dim), np.float16),
    }
    return _atomic_write(folder, meta, arrays)


@torch.no_grad()
def encode_text_features(
    shard_dir: str,
    manifest: dict,
    text_encoder,
    features_root: str,
    batch_size: int = 256,
    progress: bool = True,
) -> Path:
    """Run the (frozen) text tower once over every product's title and ``name: value`` attribute pairs."""
    names = list(manifest.get("attribute_names", []))
    meta = cache_meta("text", text_encoder.cache_key(), products_fingerprint(manifest, shard_dir), names)
    folder = cache_dir(features_root, meta)
    if is_fresh(folder, meta):
        return folder
    from lightning_modules.components.attribute_pooling import attribute_texts

    text_encoder.eval()
    dim = text_encoder.output_dim
    records = [decode_sample(s) for s in _records(all_urls(manifest, shard_dir))]
    pairs = [attribute_texts(r.attributes, names) for r in records]
    mask = np.array([[t != "" for t in row] for row in pairs], dtype=bool).reshape(len(records), len(names))
    flat = [t for row in pairs for t in row if t]
    # identical attribute pairs repeat a lot ("gender: Men"): embed each distinct text once
    distinct = sorted(set(flat))
    lookup = {t: i for i, t in enumerate(distinct)}
    with tqdm(
        total=len(records) + len(distinct), desc="encode texts", unit="text", disable=not progress
    ) as bar:
        distinct_emb = (
            text_encoder(distinct, batch_size).float().cpu().numpy() if distinct else np.zeros((0, dim))
        )
        bar.update(len(distinct))
        # a product without a title gets a zero vector and title_mask False (the fusion's missing-modality path)
        title_mask = np.array([r.has_title for r in records], dtype=bool)
        title_emb = np.zeros((len(records), dim), dtype=np.float16)
        titles = [r.title for r in records if r.has_title]
        if titles:
            title_emb[title_mask] = text_encoder(titles, batch_size).float().cpu().numpy().astype(np.float16)
        bar.update(len(records))
    attributes = np.zeros((len(records), len(names), dim), dtype=np.float16)
    if flat:
        attributes[mask] = distinct_emb[[lookup[t] for t in flat]].astype(np.float16)
    arrays = {
        "product_id": np.array([r.id for r in records], dtype=str),
        "title": title_emb.reshape(len(records), dim),
        "title_mask": title_mask,
        "attributes": attributes,
        "attribute_mask": mask,
        "category": np.array([category_to_text(r.category) for r in records], dtype=str),
    }
    return _atomic_write(folder, meta, arrays)


def load_features(folders: list[Path], product_ids: list[str]) -> dict[str, np.ndarray]:
    """The cached rows of ``product_ids`` (in that order) from every cache folder, merged into one dict."""
    merged: dict[str, np.ndarray] = {"product_id": np.array(product_ids, dtype=str)}
    for folder in folders:
        path = folder / FEATURES_NAME
        if not path.is_file():
            raise FeatureCacheError(
                f"feature cache file {str(path)!r} is missing; run `clipita encode` again"
            )
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        cached = arrays.pop("product_id")
        rows = np.searchsorted(cached, merged["product_id"])
        rows = np.clip(rows, 0, max(len(cached) - 1, 0))
        found = cached[rows] == merged["product_id"] if len(cached) else np.zeros(len(product_ids), bool)
        if not found.all():
            missing = merged["product_id"][~found][:5].tolist()
            raise FeatureCacheError(f"{str(path)!r} has no features for products {missing}: stale cache")
        merged.update({k: v[rows] for k, v in arrays.items()})
    return merged


def build_feature_cache(
    shard_dir: str,
    manifest: dict,
    text_encoder,
    features_root: str,
    image_encoder=None,
    batch_size: int = 64,
    num_workers: int = 1,
    progress: bool = True,
) -> list[Path]:
    """Make sure fresh caches exist for the given encoders (building what is missing); returns their folders."""
    start = time.perf_counter()
    folders = []
    if image_encoder is not None:
        folders.append(
            encode_image_features(
                shard_dir, manifest, image_encoder, features_root, batch_size, num_workers, progress
            )
        )
    folders.append(encode_text_features(shard_dir, manifest, text_encoder, features_root, progress=progress))
    if progress:
        print(
            f"feature cache ready in {time.perf_counter() - start:.1f}s: {', '.join(str(f) for f in folders)}"
        )
    return folders


def describe(folders: list[Path]) -> dict[str, Any]:
    return {str(f): json.loads((f / META_NAME).read_text()) for f in folders}
