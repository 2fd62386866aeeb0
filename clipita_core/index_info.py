"""The index folder's contract: its file names, ``index.json`` typed (:class:`IndexInfo`), and the one policy for
old versions (refused with one line, as old checkpoints are).

``clipita index`` writes the folder (:func:`write`, last, once every shard is there: its presence marks the index
complete); ``clipita search`` and ``clipita gallery`` read it (:func:`read`). Neither side imports the other::

    shards/            per input shard: the per-product arrays, the product table, the ids
                       (``clipita.retrieval.index_shards``); row order = products.parquet's
    products.parquet   the product table (``clipita.retrieval.shard_metadata.PRODUCT_COLUMNS``), row i = product i
    product_ids.json   the ids in row order
    index.json         this module's :class:`IndexInfo`
    faiss.index        (``--faiss true``) the approximate index beside the exact one

Only format :data:`INDEX_VERSION` is read: a folder written by an older ``clipita index`` (format 1: one
``embeddings.npy``) is refused with :class:`IndexFormatError`; rebuild it with ``clipita index``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from clipita_core.paths import CategoryPath

INDEX_VERSION = 2  # per-shard arrays under shards/ (1, one embeddings.npy, is refused)
INDEX_LAYOUT = "shards-v1"  # the layout of shards/ (recorded in shards/meta.json too)
INDEX_JSON = "index.json"
PRODUCTS_NAME = "products.parquet"
PRODUCT_IDS_NAME = "product_ids.json"
SHARDS_DIR = "shards"
SHARD_META = "meta.json"  # under shards/: what the shards were embedded with
FAISS_NAME = "faiss.index"
FORMAT1_EMBEDDINGS = "embeddings.npy"  # format 1's one array: only ever deleted (re-indexing into its folder)


class IndexFormatError(ValueError):
    """A folder that is not an index of the current format (:data:`INDEX_VERSION`)."""


@dataclass(frozen=True)
class IndexShard:
    """One input shard of the index: its split, file name and record count (from the manifest)."""

    split: str
    name: str
    count: int


@dataclass
class IndexInfo:
    """``index.json``: what an index folder holds and how it was built.

    Attributes:
        checkpoint: the model checkpoint the products were embedded with (the query tower's default).
        shards: the input shards, in row order (``shards/<stem>.*``).
        arrays: the per-product arrays stored per shard, name -> dtype (``files.arrays``; the float32
            ``embedding`` first).
        num_products: rows of the index.
        embed_dim: width of the retrieval vectors.
        normalized: whether the vectors were normalised (False: the model's retrieval vectors as they are).
        tree: every category path of the catalogue tree.
        unseen_categories: the categories held out of training.
        modalities: the model's modalities.
        splits: the catalogue splits indexed.
        shard_dir: the catalogue's WebDataset shards (thumbnails are cut from them).
        faiss: the FAISS index's parameters (``kind``, ``file``, search-time settings, ...) when one was built.
        provenance: everything else recorded (``created``, ``data``, ``hparams``, ``seconds``, ...), kept as is.
        version: the format (:data:`INDEX_VERSION`).
        layout: the layout of ``shards/`` (:data:`INDEX_LAYOUT`).
    """

    checkpoint: str | None = None
    shards: list[IndexShard] = field(default_factory=list)
    arrays: dict[str, str] = field(default_factory=dict)
    num_products: int | None = None
    embed_dim: int | None = None
    normalized: bool = False
    tree: list[CategoryPath] = field(default_factory=list)
    unseen_categories: list[CategoryPath] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    shard_dir: str | None = None
    faiss: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    version: int = INDEX_VERSION
    layout: str = INDEX_LAYOUT

    @property
    def faiss_kind(self) -> str | None:
        """``hnsw`` or ``ivf`` when a FAISS index was built, else None."""
        return self.faiss["kind"] if self.faiss else None

    @property
    def faiss_file(self) -> str:
        return (self.faiss or {}).get("file", FAISS_NAME)

    def to_json(self) -> dict[str, Any]:
        """The ``index.json`` object."""
        return {
            "version": self.version,
            "layout": self.layout,
            **self.provenance,
            "checkpoint": self.checkpoint,
            "modalities": list(self.modalities),
            "splits": list(self.splits),
            "shard_dir": self.shard_dir,
            "tree": [list(p) for p in self.tree],
            "unseen_categories": [list(p) for p in self.unseen_categories],
            "num_products": self.num_products,
            "embed_dim": self.embed_dim,
            "normalized": self.normalized,
            "files": {
                "products": PRODUCTS_NAME,
                "product_ids": PRODUCT_IDS_NAME,
                "shards": SHARDS_DIR,
                "arrays": dict(self.arrays),
            },
            "shards": [{"split": s.split, "name": s.name, "count": s.count} for s in self.shards],
            "faiss": self.faiss,
        }

    @classmethod
    def from_json(cls, raw: Any, origin: str = "index.json") -> IndexInfo:
        """Parse an ``index.json`` object; an older format is refused with one line (:class:`IndexFormatError`)."""
        version = raw.get("version", 1) if isinstance(raw, dict) else None
        if version != INDEX_VERSION or "shards" not in raw:
            raise IndexFormatError(
                f"{origin}: written by an older clipita index (index format {version}, this clipita reads format "
                f"{INDEX_VERSION}: per-shard arrays under {SHARDS_DIR}/); rebuild it with clipita index"
            )
        typed = {f.name for f in fields(cls)} | {"files"}
        return cls(
            checkpoint=raw.get("checkpoint"),
            shards=[IndexShard(**s) for s in raw["shards"]],
            arrays=dict(raw.get("files", {}).get("arrays", {})),
            num_products=raw.get("num_products"),
            embed_dim=raw.get("embed_dim"),
            normalized=bool(raw.get("normalized", False)),
            tree=[tuple(p) for p in raw.get("tree", [])],
            unseen_categories=[tuple(p) for p in raw.get("unseen_categories", [])],
            modalities=list(raw.get("modalities", [])),
            splits=list(raw.get("splits", [])),
            shard_dir=raw.get("shard_dir"),
            faiss=raw.get("faiss"),
            provenance={k: v for k, v in raw.items() if k not in typed},
            version=version,
            layout=raw.get("layout", INDEX_LAYOUT),
        )


def read(folder: str | Path) -> IndexInfo:
    """The ``index.json`` of an index folder.

    Raises:
        FileNotFoundError: no ``index.json`` (an unfinished index when ``shards/`` is there, else no index).
        IndexFormatError: an index of an older format.
    """
    folder = Path(folder)
    path = folder / INDEX_JSON
    if not path.is_file():
        if (folder / SHARDS_DIR).is_dir():
            raise FileNotFoundError(
                f"{folder} is an unfinished clipita index (no {INDEX_JSON}); run the same clipita index command "
                "again to finish it"
            )
        raise FileNotFoundError(
            f"{folder} is not a clipita index (no {INDEX_JSON}); build one with clipita index"
        )
    return IndexInfo.from_json(json.loads(path.read_text()), origin=str(folder))


def write(folder: str | Path, info: IndexInfo) -> None:
    """Write ``index.json`` atomically (a temporary file, renamed): the index is complete once it is there."""
    path = Path(folder) / INDEX_JSON
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(info.to_json(), indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
