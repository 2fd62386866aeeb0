"""``clipita index`` as a job of the sharded predict-job runner (:mod:`datamodules.shard_jobs`): every rank embeds its
share of the input shards and writes one index shard per input shard (:mod:`clipita.retrieval.index_shards`).

Shard ``n`` of the index (split order, then manifest order) goes to global rank ``n % world_size`` whatever is
already done, and within a rank to decoding worker ``j % num_workers`` of its list; a batch never spans two shards.
When a shard's last batch is embedded, the rank writes its arrays and metadata; finished shards are skipped on the
next run (a killed index resumes where it stopped). Rank 0 assembles the index once every shard is there (the
runner's rules; this module supplies the shard's batches, the embedding step and what an index shard holds).

Products come from the feature store (``use_features``: positional reads of the shard's feature rows) or from the
raw shards (JPEGs decoded with the image tower's transform), the same batch dicts training and testing use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from clipita_core.index_info import IndexShard
from datamodules.features import LEXICAL_TOKENS, concat_rows
from datamodules.shard_jobs import ShardItems, ShardPredictJob, rank_share

from .index_shards import EMBEDDING, EMBEDDING16, EXTRA_ARRAYS, IndexShards
from .shard_metadata import PRODUCT_COLUMNS, read_shard_metadata


def plan(shards: IndexShards, rank: int, world_size: int) -> list[IndexShard]:
    """This rank's shards that are not done yet."""
    return rank_share(shards.shards, rank, world_size, done=lambda s: shards.done(s.name))


def shard_products(shard_path: Path, split: str) -> pd.DataFrame:
    """The product metadata of one input shard (``shard_metadata.PRODUCT_COLUMNS``), in record order."""
    rows = read_shard_metadata(shard_path)
    for row in rows:
        row["split"] = row["split"] or split
    return pd.DataFrame(rows, columns=PRODUCT_COLUMNS).astype({"jpg_offset": "int64", "jpg_size": "int64"})


class IndexShardBatches(ShardItems):
    """Batch dicts of the given input shards, each wrapped as ``{"shard", "split", "last", "batch"}``; a shard's
    last item also carries its product metadata (``products``, read in the loader worker, overlapping the forward
    passes).

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
        super().__init__(jobs, batch_size)
        self.features, self.shard_dir, self.transform, self.tree = features, shard_dir, transform, tree
        self.lexical = {"tokenizer": tokenizer, "attribute_names": tuple(attribute_names)}

    def shard_items(self, job: IndexShard) -> Iterator[dict[str, Any]]:
        batches = self._feature_batches(job) if self.features is not None else self._raw_batches(job)
        produced = 0
        for batch in batches:
            yield {"split": job.split, "batch": batch}
            produced += len(batch["product_id"])
        if produced != job.count:
            raise ValueError(f"shard {job.name!r} has {produced} products, the manifest says {job.count}")
        if not produced:
            yield {"split": job.split, "batch": None}

    def last_item(self, job: IndexShard, item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "products": shard_products(Path(self.shard_dir) / job.name, job.split)}

    def _feature_batches(self, job: IndexShard) -> Iterator[dict[str, Any]]:
        split = self.features[job.split]
        s = split.shard_names.index(job.name)
        lo, hi = int(split.offsets[s]), int(split.offsets[s + 1])
        for start in range(lo, hi, self.batch_size):
            yield split.batch(np.arange(start, min(hi, start + self.batch_size)))

    def _raw_batches(self, job: IndexShard) -> Iterator[dict[str, Any]]:
        from datamodules.raw_batches import collate_records, decode_record
        from datamodules.shard_io import iter_shard_samples

        url = str(Path(self.shard_dir) / job.name)
        records: list[dict[str, Any]] = []
        for sample in iter_shard_samples(url):
            records.append(decode_record(sample, self.transform))
            if len(records) == self.batch_size:
                yield collate_records(records, self.tree, **self.lexical)
                records = []
        if records:
            yield collate_records(records, self.tree, **self.lexical)


class IndexJob(ShardPredictJob):
    """The index job: embeds products with ``net.encode_product_for_retrieval`` and writes index shards.

    The loader comes from the DataModule (``IndexDataModule.predict_dataloader``: this rank's missing shards);
    a shard's rows are written when its last batch is in, with its product metadata (read from the input shard's
    tar headers) and any :data:`EXTRA_ARRAYS`.

    Args:
        net: the ClipIta network.
        assemble: run by global rank 0 once every rank's shards are written (``clipita index``: the index folder's
            ``products.parquet``, FAISS index and ``index.json``); its result is kept as :attr:`assembled`.
    """

    wait_for_assembly = (
        False  # only rank 0 returns the index: the other ranks need not wait for its FAISS build
    )

    def __init__(self, net: torch.nn.Module, assemble: Callable[[], Any] | None = None) -> None:
        super().__init__("index")
        self.net = net
        self.shards: IndexShards | None = None
        self.shard_dir = ""
        self._assemble = assemble
        self.assembled: Any = None

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule  # IndexDataModule, set up first: it owns the shards folder
        self.shards, self.shard_dir = dm.index_shards, str(dm.shard_dir)

    def transfer_batch_to_device(self, item: Any, device: torch.device, dataloader_idx: int) -> Any:
        if item.get("batch") is not None:
            item = {**item, "batch": super().transfer_batch_to_device(item["batch"], device, dataloader_idx)}
        return item

    @torch.no_grad()
    def encode_item(self, item: dict[str, Any]) -> dict[str, Any]:
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

    def write_shard(self, shard: str, parts: list[dict[str, Any]]) -> None:
        split = parts[-1]["split"]
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

    def assemble(self) -> None:
        if self._assemble is not None:
            self.assembled = self._assemble()
