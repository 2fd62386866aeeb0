"""Encoding the feature store: the encode job of the sharded predict-job runner (:mod:`datamodules.shard_jobs`).

Every rank encodes its share of the input shards (shard ``i`` of the manifest goes to rank ``i % world_size``), each
with several decoding workers; a shard's feature shards are written when its last batch is encoded
(``FeatureStore.write_shard``) and finished shards are skipped on the next run. The cache is marked complete by
global rank 0 after a barrier, and only when every shard is there.

The same job (:class:`EncodeJob`) runs as a Lightning predict job (``clipita encode`` with the Trainer's
devices/num_nodes/strategy, so torchrun and SLURM launch it unchanged) and inside the DataModule's ``setup`` on
every rank of a fit (:func:`encode_features`, with the trainer's rank and barrier).

The per-shard steps (decoding batches, encoding a batch, writing a finished shard) live in
``datamodules.shard_encoding``; this module holds what the job adds on top of them: the stores of a set of
encoders (``make_stores``), the shard plan (``plan``: which rank encodes which shard) and the job itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipita_core.manifest import Manifest
from clipita_core.tree import CategoryTree
from datamodules.feature_reuse import reuse_indexes
from datamodules.features import FeatureStore
from datamodules.lexical_store import tokenizer_key
from datamodules.shard_encoding import ShardBatches, ShardJob, encode_batch, write_feature_shard
from datamodules.shard_jobs import ShardPredictJob, rank_share, run_in_process, shard_loader


@dataclass(frozen=True)
class EncodeOptions:
    """How the feature cache is encoded: the one declaration of the encode options and their defaults. The
    DataModule's ``data.encode_batch_size`` / ``data.encode_workers`` (what a fit's own encoding and ``clipita
    encode`` both use: ``CatalogueDataModule.encode_options``) and the job's ``batch_size`` / ``num_workers``
    default to these.

    Attributes:
        batch_size: images per encoder forward pass (a batch never spans two shards).
        num_workers: image-decoding worker processes per rank.
    """

    batch_size: int = 64
    num_workers: int = 2


ENCODE_DEFAULTS = EncodeOptions()


def plan(stores: dict[str, FeatureStore], rank: int, world_size: int) -> list[ShardJob]:
    """This rank's shards that still miss a feature shard (the assignment ignores what is done: see module doc)."""
    reference = next(iter(stores.values()))

    def missing(name: str) -> list[bool]:
        return [k in stores and not stores[k].shard_done(name) for k in ("image", "text", "lexical")]

    mine = rank_share(reference.shards, rank, world_size, done=lambda shard: not any(missing(shard[0])))
    return [ShardJob(name, count, *missing(name)) for name, count, _ in mine]


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


class EncodeJob(ShardPredictJob):
    """The encode job: the loader's workers decode a rank's missing shards (:class:`ShardBatches`), each batch is
    encoded (:func:`encode_batch`), a finished shard's feature shards are written (:func:`write_feature_shard`) and
    global rank 0 marks the stores complete once every rank is done. Under ``Trainer.predict`` the progress bar
    advances per batch (images and texts together).

    Args:
        reuse: copy the rows of shards whose products another complete store of the same encoders holds
            (``datamodules.feature_reuse``).
        tokenizer: a lexical tokenizer (``tokenize(texts) -> list[np.ndarray]``, ``num_buckets``,
            ``tokenizer_id``): each product's token ids are stored as well.
    """

    def __init__(
        self,
        shard_dir: str,
        manifest: Manifest,
        features_root: str | Path,
        image_encoder,
        text_encoder,
        batch_size: int = ENCODE_DEFAULTS.batch_size,
        num_workers: int = ENCODE_DEFAULTS.num_workers,
        reuse: bool = True,
        tokenizer=None,
    ) -> None:
        super().__init__("encode")
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

    def loader(self, rank: int, world_size: int) -> torch.utils.data.DataLoader:
        for store in self.stores.values():
            store.prepare()
        jobs = plan(self.stores, rank, world_size)
        for encoder in (self.image_encoder, self.text_encoder) if jobs else ():
            if encoder is not None:
                encoder.eval()
        transform = self.image_encoder.transform if self.image_encoder is not None else None
        reuse = reuse_indexes(self.stores, self.shard_dir, self.reuse) if jobs else {}
        return shard_loader(
            ShardBatches(self.shard_dir, jobs, transform, self.batch_size, reuse), self.num_workers
        )

    def predict_dataloader(self) -> torch.utils.data.DataLoader:
        return self.loader(self.global_rank, self.trainer.world_size)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # lists and an optional tensor: encode_batch moves the images itself

    def encode_item(self, item: dict[str, Any]) -> dict[str, Any]:
        return encode_batch(
            item,
            self.image_encoder,
            self.text_encoder,
            self.tree,
            self.attribute_names,
            tokenizer=self.tokenizer,
        )

    def write_shard(self, shard: str, parts: list[dict[str, Any]]) -> None:
        write_feature_shard(self.stores, shard, parts)

    def assemble(self) -> None:
        for store in self.stores.values():
            store.mark_complete()


def encode_features(
    shard_dir: str,
    manifest: Manifest,
    features_root: str | Path,
    image_encoder,
    text_encoder,
    batch_size: int = ENCODE_DEFAULTS.batch_size,
    num_workers: int = ENCODE_DEFAULTS.num_workers,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    progress: bool = True,
    reuse: bool = True,
    tokenizer=None,
) -> list[FeatureStore]:
    """Encode this rank's missing feature shards, wait for the other ranks, and return the complete stores: the
    :class:`EncodeJob` run in this process (:func:`datamodules.shard_jobs.run_in_process`).

    Every rank of a job calls this with its ``rank`` and a ``barrier`` over all ranks (None for one process).
    With ``reuse``, shards whose products another complete store of the same encoders holds are copied from it
    (``datamodules.feature_reuse``). With a lexical ``tokenizer`` (an object with ``tokenize(texts) ->
    list[np.ndarray]``, ``num_buckets`` and ``tokenizer_id``), each product's token ids are stored as well.
    """
    job = EncodeJob(
        shard_dir,
        manifest,
        features_root,
        image_encoder,
        text_encoder,
        batch_size,
        num_workers,
        reuse,
        tokenizer,
    )
    if not all(s.is_complete() for s in job.stores.values()):
        run_in_process(job, rank, world_size, barrier, progress)
    for store in job.stores.values():
        store.require_complete()
    return list(job.stores.values())
