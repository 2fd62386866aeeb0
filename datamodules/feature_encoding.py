"""Encoding the feature store: every rank encodes its share of the input shards, each with several decoding workers.

Shard ``i`` of the manifest goes to rank ``i % world_size`` (fixed whatever is already done, so ranks that look at
the folder at different moments still agree), and within a rank to decoding worker ``j % num_workers`` of the
rank's list. A batch never spans two shards; when a shard's last batch is encoded its feature shard is written
(``FeatureStore.write_shard``) and finished shards are skipped on the next run. The cache is marked complete by
global rank 0 after a barrier, and only when every shard is there.

The same code runs as a Lightning predict job (``EncodeJob``: ``clipita encode`` with the Trainer's
devices/num_nodes/strategy, so torchrun and SLURM launch it unchanged) and inside the DataModule's ``setup`` on
every rank of a fit (``encode_features`` with the trainer's rank and barrier).

The per-shard steps (decoding batches, encoding a batch, writing a finished shard) live in
``datamodules.shard_encoding``; this module holds what the two drivers share on top of them: the stores of a set of
encoders (``make_stores``), the shard plan (``plan``: which rank encodes which shard) and the drivers themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from tqdm.auto import tqdm

from clipita_core.manifest import Manifest
from clipita_core.tree import CategoryTree
from datamodules.feature_reuse import reuse_indexes
from datamodules.features import FeatureStore
from datamodules.lexical_store import tokenizer_key
from datamodules.shard_encoding import ShardBatches, ShardJob, ShardWriter, encode_batch


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


def make_stores(
    features_root: str | Path, manifest: Manifest, image_encoder, text_encoder, tokenizer=None
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
    manifest: Manifest,
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
            tree = CategoryTree.from_json(manifest.tree_paths)
            names = manifest.attribute_names
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
        manifest: Manifest,
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
        self.tree = CategoryTree.from_json(manifest.tree_paths)
        self.attribute_names = manifest.attribute_names
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
