"""Frozen-encoder feature cache: encode every product once, reuse until the encoder or the shards change.

Layout under ``features_root`` (one folder per encoder, so changing the text model does not re-encode images)::

    image-<hash>/{train,val,test}.npz   product_id, image [N, Di] float16
    text-<hash>/{train,val,test}.npz    product_id, title [N, Dt], attributes [N, A, Dt], attribute_mask [N, A],
                                        category (path strings "A > B > C")
    <each>/meta.json                    the encoder's cache key, the manifest's content hash, attribute names

``<hash>`` is a sha256 over the meta, so a cache built from other shards or another encoder config lives in
another folder and is never reused by mistake; a folder is written under a temporary name and renamed when
complete, so a crash never leaves a half cache that looks whole.
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

from datamodules.category_tree import format_path
from datamodules.sharding import SPLITS, shard_urls

META_NAME = "meta.json"


class FeatureCacheError(RuntimeError):
    """A feature cache is missing, incomplete or does not match the shards it is used with."""


def cache_meta(
    kind: str, encoder_key: dict, manifest: dict, attribute_names: list[str] | None = None
) -> dict:
    meta = {"kind": kind, "encoder": encoder_key, "content_hash": manifest["content_hash"]}
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
    return stored == meta and all((folder / f"{s}.npz").is_file() for s in SPLITS)


def _records(urls: list[str]) -> wds.WebDataset:
    # shards in manifest order, each read once, no shuffling: row n of the cache is the n-th record
    return wds.WebDataset(urls, shardshuffle=False, empty_check=False)


def _decode_image(sample: dict, transform) -> tuple[str, torch.Tensor]:
    try:
        image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
    except Exception as err:  # noqa: BLE001 - re-raised with the record named
        raise FeatureCacheError(
            f"cannot decode image of product {sample['__key__']!r} in {sample['__url__']}: {err}"
        ) from err
    return sample["__key__"], transform(image)


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


def _atomic_write(folder: Path, meta: dict, arrays_per_split: dict[str, dict[str, np.ndarray]]) -> Path:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split, arrays in arrays_per_split.items():
        np.savez(tmp / f"{split}.npz", **arrays)
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
    """Run the (frozen) image tower once over every split's shards; returns the cache folder (reused if fresh).

    Decoding runs in ``num_workers`` loader processes while the encoder runs in the main one.
    """
    meta = cache_meta("image", image_encoder.cache_key(), manifest)
    folder = cache_dir(features_root, meta)
    if is_fresh(folder, meta):
        return folder
    image_encoder.eval()
    device = next(image_encoder.parameters()).device
    arrays: dict[str, dict[str, np.ndarray]] = {}
    bar = tqdm(total=manifest["sharded"], desc="encode images", unit="img", disable=not progress)
    for split in SPLITS:
        urls = shard_urls(manifest, shard_dir, split)
        ids: list[str] = []
        feats: list[np.ndarray] = []
        if urls:
            loader = torch.utils.data.DataLoader(
                _ImageBatches(urls, image_encoder.transform, batch_size),
                batch_size=None,
                num_workers=min(num_workers, 1),  # one worker keeps record order (shards are not split)
            )
            for batch_ids, images in loader:
                feats.append(image_encoder(images.to(device)).float().cpu().numpy().astype(np.float16))
                ids += batch_ids
                bar.update(len(batch_ids))
        dim = image_encoder.output_dim
        arrays[split] = {
            "product_id": np.array(ids, dtype=str),
            "image": np.concatenate(feats) if feats else np.zeros((0, dim), np.float16),
        }
    bar.close()
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
    """Run the (frozen) text tower once over titles and ``name: value`` attribute pairs of every split."""
    names = list(manifest.get("attribute_names", []))
    meta = cache_meta("text", text_encoder.cache_key(), manifest, names)
    folder = cache_dir(features_root, meta)
    if is_fresh(folder, meta):
        return folder
    from lightning_modules.components.attribute_pooling import attribute_texts

    text_encoder.eval()
    dim = text_encoder.output_dim
    arrays: dict[str, dict[str, np.ndarray]] = {}
    bar = tqdm(total=manifest["sharded"], desc="encode texts", unit="product", disable=not progress)
    for split in SPLITS:
        records = [json.loads(s["json"]) for s in _records(shard_urls(manifest, shard_dir, split))]
        titles = [r["title"] for r in records]
        pairs = [attribute_texts(r.get("attributes", {}), names) for r in records]
        mask = np.array([[t != "" for t in row] for row in pairs], dtype=bool).reshape(
            len(records), len(names)
        )
        flat = [t for row in pairs for t in row if t]
        # identical attribute pairs repeat a lot ("gender: Men"): embed each distinct text once
        distinct = sorted(set(flat))
        distinct_emb = (
            text_encoder(distinct, batch_size).float().cpu().numpy() if distinct else np.zeros((0, dim))
        )
        lookup = {t: i for i, t in enumerate(distinct)}
        attributes = np.zeros((len(records), len(names), dim), dtype=np.float16)
        if flat:
            attributes[mask] = distinct_emb[[lookup[t] for t in flat]].astype(np.float16)
        title_emb = (
            text_encoder(titles, batch_size).float().cpu().numpy().astype(np.float16)
            if titles
            else np.zeros((0, dim), np.float16)
        )
        arrays[split] = {
            "product_id": np.array([r["id"] for r in records], dtype=str),
            "title": title_emb,
            "attributes": attributes,
            "attribute_mask": mask,
            "category": np.array([format_path(r["category"]) for r in records], dtype=str),
        }
        bar.update(len(records))
    bar.close()
    return _atomic_write(folder, meta, arrays)


def load_features(folders: list[Path], split: str) -> dict[str, np.ndarray]:
    """Merge one split of several caches into one dict of arrays, checking their rows are the same products."""
    merged: dict[str, np.ndarray] = {}
    for folder in folders:
        path = folder / f"{split}.npz"
        if not path.is_file():
            raise FeatureCacheError(
                f"feature cache file {str(path)!r} is missing; run `clipita encode` again"
            )
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        if "product_id" in merged and not np.array_equal(merged["product_id"], arrays["product_id"]):
            raise FeatureCacheError(
                f"{str(path)!r} lists other products (or another order) than {str(folders[0])!r}: stale cache"
            )
        merged.update(arrays)
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
