"""``clipita index``: embed a catalogue's products with a trained model into a searchable index folder.

    clipita index --ckpt runs/clip_ita/checkpoints/last.ckpt --output_dir work/fashion/index/clip_ita \\
        [--fit_config runs/clip_ita/version_0/config.yaml] [--split test|val|train|all] [--faiss true]

The catalogue comes from the DataModule arguments stored in the checkpoint (or ``--fit_config``'s ``data``).

The products go through Lightning's predict path (``trainer.predict`` with :class:`EmbeddingWriter`, per-rank part
files merged on rank 0), so indexing runs on one CPU, one GPU or many under DDP like training does. The folder::

    embeddings.npy     float32 [N, D], L2-normalised; row i is products.parquet row i
    product_ids.json   the ids in row order (the writer's own record)
    products.parquet   id (the original product id), title ("" when none), category ("A > B > C", for display
                       only), category_path (the path as a JSON list of names: what programs read), split, shard
                       (file name in shard_dir), key (the shard key), jpg_offset, jpg_size (the JPEG's byte range
                       inside the uncompressed tar: thumbnails are read with one seek, no tar scan)
    index.json         checkpoint, fit config, model hparams, dims, shard_dir, the category tree and the unseen
                       categories of the split, and the FAISS index's parameters when one was built
    faiss.index        (``--faiss true``) an approximate index beside the exact one: HNSW (default) or IVF-Flat,
                       inner product

Search with ``clipita search --index <folder> "Footwear > Shoes"`` (:mod:`clipita.search`).
"""

from __future__ import annotations

import inspect
import json
import math
import tarfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from torch.utils.data import ConcatDataset, DataLoader

from clipita.experiment import read_fit_config, section
from datamodules.catalogue_datamodule import CatalogueDataModule
from datamodules.category_tree import format_path
from datamodules.records import category_to_text, decode_json
from datamodules.sharding import SPLITS, shard_urls

from .prediction_writer import EMBEDDINGS_NAME, PRODUCT_IDS_NAME, EmbeddingWriter

INDEX_VERSION = 1
INDEX_JSON = "index.json"
PRODUCTS_NAME = "products.parquet"
FAISS_NAME = "faiss.index"
PRODUCT_COLUMNS = [
    "id", "title", "category", "category_path", "split", "shard", "key", "jpg_offset", "jpg_size",
]  # fmt: skip

SplitChoice = Literal["test", "val", "train", "all"]
FaissKind = Literal["hnsw", "ivf"]


# --------------------------------------------------------------------------------------------- the DataModule
class IndexDataModule(CatalogueDataModule):
    """The catalogue DataModule whose predict loaders serve the splits chosen for the index (one loader each).

    Set ``index_splits`` after construction (default: ``("test",)``, the parent's predict split).
    """

    index_splits: tuple[str, ...] = ("test",)

    def predict_dataloader(self) -> Any:
        splits = tuple(self.index_splits)
        if len(splits) == 1:
            return self._loader(splits[0], training=False)
        # one loader over several splits (``predict_step`` takes no ``dataloader_idx``), in split order
        h = self.hparams
        if h.use_features:
            return DataLoader(
                ConcatDataset([self.datasets[split] for split in splits]),
                batch_size=h.eval_batch_size,
                shuffle=False,
                num_workers=h.num_workers,
                persistent_workers=h.num_workers > 0,
            )
        from datamodules.shard_pipeline import build_shard_pipeline

        return build_shard_pipeline(
            [url for split in splits for url in shard_urls(self.manifest, str(self.shard_dir), split)],
            self.towers()[0].transform,
            self.tree,
            h.eval_batch_size,
            training=False,
            epoch_samples=sum(self.split_size(split) for split in splits),
            seed=h.split_seed,
            num_workers=h.num_workers,
        )


def checkpoint_data_options(ckpt: str | Path) -> dict[str, Any]:
    """The DataModule arguments a checkpoint was trained with (Lightning stores them beside the weights)."""
    import torch

    checkpoint = torch.load(str(ckpt), map_location="cpu", weights_only=False)
    data = checkpoint.get("datamodule_hyper_parameters")
    if not data:
        raise ValueError(
            f"{ckpt} records no DataModule arguments; pass --fit_config (the run's config.yaml or the experiment "
            "YAML it was trained with)"
        )
    return {k: v for k, v in dict(data).items() if not k.startswith("_")}


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


# ------------------------------------------------------------------------------------------------- metadata
def read_shard_metadata(shard_path: str | Path) -> list[dict[str, Any]]:
    """One row per record of an uncompressed WebDataset tar: its JSON fields and the JPEG's byte range.

    Only tar headers and the small JSON members are read (tarfile seeks past the image data).

    Returns:
        Dicts with ``id`` (the original product id), ``title``, ``category`` (display string), ``category_path``
        (JSON list of names), ``split``, ``shard`` (file name), ``key``, ``jpg_offset`` and ``jpg_size`` (-1 when
        the record has no ``jpg``), in the tar's order.
    """
    shard_path = Path(shard_path)
    records: dict[str, dict[str, Any]] = {}
    with tarfile.open(shard_path, mode="r:") as archive:
        for member in archive:
            if not member.isreg():
                continue
            directory, _, base = member.name.rpartition("/")
            stem, dot, ext = base.partition(".")
            if not dot:
                continue
            key = f"{directory}/{stem}" if directory else stem
            row = records.setdefault(
                key,
                {
                    "id": key,  # the JSON (always written) holds the original id
                    "title": "",
                    "category": "",
                    "category_path": "[]",
                    "split": "",
                    "shard": shard_path.name,
                    "key": key,
                    "jpg_offset": -1,
                    "jpg_size": -1,
                },
            )
            if ext == "json":
                record = decode_json(archive.extractfile(member).read(), key)
                row["id"] = record.id
                row["title"] = record.title
                row["category"] = format_path(record.category)
                row["category_path"] = category_to_text(record.category)
                row["split"] = record.split
            elif ext == "jpg":
                row["jpg_offset"] = member.offset_data
                row["jpg_size"] = member.size
    return list(records.values())


def products_frame(manifest: dict, shard_dir: str | Path, splits: Sequence[str]) -> pd.DataFrame:
    """Metadata of every product of ``splits``, in shard order (the order the predict loaders serve them)."""
    rows: list[dict[str, Any]] = []
    for split in splits:
        for url in shard_urls(manifest, str(shard_dir), split):
            for row in read_shard_metadata(url):
                row["split"] = row["split"] or split
                rows.append(row)
    frame = pd.DataFrame(rows, columns=PRODUCT_COLUMNS)
    duplicated = frame["id"].duplicated()
    if duplicated.any():
        raise ValueError(f"product ids repeat across shards, e.g. {frame['id'][duplicated].head(5).tolist()}")
    return frame.astype({"jpg_offset": "int64", "jpg_size": "int64"})


# ---------------------------------------------------------------------------------------------------- FAISS
def default_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: ``~4 sqrt(n)``, but at least 39 training points per list, and >= 1."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def build_faiss_index(
    embeddings: np.ndarray,
    kind: FaissKind = "hnsw",
    hnsw_m: int = 32,
    ef_construction: int = 200,
    ef_search: int = 128,
    nlist: int | None = None,
    nprobe: int | None = None,
    train_size: int = 100_000,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """An inner-product FAISS index over ``embeddings`` (float32 ``[N, D]``).

    Args:
        embeddings: the vectors (L2-normalised: inner product = cosine).
        kind: ``hnsw`` (``IndexHNSWFlat``: graph, no training) or ``ivf`` (``IndexIVFFlat``: k-means lists).
        hnsw_m: HNSW neighbours per node.
        ef_construction: HNSW build-time beam.
        ef_search: HNSW query-time beam (stored; ``clipita search --ef_search`` overrides).
        nlist: IVF lists (default :func:`default_nlist`).
        nprobe: IVF lists scanned per query (default ``max(1, nlist // 16)``, at least 8 when there are that many).
        train_size: IVF k-means sample size.
        seed: IVF training sample seed.

    Returns:
        ``(index, params)``; ``params`` go into ``index.json``.
    """
    try:
        import faiss
    except ImportError as exc:
        raise ImportError("a FAISS index needs faiss-cpu: pip install 'clipita[faiss]'") from exc
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x.shape
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        index.add(x)
        params = {"kind": kind, "m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
    elif kind == "ivf":
        nlist = nlist or default_nlist(n)
        nprobe = nprobe or min(nlist, max(8, nlist // 16))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = x
        if n > train_size:
            sample = x[np.sort(np.random.default_rng(seed).choice(n, train_size, replace=False))]
        index.train(sample)
        index.add(x)
        index.nprobe = nprobe
        params = {"kind": kind, "nlist": nlist, "nprobe": nprobe}
    else:
        raise ValueError(f"unknown FAISS index kind {kind!r}; expected 'hnsw' or 'ivf'")
    params.update({"file": FAISS_NAME, "metric": "inner_product", "ntotal": int(index.ntotal)})
    return index, params


# ---------------------------------------------------------------------------------------------------- index
def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


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
    accelerator: str = "auto",
    devices: int | str = 1,
    strategy: str = "auto",
    precision: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Embed the products of a catalogue split with a trained model into a search index folder.

    The products are read by the DataModule of the run's fit config (its feature cache when ``use_features``,
    raw shards otherwise) and embedded through ``trainer.predict``; under DDP every rank writes its own part files
    and rank 0 merges them.

    Args:
        ckpt: a model checkpoint written by ``clipita fit`` (e.g. ``runs/clip_ita/checkpoints/last.ckpt``).
        output_dir: the index folder to write (embeddings.npy, products.parquet, index.json[, faiss.index]).
        fit_config: a ``clipita fit`` config whose ``data`` section describes the catalogue (default: the
            DataModule arguments recorded in the checkpoint, i.e. the data the model was trained on).
        split: which products to index: ``test`` (held-out and unseen-category products), ``val``, ``train`` or
            ``all``.
        faiss: also build an approximate FAISS index beside the exact one (needs ``faiss-cpu``).
        faiss_kind: ``hnsw`` (graph, no training) or ``ivf`` (IVF-Flat, k-means lists).
        work_dir: override the config's ``data.work_dir`` (where shards and feature caches live).
        batch_size: products per predict batch (default: the config's ``data.eval_batch_size``).
        accelerator: Lightning accelerator (``cpu``, ``gpu``, ``auto``).
        devices: devices (or processes) to predict on.
        strategy: Lightning strategy, e.g. ``ddp`` for several devices.
        precision: Lightning precision, e.g. ``bf16-mixed`` (default: 32-bit).
        progress: show the progress bar.

    Returns:
        The ``index.json`` content (on rank 0; other ranks return an empty dict).
    """
    import lightning as L

    from lightning_modules import load_model
    from lightning_modules.clip_ita_module import ClipItaModule

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
    dm.index_splits = splits
    module = ClipItaModule(net)  # predict only runs the network
    module.eval()
    out = Path(output_dir)

    frames: dict[str, pd.DataFrame] = {}

    def product_order() -> list[str]:  # called on rank 0 at merge time, once setup has read the manifest
        frames["products"] = products_frame(dm.manifest, dm.shard_dir, splits)
        return frames["products"]["id"].tolist()

    writer = EmbeddingWriter(out, order=product_order, normalize=True)
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        logger=False,
        callbacks=[writer],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
    )
    trainer.predict(module, datamodule=dm, return_predictions=False)
    if not trainer.is_global_zero:
        return {}
    assert writer.result is not None
    ids, embeddings = writer.result
    products = frames["products"]
    if products["id"].tolist() != ids:
        raise RuntimeError("embedding rows and product metadata are out of order")
    products.to_parquet(out / PRODUCTS_NAME, index=False)

    info: dict[str, Any] = {
        "version": INDEX_VERSION,
        "created_by": "clipita index",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": str(Path(ckpt).resolve()),
        "fit_config": str(Path(fit_config).resolve()) if fit_config else None,
        "data": _jsonable(data),
        "hparams": _jsonable(module.net.config),
        "category_text": module.net.category_text,
        "modalities": list(module.net.modalities),
        "num_products": int(embeddings.shape[0]),
        "embed_dim": int(embeddings.shape[1]),
        "normalized": True,
        "splits": list(splits),
        "shard_dir": str(Path(dm.shard_dir).resolve()),
        "manifest_content_hash": dm.manifest.get("content_hash"),
        "tree": [list(p) for p in dm.tree.paths],
        "unseen_categories": [list(p) for p in dm.manifest.get("unseen_categories", [])],
        "files": {"embeddings": EMBEDDINGS_NAME, "products": PRODUCTS_NAME, "product_ids": PRODUCT_IDS_NAME},
        "faiss": None,
    }
    if faiss:
        faiss_started = time.perf_counter()
        faiss_index, params = build_faiss_index(embeddings, kind=faiss_kind)
        import faiss as faiss_lib

        faiss_lib.write_index(faiss_index, str(out / FAISS_NAME))
        params["build_seconds"] = round(time.perf_counter() - faiss_started, 3)
        info["faiss"] = params
    info["seconds"] = round(time.perf_counter() - started, 3)
    (out / INDEX_JSON).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    extra = f", FAISS {info['faiss']['kind']}" if info["faiss"] else ""
    print(
        f"Indexed {info['num_products']:,} products ({'+'.join(splits)}) x {info['embed_dim']} dims into {out}"
        f'{extra} in {info["seconds"]:.1f} s. Search: clipita search --index {out} "<category>" -k 10'
    )
    return info
