"""``clipita index`` as a Lightning predict job: every rank embeds its share of the input shards and writes one
index shard per input shard (:mod:`clipita.retrieval.index_shards`).

Shard ``n`` of the index (split order, then manifest order) goes to global rank ``n % world_size`` whatever is
already done, and within a rank to decoding worker ``j % num_workers`` of its list; a batch never spans two shards.
When a shard's last batch is embedded, the rank writes its arrays and metadata; finished shards are skipped on the
next run (a killed index resumes where it stopped). Rank 0 assembles the index once every shard is there.

Products come from the feature store (``use_features``: positional reads of the shard's feature rows) or from the
raw shards (JPEGs decoded with the image tower's transform), the same batch dicts training and testing use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from clipita_core.index_info import IndexShard
from datamodules.features import LEXICAL_TOKENS, concat_rows

from .index_shards import EMBEDDING, EMBEDDING16, EXTRA_ARRAYS, IndexShards
from .shard_metadata import PRODUCT_COLUMNS, read_shard_metadata


def plan(shards: IndexShards, rank: int, world_size: int) -> list[IndexShard]:
    """This rank's shards that are not done yet."""
    return [s for n, s in enumerate(shards.shards) if n % world_size == rank and not shards.done(s.name)]


def _as_is(item: Any) -> Any:
    return item


def shard_products(shard_path: Path, split: str) -> pd.DataFrame:
    """The product metadata of one input shard (``shard_metadata.PRODUCT_COLUMNS``), in record order."""
    rows = read_shard_metadata(shard_path)
    for row in rows:
        row["split"] = row["split"] or split
    return pd.DataFrame(rows, columns=PRODUCT_COLUMNS).astype({"jpg_offset": "int64", "jpg_size": "int64"})


class IndexShardBatches(torch.utils.data.IterableDataset):
    """Batch dicts of the given input shards, each wrapped as ``{"shard", "split", "last", "batch"}``.

    Args:
        jobs: the shards to read (split across DataLoader workers shard by shard).
        batch_size: products per batch.
        features: ``{split: FeatureSplit}`` to read feature rows from, or None to decode the raw shards.
        shard_dir: the input shards' folder (raw path).
        transform: the image tower's transform (raw path).
        tree: the category table (raw path).
        tokenizer: the model's lexical tokenizer (raw path): batches then carry ``lexical_tokens`` as feature rows
            do (``collate_records``), of each product's title + ``attribute_names`` values.
        attribute_names: the catalogue's attribute names (raw path, with a ``tokenizer``).
    """

    def __init__(
        self,
        jobs: Sequence[IndexShard],
        batch_size: int,
        features: dict[str, Any] | None = None,
        shard_dir: str | None = None,
        transform: Any = None,
        tree: Any = None,
        tokenizer: Any = None,
        attribute_names: Sequence[str] = (),
    ) -> None:
        self.jobs, self.batch_size = list(jobs), batch_size
        self.features, self.shard_dir, self.transform, self.tree = features, shard_dir, transform, tree
        self.lexical = {"tokenizer": tokenizer, "attribute_names": tuple(attribute_names)}

    def __len__(self) -> int:
        return max(1, sum(max(1, -(-j.count // self.batch_size)) for j in self.jobs))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if not self.jobs:  # one empty item: under DDP Lightning refuses a rank whose loader is empty
            yield {"shard": None, "split": None, "last": False, "batch": None}
            return
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        for job in self.jobs[worker::workers]:
            batches = self._feature_batches(job) if self.features is not None else self._raw_batches(job)
            produced = 0
            pending = None
            for batch in batches:
                if pending is not None:
                    yield {"shard": job.name, "split": job.split, "last": False, "batch": pending}
                pending = batch
                produced += len(batch["product_id"])
            if produced != job.count:
                raise ValueError(f"shard {job.name!r} has {produced} products, the manifest says {job.count}")
            # the shard's metadata is read here, in the loader worker, overlapping the forward passes
            yield {"shard": job.name, "split": job.split, "last": True, "batch": pending,
                   "products": shard_products(Path(self.shard_dir) / job.name, job.split)}  # fmt: skip

    def _feature_batches(self, job: IndexShard) -> Iterator[dict[str, Any]]:
        split = self.features[job.split]
        s = split.shard_names.index(job.name)
        lo, hi = int(split.offsets[s]), int(split.offsets[s + 1])
        for start in range(lo, hi, self.batch_size):
            yield split.batch(np.arange(start, min(hi, start + self.batch_size)))

    def _raw_batches(self, job: IndexShard) -> Iterator[dict[str, Any]]:
        from datamodules.shard_io import iter_shard_samples
        from datamodules.shard_pipeline import collate_records, decode_record

        url = str(Path(self.shard_dir) / job.name)
        records: list[dict[str, Any]] = []
        for sample in iter_shard_samples(url):
            records.append(decode_record(sample, self.transform))
            if len(records) == self.batch_size:
                yield collate_records(records, self.tree, **self.lexical)
                records = []
        if records:
            yield collate_records(records, self.tree, **self.lexical)


def index_loader(dataset: IndexShardBatches, num_workers: int) -> torch.utils.data.DataLoader:
    workers = min(num_workers, len(dataset.jobs))
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=4 if workers else None,
    )


class IndexJob(L.LightningModule):
    """``Trainer.predict`` that embeds products with ``net.encode_product_for_retrieval`` and writes index shards.

    The loader comes from the DataModule (``IndexDataModule.predict_dataloader``: this rank's missing shards);
    ``on_predict_batch_end`` collects a shard's rows and writes the shard when its last batch is in, with its
    product metadata (read from the input shard's tar headers) and any :data:`EXTRA_ARRAYS`.

    Args:
        net: the ClipIta network.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.shards: IndexShards | None = None
        self.shard_dir = ""
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.written: list[str] = []

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule  # IndexDataModule, set up first: it owns the shards folder
        self.shards, self.shard_dir = dm.index_shards, str(dm.shard_dir)

    def transfer_batch_to_device(self, item: Any, device: torch.device, dataloader_idx: int) -> Any:
        if item["batch"] is not None:
            item = {**item, "batch": super().transfer_batch_to_device(item["batch"], device, dataloader_idx)}
        return item

    @torch.no_grad()
    def predict_step(self, item: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        batch = item["batch"]
        ids = [str(i) for i in batch["product_id"]] if batch is not None else []
        embedding = (
            self.net.encode_product_for_retrieval(batch).float().cpu().numpy()
            if ids
            else np.zeros((0, 0), np.float32)
        )
        tokens = batch.get(LEXICAL_TOKENS) if batch is not None else None  # the BM25 signal's rows, if any
        return {"shard": item["shard"], "split": item["split"], "last": item["last"], "ids": ids,
                "embedding": embedding, "products": item.get("products"),
                LEXICAL_TOKENS: None if tokens is None else np.asarray(torch.as_tensor(tokens).cpu(), np.int32)}  # fmt: skip

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if outputs["shard"] is None:  # a rank with nothing left to do
            return
        parts = self.pending.setdefault(outputs["shard"], [])
        parts.append(outputs)
        if outputs["last"]:
            del self.pending[outputs["shard"]]
            self.write(outputs["shard"], outputs["split"], parts)

    def write(self, shard: str, split: str, parts: list[dict[str, Any]]) -> None:
        ids = [i for p in parts for i in p["ids"]]
        blocks = [p["embedding"] for p in parts if len(p["ids"])]
        # as encode_product_for_retrieval returns them (not re-normalised: a vector of several unit blocks keeps its
        # norm, so the dense part matches evaluation's scale beside the BM25 term)
        embedding = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros((0, 0), np.float32)
        products = parts[-1].get("products")
        if products is None:
            products = shard_products(Path(self.shard_dir) / shard, split)
        if products["id"].tolist() != ids:
            raise RuntimeError(f"shard {shard!r}: embedding rows and product metadata are out of order")
        arrays = {EMBEDDING: embedding, EMBEDDING16: embedding.astype(np.float16)}
        if (
            LEXICAL_TOKENS in self.shards.arrays
        ):  # the products' token ids, as evaluation scores them (ClipIta.score)
            token_blocks = [p[LEXICAL_TOKENS] for p in parts if len(p["ids"])]
            if any(t is None for t in token_blocks):
                raise RuntimeError(
                    f"shard {shard!r}: the batches carry no lexical_tokens for the BM25 signal"
                )
            arrays[LEXICAL_TOKENS] = (
                concat_rows(token_blocks, LEXICAL_TOKENS) if token_blocks else np.full((0, 1), -1, np.int32)
            )
        arrays.update({name: fn(products) for name, fn in EXTRA_ARRAYS.items()})
        assert self.shards is not None, "setup() first"
        self.shards.write_shard(shard, ids, arrays, products)
        self.written.append(shard)

    def on_predict_end(self) -> None:
        if self.pending:
            raise RuntimeError(f"shards {sorted(self.pending)[:5]} ended without their last batch")
