"""``clipita index``: embed a catalogue's products with a trained model into a searchable index folder.

    clipita index --ckpt runs/clip_ita/checkpoints/last.ckpt --output_dir work/fashion/index/clip_ita \\
        [--fit_config runs/clip_ita/version_0/config.yaml] [--split test|val|train|all] [--faiss true]

The catalogue comes from the DataModule arguments stored in the checkpoint's ``clipita`` record (read with
``weights_only=True``: no pickled code runs), or ``--fit_config``'s ``data``.

Indexing is a Lightning predict job (:mod:`clipita.retrieval.index_job`): every rank (``--devices``/``--num_nodes``/
``--strategy``; torchrun and SLURM launch it unchanged) embeds its share of the input shards and writes one index
shard per input shard; a killed run resumes without re-embedding finished shards. The folder::

    shards/            per input shard: embedding.npy (float32 [n, D], the retrieval vectors), embedding16.npy (float16
                       copy for the half-precision scan), any extra arrays, products.parquet, ids.npy
                       (:mod:`clipita.retrieval.index_shards`); row order = products.parquet's
    products.parquet   id (the original product id), title ("" when none), category ("A > B > C", for display
                       only), category_path (the path as a JSON list of names: what programs read), split, shard
                       (file name in shard_dir), key (the shard key), jpg_offset, jpg_size (the JPEG's byte range
                       inside the uncompressed tar: thumbnails are read with one seek, no tar scan)
    product_ids.json   the ids in row order
    index.json         checkpoint, fit config, model hparams, dims, shard_dir, the category tree and the unseen
                       categories of the split, the shards, and the FAISS index's parameters when one was built;
                       written last, once every shard is there (its presence marks the index complete); the
                       names and ``index.json`` are typed in :mod:`clipita_core.index_info` (what search reads)
    faiss.index        (``--faiss true``) an approximate index beside the exact one: HNSW (default) or IVF-Flat,
                       inner product

Search with ``clipita search --index <folder> "Footwear > Shoes"`` (:mod:`clipita.retrieval.search`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from clipita.experiment import read_fit_config, section
from clipita_core.index_info import (
    FAISS_NAME,
    FORMAT1_EMBEDDINGS,
    INDEX_JSON,
    INDEX_LAYOUT,
    PRODUCT_IDS_NAME,
    PRODUCTS_NAME,
    IndexInfo,
)
from clipita_core.index_info import write as write_index_info
from clipita_core.vocabulary import SPLITS
from datamodules.catalogue_datamodule import CatalogueDataModule
from datamodules.features import LEXICAL_TOKENS, FeatureCacheError, products_fingerprint
from datamodules.shard_jobs import shard_loader

from .faiss_index import FaissKind, build_faiss_index
from .index_job import IndexJob, IndexShardBatches, plan
from .index_shards import (
    BASE_ARRAYS,
    EMBEDDING,
    EXTRA_ARRAYS,
    IndexShards,
    manifest_index_shards,
    merge_products,
)

SplitChoice = Literal["test", "val", "train", "all"]


# --------------------------------------------------------------------------------------------- the DataModule
class IndexDataModule(CatalogueDataModule):
    """The catalogue DataModule serving ``clipita index``: after the usual setup (feature cache built or reused),
    global rank 0 prepares the index's ``shards/`` folder and every rank's predict loader reads its missing shards.

    Set ``index_dir``, ``index_splits`` and ``index_meta`` after construction.
    """

    index_dir: Path
    index_splits: tuple[str, ...] = ("test",)
    index_meta: dict[str, Any]
    index_shards: IndexShards | None = None
    index_workers: int | None = None

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        rank, _, barrier = self._rank()
        arrays = [*BASE_ARRAYS, *EXTRA_ARRAYS]
        if self.lexical_tokenizer() is not None:  # from the token store or tokenized with the raw batches
            arrays.insert(2, LEXICAL_TOKENS)  # the model scores with a BM25 term: keep the products' tokens
        shards = manifest_index_shards(self.manifest, self.index_splits)
        self.index_shards = IndexShards(self.index_dir, shards, arrays=arrays)
        try:
            products = products_fingerprint(self.manifest)
        except FeatureCacheError:  # an old manifest without per-shard sha256s
            products = self.manifest.content_hash
        meta = {**self.index_meta, "products": products, "arrays": arrays}
        if rank == 0:
            out = Path(self.index_dir)
            for stale in (
                INDEX_JSON,
                FAISS_NAME,
                FORMAT1_EMBEDDINGS,
            ):  # the index is complete again only at the end
                (out / stale).unlink(missing_ok=True)
            if self.index_shards.prepare(meta):
                print(f"{out}: discarded index shards of another checkpoint or catalogue")
        if barrier is not None:
            barrier()

    def predict_dataloader(self) -> Any:
        rank, world_size, _ = self._rank()
        assert self.index_shards is not None, "setup() first"
        jobs = plan(self.index_shards, rank, world_size)
        h = self.hparams
        features = {split: self.datasets[split] for split in self.index_splits} if h.use_features else None
        transform = None
        if not h.use_features:
            image_encoder, _ = self.towers()
            if image_encoder is None:
                raise ValueError(
                    "indexing raw shards needs an image encoder (its transform decodes the images)"
                )
            transform = image_encoder.transform
        tokenizer = None if h.use_features else self.lexical_tokenizer()  # features: the token store's rows
        dataset = IndexShardBatches(
            jobs, h.eval_batch_size, features, str(self.shard_dir), transform, self.tree,
            tokenizer, self.attribute_names,
        )  # fmt: skip
        workers = h.num_workers if self.index_workers is None else self.index_workers
        return shard_loader(dataset, workers)


def checkpoint_digest(ckpt: str | Path, block: int = 1 << 22) -> str:
    """sha256 of a checkpoint file (what the index shards were embedded with)."""
    import hashlib

    digest = hashlib.sha256()
    with open(ckpt, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_data_options(ckpt: str | Path) -> dict[str, Any]:
    """The DataModule arguments a checkpoint was trained with: its ``clipita`` record's ``data``
    (:func:`lightning_modules.checkpointing.data_options`; read with ``weights_only=True``, no pickled code runs)."""
    from lightning_modules.checkpointing import data_options

    data = data_options(ckpt)
    if not data:
        raise ValueError(
            f"{ckpt} records no DataModule arguments; pass --fit_config (the run's config.yaml or the experiment "
            "YAML it was trained with)"
        )
    return data


def config_data_options(fit_config: str | Path) -> dict[str, Any]:
    """The ``data`` section of a ``clipita fit`` config (plain or ``class_path``/``init_args`` form)."""
    return section(read_fit_config(fit_config), "data")


def datamodule_kwargs(
    data: dict[str, Any], origin: str = "the fit config", **overrides: Any
) -> dict[str, Any]:
    """CatalogueDataModule keyword arguments from recorded data options.

    Keys this version of the DataModule does not accept are dropped with a warning (options recorded by another
    version); ``overrides`` that are not None replace recorded values.

    Args:
        data: the recorded options (:func:`checkpoint_data_options` or :func:`config_data_options`).
        origin: where they came from, for the warning.
        **overrides: e.g. ``work_dir=...``, ``eval_batch_size=...``.
    """
    data = dict(data)
    data.update({k: v for k, v in overrides.items() if v is not None})
    accepted = set(inspect.signature(CatalogueDataModule.__init__).parameters) - {"self"}
    unknown = sorted(set(data) - accepted)
    if unknown:
        warnings.warn(
            f"{origin}: ignoring data options this DataModule does not take: {unknown}", stacklevel=2
        )
    return {k: v for k, v in data.items() if k in accepted}


def resolve_splits(split: str) -> tuple[str, ...]:
    if split == "all":
        return tuple(SPLITS)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS) + ['all']}, got {split!r}")
    return (split,)


# ---------------------------------------------------------------------------------------------------- index
def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def finish_index(
    out: str | Path,
    shards: IndexShards,
    info: IndexInfo,
    faiss: bool = False,
    faiss_kind: FaissKind = "hnsw",
) -> IndexInfo | None:
    """Assemble an index from its finished shards (rank 0, after every rank wrote its shards).

    Writes ``products.parquet`` and ``product_ids.json`` (shard by shard), the FAISS index when asked, and, last,
    ``index.json``: ``info`` (what the index was built from) with the sizes, arrays, shards and FAISS parameters.

    Raises:
        RuntimeError: a shard is missing (a rank failed): run the same command again to finish it.
    """
    out = Path(out)
    missing = shards.missing()
    if missing:
        raise RuntimeError(
            f"{len(missing)} index shard(s) were not written, e.g. {missing[:5]}; run clipita index again"
        )
    ids = merge_products(shards, out / PRODUCTS_NAME)
    (out / PRODUCT_IDS_NAME).write_text(json.dumps(ids))
    embeddings = shards.rows(EMBEDDING)
    first = next(s.name for s in shards.shards if s.count)
    info = dataclasses.replace(
        info,
        num_products=int(embeddings.shape[0]),
        embed_dim=int(embeddings.shape[1]),
        normalized=False,  # encode_product_for_retrieval as is (unit blocks, concatenated)
        arrays={a: str(np.load(shards.path(first, a), mmap_mode="r").dtype) for a in shards.arrays},
        shards=list(shards.shards),
        faiss=None,
    )
    if faiss:
        started = time.perf_counter()
        faiss_index, params = build_faiss_index(embeddings, kind=faiss_kind)
        import faiss as faiss_lib

        faiss_lib.write_index(faiss_index, str(out / FAISS_NAME))
        params["build_seconds"] = round(time.perf_counter() - started, 3)
        info.faiss = params
    write_index_info(out, info)  # written last: the index is complete
    return info


def index(
    *,
    ckpt: str,
    output_dir: str,
    fit_config: str | None = None,
    split: SplitChoice = "test",
    faiss: bool = False,
    faiss_kind: FaissKind = "hnsw",
    work_dir: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    precision: str | None = None,
    progress: bool = True,
) -> IndexInfo | None:
    """Embed the products of a catalogue split with a trained model into a search index folder.

    A Lightning predict job (:class:`~clipita.retrieval.index_job.IndexJob`): the products are read by the
    DataModule of the run's fit config (its feature cache when ``use_features``, raw shards otherwise), every rank
    embeds its share of the input shards and writes one index shard per input shard
    (:mod:`clipita.retrieval.index_shards`). Shards already done by an earlier run with the same checkpoint and
    catalogue are skipped (a killed index resumes); rank 0 writes ``products.parquet``, ``product_ids.json``, the
    FAISS index and, last, ``index.json`` once every shard is there.

    Args:
        ckpt: a model checkpoint written by ``clipita fit`` (e.g. ``runs/clip_ita/checkpoints/last.ckpt``).
        output_dir: the index folder to write (shards/, products.parquet, index.json[, faiss.index]).
        fit_config: a ``clipita fit`` config whose ``data`` section describes the catalogue (default: the
            DataModule arguments recorded in the checkpoint, i.e. the data the model was trained on).
        split: which products to index: ``test`` (held-out and unseen-category products), ``val``, ``train`` or
            ``all``.
        faiss: also build an approximate FAISS index beside the exact one (needs ``faiss-cpu``).
        faiss_kind: ``hnsw`` (graph, no training) or ``ivf`` (IVF-Flat, k-means lists).
        work_dir: override the config's ``data.work_dir`` (where shards and feature caches live).
        batch_size: products per predict batch (default: the config's ``data.eval_batch_size``).
        num_workers: reading/decoding workers per rank (default: the config's ``data.num_workers``).
        accelerator: Lightning accelerator (``cpu``, ``gpu``, ``auto``).
        devices: devices (or processes) per node.
        num_nodes: nodes (torchrun and SLURM launch the job unchanged).
        strategy: Lightning strategy, e.g. ``ddp`` for several devices.
        precision: Lightning precision, e.g. ``bf16-mixed`` (default: 32-bit).
        progress: show the progress bar.

    Returns:
        The ``index.json`` content (on rank 0; other ranks return None).
    """
    import lightning as L

    from lightning_modules import load_model

    started = time.perf_counter()
    splits = resolve_splits(split)
    if fit_config:
        data, origin = config_data_options(fit_config), str(fit_config)
    else:
        data, origin = checkpoint_data_options(ckpt), str(ckpt)
    data = datamodule_kwargs(data, origin, work_dir=work_dir, eval_batch_size=batch_size)
    data.pop("encoders", None)
    net = load_model(ckpt, map_location="cpu")
    dm = IndexDataModule(
        **data, encoders=net
    )  # the network's frozen towers build the cache / transform images
    out = Path(output_dir)
    dm.index_dir, dm.index_splits, dm.index_workers = out, splits, num_workers
    dm.index_meta = {
        "layout": INDEX_LAYOUT,
        "checkpoint_sha256": checkpoint_digest(ckpt),
        "splits": list(splits),
        "use_features": bool(dm.hparams.use_features),
        "extra_arrays": sorted(EXTRA_ARRAYS),
    }  # the products' fingerprint is added once the manifest is read (setup)
    net.eval()

    def assemble() -> IndexInfo:  # global rank 0, once every rank's shards are written
        assert dm.index_shards is not None
        info = IndexInfo(
            checkpoint=str(Path(ckpt).resolve()),
            tree=[tuple(p) for p in dm.tree.paths],
            unseen_categories=[tuple(p) for p in dm.manifest.unseen_categories],
            modalities=list(net.modalities),
            splits=list(splits),
            shard_dir=str(Path(dm.shard_dir).resolve()),
            provenance={
                "created_by": "clipita index",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "fit_config": str(Path(fit_config).resolve()) if fit_config else None,
                "data": _jsonable(data),
                "hparams": _jsonable(net.config),
                "category_text": net.category_text,
                "manifest_content_hash": dm.manifest.content_hash,
                "world_size": trainer.world_size,
            },
        )
        return finish_index(out, dm.index_shards, info, faiss=faiss, faiss_kind=faiss_kind)

    job = IndexJob(net, assemble)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,  # the job splits shards across ranks itself
    )
    # every rank writes its shards, then global rank 0 assembles the folder (IndexJob.assemble)
    trainer.predict(job, datamodule=dm, return_predictions=False)
    if not trainer.is_global_zero:
        return None
    info = job.assembled
    info.provenance["seconds"] = round(time.perf_counter() - started, 3)
    write_index_info(out, info)
    seconds = info.provenance["seconds"]
    extra = f", FAISS {info.faiss_kind}" if info.faiss else ""
    print(
        f"Indexed {info.num_products:,} products ({'+'.join(splits)}) x {info.embed_dim} dims into {out}"
        f'{extra} in {seconds:.1f} s. Search: clipita search --index {out} "<category>" -k 10'
    )
    return info
