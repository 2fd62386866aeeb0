"""Encoding the feature store: every rank encodes its share of the input shards, each with several decoding workers.

Shard ``i`` of the manifest goes to rank ``i % world_size`` (fixed whatever is already done, so ranks that look at
the folder at different moments still agree), and within a rank to decoding worker ``j % num_workers`` of the
rank's list. A batch never spans two shards; when a shard's last batch is encoded its feature shard is written
(``FeatureStore.write_shard``) and finished shards are skipped on the next run. The cache is marked complete by
global rank 0 after a barrier, and only when every shard is there.

The same code runs as a Lightning predict job (``EncodeJob``: ``clipita encode`` with the Trainer's
devices/num_nodes/strategy, so torchrun and SLURM launch it unchanged) and inside the DataModule's ``setup`` on
every rank of a fit (``encode_features`` with the trainer's rank and barrier).

Why one file of ~450 lines: the shard plan, the decoding loader, the writer and the two drivers (a plain rank-aware
function and the Lightning predict job) share one contract (which rank writes which feature shard) and change together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import webdataset as wds
from PIL import Image
from tqdm.auto import tqdm

from datamodules.category_tree import CategoryTree
from datamodules.feature_reuse import (
    DonorIndex,
    digest_array,
    read_shard_records,
    reuse_indexes,
    sample_digests,
)
from datamodules.features import (
    ARRAYS,
    DIGEST,
    LEXICAL_TOKENS,
    FeatureCacheError,
    FeatureStore,
    concat_rows,
)
from datamodules.lexical_store import lexical_texts, lexical_token_rows, tokenizer_key
from datamodules.records import decode_sample


def attribute_texts(attributes: dict[str, str], names: Sequence[str]) -> list[str]:
    """``"name: value"`` per attribute in ``names`` order, ``""`` where absent (the raw path's texts: kept equal to
    ``lightning_modules.components.attribute_pooling.attribute_texts`` by a test)."""
    return [f"{n}: {attributes[n]}" if attributes.get(n) not in (None, "") else "" for n in names]


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


def plan(stores: dict[str, FeatureStore], rank: int, world_size: int) -> list[ShardJob]:
    """This rank's shards that still miss a feature shard (the assignment ignores what is done: see module doc)."""
    reference = next(iter(stores.values()))
    jobs = []
    for n, (name, count, _) in enumerate(reference.shards):
        if n % world_size != rank:
            continue
        image, text, lexical = (
            k in stores and not stores[k].shard_done(name) for k in ("image", "text", "lexical")
        )
        if image or text or lexical:
            jobs.append(ShardJob(name, count, image, text, lexical))
    return jobs


class ShardBatches(torch.utils.data.IterableDataset):
    """Decoded batches of the given shards, split across DataLoader workers by shard (a batch never spans two).

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
        self.shard_dir, self.jobs, self.transform, self.batch_size = (
            shard_dir,
            list(jobs),
            transform,
            batch_size,
        )
        self.reuse = dict(reuse or {})

    def __len__(self) -> int:
        return sum(max(1, math.ceil(j.count / self.batch_size)) for j in self.jobs)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for job in self.jobs[worker::workers]:
            yield from self._shard_batches(job)

    def _shard_batches(self, job: ShardJob):
        url = str(Path(self.shard_dir) / job.name)
        kinds = job.kinds()
        if any(k in self.reuse for k in kinds):
            copied = self._copied(job, url, kinds)
            if copied is not None:
                kinds = [k for k in kinds if k not in copied["copied"]]
                job = ShardJob(job.name, job.count, "image" in kinds, "text" in kinds, "lexical" in kinds)
                copied["last"] = not kinds
                yield copied
                if not kinds:
                    return
        samples = wds.WebDataset(
            url, shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None
        )
        rows: list[dict] = []
        images: list[torch.Tensor] = []
        digests: list[dict[str, bytes]] = []
        seen = 0
        for sample in samples:
            record = decode_sample(sample)  # the one record codec: original id, category tuple, title or ""
            rows.append(record)
            digests.append(sample_digests(sample, record, kinds))
            if job.image:
                images.append(self._decode(sample, record.id, url))
            seen += 1
            if len(rows) == self.batch_size:
                yield self._batch(job, rows, images, digests, last=seen == job.count)
                rows, images, digests = [], [], []
        if seen != job.count:
            raise FeatureCacheError(f"shard {url!r} has {seen} records, the manifest says {job.count}")
        if rows or seen == 0:
            yield self._batch(job, rows, images, digests, last=True)

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
        batch = self._batch(job, records, [], [], last=False)
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
        job: ShardJob, rows: list, images: list[torch.Tensor], digests: list[dict[str, bytes]], last: bool
    ) -> dict[str, Any]:
        kinds = job.kinds()
        return {
            "shard": job.name,
            "last": last,
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
        texts = lexical_texts(batch["titles"], batch["attributes"], attribute_names)
        out["arrays"][LEXICAL_TOKENS] = lexical_token_rows(tokenizer, texts)
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


class ShardWriter:
    """Collects a shard's encoded batches (they arrive in order from the one worker that reads the shard) and
    writes its feature shards when the last one is in."""

    def __init__(self, stores: dict[str, FeatureStore]) -> None:
        self.stores = stores
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.written: list[str] = []

    def add(self, encoded: dict[str, Any]) -> None:
        parts = self.pending.setdefault(encoded["shard"], [])
        parts.append(encoded)
        if not encoded["last"]:
            return
        del self.pending[encoded["shard"]]
        for kind, store in self.stores.items():
            names = store.arrays
            mine = [p for p in parts if names[0] in p["arrays"]]  # copied rows, or the encoded batches
            if not mine:
                continue  # this modality's feature shard was already there
            ids = [i for p in mine for i in p["ids"]]
            arrays = {a: concat_rows([p["arrays"][a] for p in mine], a) for a in names}
            if all(f"{kind}.{DIGEST}" in p["arrays"] for p in mine):
                arrays[DIGEST] = np.concatenate([p["arrays"][f"{kind}.{DIGEST}"] for p in mine])
            store.write_shard(encoded["shard"], ids, arrays)
        self.written.append(encoded["shard"])


def make_stores(
    features_root: str | Path, manifest: dict, image_encoder, text_encoder, tokenizer=None
) -> dict[str, FeatureStore]:
    """The feature stores of these encoders for these shards (one per tower that is not None, and a token store
    when a lexical ``tokenizer`` is given)."""
    stores = {}
    if image_encoder is not None:
        stores["image"] = FeatureStore.for_encoder(
            features_root, "image", image_encoder.cache_key(), manifest
        )
    if text_encoder is not None:
        stores["text"] = FeatureStore.for_encoder(features_root, "text", text_encoder.cache_key(), manifest)
    if tokenizer is not None:
        stores["lexical"] = FeatureStore.for_encoder(
            features_root, "lexical", tokenizer_key(tokenizer), manifest
        )
    if not stores:
        raise ValueError(
            "encoding features needs an image encoder, a text encoder or a lexical tokenizer; none given"
        )
    return stores


def _loader(dataset: ShardBatches, num_workers: int) -> torch.utils.data.DataLoader:
    workers = min(num_workers, len(dataset.jobs))
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None
    )


def encode_features(
    shard_dir: str,
    manifest: dict,
    features_root: str | Path,
    image_encoder,
    text_encoder,
    batch_size: int = 64,
    num_workers: int = 2,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    progress: bool = True,
    reuse: bool = True,
    tokenizer=None,
) -> list[FeatureStore]:
    """Encode this rank's missing feature shards, wait for the other ranks, and return the complete stores.

    Every rank of a job calls this with its ``rank`` and a ``barrier`` over all ranks (None for one process).
    With ``reuse``, shards whose products another complete store of the same encoders holds are copied from it
    (``datamodules.feature_reuse``). With a lexical ``tokenizer`` (an object with ``tokenize(texts) ->
    list[np.ndarray]``, ``num_buckets`` and ``tokenizer_id``), each product's token ids are stored as well.
    """
    stores = make_stores(features_root, manifest, image_encoder, text_encoder, tokenizer)
    if not all(s.is_complete() for s in stores.values()):
        for store in stores.values():
            store.prepare()
        jobs = plan(stores, rank, world_size)
        if jobs:
            tree = CategoryTree.from_json(manifest["tree"]["paths"])
            names = list(manifest.get("attribute_names", []))
            transform = image_encoder.transform if image_encoder is not None else None
            for encoder in (image_encoder, text_encoder):
                if encoder is not None:
                    encoder.eval()
            dataset = ShardBatches(
                shard_dir, jobs, transform, batch_size, reuse_indexes(stores, shard_dir, reuse)
            )
            writer = ShardWriter(stores)
            total = sum(j.count for j in jobs)
            with tqdm(
                total=total, desc=f"encode rank {rank}", unit=" products", disable=not progress or rank != 0
            ) as bar:
                for batch in _loader(dataset, num_workers):
                    writer.add(
                        encode_batch(batch, image_encoder, text_encoder, tree, names, tokenizer=tokenizer)
                    )
                    bar.update(len(batch["ids"]))
        if barrier is not None:
            barrier()
        if rank == 0:
            for store in stores.values():
                store.mark_complete()
        if barrier is not None:
            barrier()
    for store in stores.values():
        store.require_complete()
    return list(stores.values())


class EncodeJob(L.LightningModule):
    """``Trainer.predict`` over the feature stores' missing shards: DDP splits shards across ranks, the loader's
    workers split a rank's shards, ``on_predict_batch_end`` writes finished feature shards, and global rank 0 marks
    the stores complete after the last barrier. The progress bar advances per batch (images and texts together).
    """

    def __init__(
        self,
        shard_dir: str,
        manifest: dict,
        features_root: str | Path,
        image_encoder,
        text_encoder,
        batch_size: int = 64,
        num_workers: int = 2,
        reuse: bool = True,
        tokenizer=None,
    ) -> None:
        super().__init__()
        self.reuse = reuse
        self.shard_dir, self.manifest, self.batch_size, self.num_workers = (
            shard_dir,
            manifest,
            batch_size,
            num_workers,
        )
        self.image_encoder, self.text_encoder, self.tokenizer = image_encoder, text_encoder, tokenizer
        self.stores = make_stores(features_root, manifest, image_encoder, text_encoder, tokenizer)
        self.tree = CategoryTree.from_json(manifest["tree"]["paths"])
        self.attribute_names = list(manifest.get("attribute_names", []))
        self.writer = ShardWriter(self.stores)

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        for store in self.stores.values():
            store.prepare()
        jobs = plan(self.stores, self.global_rank, self.trainer.world_size)
        if not jobs:  # one empty item: under DDP Lightning refuses a rank whose loader is empty, and the
            # rank must still reach the barriers of on_predict_end
            return torch.utils.data.DataLoader([{"empty": True}], batch_size=None)
        transform = self.image_encoder.transform if self.image_encoder is not None else None
        reuse = reuse_indexes(self.stores, self.shard_dir, self.reuse) if jobs else {}
        dataset = ShardBatches(self.shard_dir, jobs, transform, self.batch_size, reuse)
        return _loader(dataset, self.num_workers)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # lists and an optional tensor: encode_batch moves the images itself

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        if batch.get("empty"):
            return None
        return encode_batch(
            batch,
            self.image_encoder,
            self.text_encoder,
            self.tree,
            self.attribute_names,
            tokenizer=self.tokenizer,
        )

    def on_predict_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if outputs is not None:
            self.writer.add(outputs)

    def on_predict_end(self) -> None:
        self.trainer.strategy.barrier("encode-written")
        if self.trainer.is_global_zero:
            for store in self.stores.values():
                store.mark_complete()
        self.trainer.strategy.barrier("encode-marked")
