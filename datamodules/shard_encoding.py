"""Encoding one input shard: decode its records into batches, turn a batch into feature rows, write its feature shard.

The three steps a shard goes through in the encode job (``datamodules.feature_encoding``, run by the sharded
predict-job runner ``datamodules.shard_jobs``, which splits the shards across ranks and workers and collects a
shard's batches):

1. :class:`ShardBatches` (the runner's ``ShardItems``) reads the shards of a rank's :class:`ShardJob` list, split
   across DataLoader workers *by shard*, so a batch never spans two shards and a shard's batches arrive in order
   from one worker. With feature reuse (``datamodules.feature_reuse``), a shard whose products a donor store
   already holds first yields one ``copied`` item with those rows, and only the modalities left are decoded.
2. :func:`encode_batch` runs the frozen towers on one batch (float16 features; each distinct attribute text embedded
   once per batch) and, for a lexical model, stores its token ids; copied rows pass through untouched.
3. :func:`write_feature_shard` writes, once a shard's last batch is encoded, one feature shard per store
   (``FeatureStore.write_shard``: ids last, so a killed run leaves the shard missing, not half written).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipita_core.tree import CategoryTree
from clipita_core.vocabulary import attribute_texts
from datamodules.feature_reuse import DonorIndex, digest_array, read_shard_records, sample_digests
from datamodules.features import (
    ARRAYS,
    DIGEST,
    LEXICAL_TOKENS,
    FeatureCacheError,
    FeatureStore,
    concat_rows,
)
from datamodules.lexical_store import product_token_rows
from datamodules.shard_io import iter_shard_records
from datamodules.shard_jobs import ShardItems


@dataclass(frozen=True)
class ShardJob:
    """One input shard to encode and which of its feature shards are still missing."""

    name: str
    count: int
    image: bool
    text: bool
    lexical: bool = False

    def kinds(self) -> list[str]:
        return [k for k in ("image", "text", "lexical") if getattr(self, k)]


class ShardBatches(ShardItems):
    """Decoded batches of the given shards, split across DataLoader workers by shard (a batch never spans two;
    :class:`datamodules.shard_jobs.ShardItems` marks each shard's last one).

    With ``reuse`` (``feature_reuse.reuse_indexes``), a shard whose products are all in a donor store of a modality
    first yields one ``copied`` item holding that modality's rows, read from the donors; only the modalities left
    are decoded and encoded.
    """

    def __init__(
        self,
        shard_dir: str,
        jobs: Sequence[ShardJob],
        transform: Callable | None,
        batch_size: int,
        reuse: dict[str, DonorIndex] | None = None,
    ) -> None:
        super().__init__(jobs, batch_size)
        self.shard_dir, self.transform = shard_dir, transform
        self.reuse = dict(reuse or {})

    def shard_items(self, job: ShardJob):
        url = str(Path(self.shard_dir) / job.name)
        kinds = job.kinds()
        if any(k in self.reuse for k in kinds):
            copied = self._copied(job, url, kinds)
            if copied is not None:
                kinds = [k for k in kinds if k not in copied["copied"]]
                job = ShardJob(job.name, job.count, "image" in kinds, "text" in kinds, "lexical" in kinds)
                yield copied
                if not kinds:
                    return
        rows: list[dict] = []
        images: list[torch.Tensor] = []
        digests: list[dict[str, bytes]] = []
        seen = 0
        for record, sample in iter_shard_records(
            url
        ):  # the record codec: original id, category tuple, title or ""
            rows.append(record)
            digests.append(sample_digests(sample, record, kinds))
            if job.image:
                images.append(self._decode(sample, record.id, url))
            seen += 1
            if len(rows) == self.batch_size:
                yield self._batch(job, rows, images, digests)
                rows, images, digests = [], [], []
        if seen != job.count:
            raise FeatureCacheError(f"shard {url!r} has {seen} records, the manifest says {job.count}")
        if rows or seen == 0:
            yield self._batch(job, rows, images, digests)

    def _copied(self, job: ShardJob, url: str, kinds: Sequence[str]) -> dict[str, Any] | None:
        """One item with the rows of every modality whose products are all in its donor stores (None if none)."""
        records, samples = read_shard_records(url)
        if len(records) != job.count:
            raise FeatureCacheError(
                f"shard {url!r} has {len(records)} records, the manifest says {job.count}"
            )
        copied: dict[str, dict[str, np.ndarray]] = {}
        for kind in kinds:
            index = self.reuse.get(kind)
            if index is None:
                continue
            digests = digest_array(
                [sample_digests(s, r, (kind,))[kind] for s, r in zip(samples, records, strict=True)]
            )
            shard, row = index.lookup(digests)
            if len(records) and (shard < 0).any():
                continue
            names = tuple(a for a in ARRAYS[kind] if a != "category")
            copied[kind] = {**index.gather(names, shard, row), DIGEST: digests}
        if not copied:
            return None
        batch = self._batch(job, records, [], [])
        batch.update(need_image=False, need_text=False, need_lexical=False, copied=copied, digests={})
        return batch

    def _decode(self, sample: dict, product_id: str, url: str) -> torch.Tensor:
        import io

        try:
            image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
        except Exception as err:  # noqa: BLE001 - re-raised with the record named
            raise FeatureCacheError(f"cannot decode image of product {product_id!r} in {url}: {err}") from err
        return self.transform(image)

    @staticmethod
    def _batch(
        job: ShardJob, rows: list, images: list[torch.Tensor], digests: list[dict[str, bytes]]
    ) -> dict[str, Any]:
        kinds = job.kinds()
        return {
            "need_image": job.image,
            "need_text": job.text,
            "need_lexical": job.lexical,
            "ids": [r.id for r in rows],
            "titles": [r.title for r in rows],
            "attributes": [dict(r.attributes) for r in rows],
            "category": [list(r.category) for r in rows],
            "images": torch.stack(images) if images else None,
            "digests": {k: digest_array([d[k] for d in digests]) for k in kinds},
        }


@torch.no_grad()
def encode_batch(
    batch: dict[str, Any],
    image_encoder,
    text_encoder,
    tree: CategoryTree,
    attribute_names: Sequence[str],
    text_batch_size: int = 256,
    tokenizer=None,
) -> dict[str, Any]:
    """The feature rows of one decoded batch (numpy; float16 features; int32 token ids with a ``tokenizer``)."""
    n = len(batch["ids"])
    out: dict[str, Any] = {"shard": batch["shard"], "last": batch["last"], "ids": batch["ids"], "arrays": {}}
    for kind, digests in batch.get("digests", {}).items():
        out["arrays"][f"{kind}.{DIGEST}"] = digests
    for kind, arrays in batch.get("copied", {}).items():  # rows of a donor store: no encoder runs
        out["arrays"].update({f"{kind}.{DIGEST}" if a == DIGEST else a: v for a, v in arrays.items()})
        if kind == "text":
            out["arrays"]["category"] = np.array([tree.index(p) for p in batch["category"]], dtype=np.int32)
    if batch["need_image"]:
        device = next(image_encoder.parameters()).device
        if n:
            feats = image_encoder(batch["images"].to(device)).float().cpu().numpy()
        else:
            feats = np.zeros((0, image_encoder.output_dim), np.float32)
        out["arrays"]["image"] = feats.astype(np.float16)
    if batch.get("need_lexical"):
        out["arrays"][LEXICAL_TOKENS] = product_token_rows(
            tokenizer, batch["titles"], batch["attributes"], attribute_names
        )
    if batch["need_text"]:
        dim = text_encoder.output_dim
        titles = batch["titles"]
        title_mask = np.array([t != "" for t in titles], dtype=bool)
        pairs = [attribute_texts(a, attribute_names) for a in batch["attributes"]]
        attribute_mask = np.array([[t != "" for t in row] for row in pairs], dtype=bool).reshape(
            n, len(attribute_names)
        )
        # identical attribute pairs repeat a lot ("gender: Men"): embed each distinct text once per batch
        present = [t for t in titles if t] + [t for row in pairs for t in row if t]
        distinct = sorted(set(present))
        lookup = {t: i for i, t in enumerate(distinct)}
        emb = (
            text_encoder(distinct, text_batch_size).float().cpu().numpy().astype(np.float16)
            if distinct
            else np.zeros((0, dim), np.float16)
        )
        title = np.zeros((n, dim), np.float16)
        if title_mask.any():
            title[title_mask] = emb[[lookup[t] for t in titles if t]]
        attributes = np.zeros((n, len(attribute_names), dim), np.float16)
        if attribute_mask.any():
            attributes[attribute_mask] = emb[[lookup[t] for row in pairs for t in row if t]]
        out["arrays"].update(
            title=title,
            title_mask=title_mask,
            attributes=attributes,
            attribute_mask=attribute_mask,
            category=np.array([tree.index(p) for p in batch["category"]], dtype=np.int32),
        )
    return out


def write_feature_shard(stores: dict[str, FeatureStore], shard: str, parts: list[dict[str, Any]]) -> None:
    """Write a shard's feature shard of every store from its encoded batches, in order (a store whose shard was
    already there gets no batch of its arrays and is left alone)."""
    for kind, store in stores.items():
        names = store.arrays
        mine = [p for p in parts if names[0] in p["arrays"]]  # copied rows, or the encoded batches
        if not mine:
            continue  # this modality's feature shard was already there
        ids = [i for p in mine for i in p["ids"]]
        arrays = {a: concat_rows([p["arrays"][a] for p in mine], a) for a in names}
        if all(f"{kind}.{DIGEST}" in p["arrays"] for p in mine):
            arrays[DIGEST] = np.concatenate([p["arrays"][f"{kind}.{DIGEST}"] for p in mine])
        store.write_shard(shard, ids, arrays)
