"""Write product embeddings from ``trainer.predict`` to disk, one set of files per rank, merged on rank 0.

:class:`EmbeddingWriter` is a Lightning ``BasePredictionWriter``: every rank appends the ``{"product_id",
"embedding"}`` dicts its ``predict_step`` returns to its own part files (flushed every ``flush_rows`` rows, so a
rank never holds more than that in memory), and when the predict epoch ends all ranks meet at a barrier and rank 0
merges the parts into::

    <output_dir>/embeddings.npy   float32 [N, D], row i = product_ids[i]
    <output_dir>/product_ids.json ["id", ...]

Under DDP a ``DistributedSampler`` may pad the last batch of a rank with repeated products, and a product can be
seen twice when loaders overlap; the merge keeps the first copy of every id. With ``order`` (the ids in the order
the caller wants rows in) the merged rows follow it and a product missing from the predictions is an error that
names it. ``output_dir`` must be visible to every rank (one machine, or a shared filesystem across nodes).

Example:
    >>> writer = EmbeddingWriter("out/index", order=ids)  # doctest: +SKIP
    >>> trainer = L.Trainer(callbacks=[writer], logger=False)  # doctest: +SKIP
    >>> trainer.predict(module, datamodule=dm, return_predictions=False)  # doctest: +SKIP
    >>> writer.result  # (ids, embeddings) on rank 0 after the merge  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

EMBEDDINGS_NAME = "embeddings.npy"
PRODUCT_IDS_NAME = "product_ids.json"
PARTS_DIR = "_prediction_parts"


class EmbeddingWriter(BasePredictionWriter):
    """Per-rank embedding part files, merged on rank 0 into ``embeddings.npy`` + ``product_ids.json``.

    Args:
        output_dir: folder for the merged files (and, while predicting, the ``_prediction_parts/`` folder).
        order: product ids in the row order wanted, or a function returning them (called on rank 0 at merge
            time, e.g. once the DataModule has read its manifest); None keeps the order of rank 0's parts, then
            rank 1's...
        flush_rows: rows a rank buffers before writing a part file.
        keep_parts: leave the per-rank part files after the merge (debugging).
        normalize: L2-normalise the merged rows (dot product = cosine similarity).
    """

    def __init__(
        self,
        output_dir: str | Path,
        order: Sequence[str] | Callable[[], Sequence[str]] | None = None,
        flush_rows: int = 65536,
        keep_parts: bool = False,
        normalize: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows}")
        self.output_dir = Path(output_dir)
        self.order = order if order is None or callable(order) else list(order)
        self.flush_rows = flush_rows
        self.keep_parts = keep_parts
        self.normalize = normalize
        self._ids: list[str] = []
        self._embeddings: list[np.ndarray] = []
        self._buffered = 0
        self._part = 0
        self.result: tuple[list[str], np.ndarray] | None = None

    @property
    def parts_dir(self) -> Path:
        return self.output_dir / PARTS_DIR

    # --------------------------------------------------------------------------------------------- per rank
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            if self.parts_dir.exists():
                shutil.rmtree(self.parts_dir)
            self.parts_dir.mkdir(parents=True)
        trainer.strategy.barrier("embedding_writer_start")
        self._ids, self._embeddings, self._buffered, self._part = [], [], 0, 0
        self.result = None

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        ids = [str(i) for i in prediction["product_id"]]
        embedding = prediction["embedding"]
        if isinstance(embedding, torch.Tensor):
            embedding = embedding.detach().float().cpu().numpy()
        embedding = np.asarray(embedding, dtype=np.float32)
        if embedding.ndim != 2 or embedding.shape[0] != len(ids):
            raise ValueError(
                f"predict_step returned {len(ids)} product ids but embeddings of shape {embedding.shape}"
            )
        self._ids.extend(ids)
        self._embeddings.append(embedding)
        self._buffered += len(ids)
        if self._buffered >= self.flush_rows:
            self._flush(trainer.global_rank)

    def _flush(self, rank: int) -> None:
        if not self._ids:
            return
        stem = self.parts_dir / f"rank{rank:05d}-part{self._part:06d}"
        np.save(f"{stem}.npy", np.concatenate(self._embeddings, axis=0))
        Path(f"{stem}.json").write_text(json.dumps(self._ids))
        self._ids, self._embeddings, self._buffered = [], [], 0
        self._part += 1

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer.global_rank)
        trainer.strategy.barrier("embedding_writer_flushed")
        if trainer.is_global_zero:
            order = self.order() if callable(self.order) else self.order
            ids, embeddings = merge_parts(self.parts_dir, order)
            if self.normalize:
                embeddings = l2_normalize(embeddings)
            write_embeddings(self.output_dir, ids, embeddings)
            if not self.keep_parts:
                shutil.rmtree(self.parts_dir, ignore_errors=True)
            self.result = (ids, embeddings)
        trainer.strategy.barrier("embedding_writer_merged")


# --------------------------------------------------------------------------------------------------- merging
def merge_parts(parts_dir: str | Path, order: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Merge the part files of every rank: first copy of each id wins; rows follow ``order`` when given.

    Args:
        parts_dir: folder of ``rankRRRRR-partPPPPPP.{npy,json}`` pairs.
        order: the ids in the wanted row order (every one must have been predicted), or None.

    Returns:
        ``(ids, embeddings [N, D] float32)``.

    Raises:
        ValueError: a part's ids and rows disagree, or ids in ``order`` were never predicted.
    """
    folder = Path(parts_dir)
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    for id_file in sorted(folder.glob("rank*-part*.json")):
        part_ids = json.loads(id_file.read_text())
        block = np.load(id_file.with_suffix(".npy"))
        if block.shape[0] != len(part_ids):
            raise ValueError(f"{id_file}: {len(part_ids)} ids but {block.shape[0]} embedding rows")
        ids.extend(part_ids)
        blocks.append(block)
    if not blocks:
        raise ValueError(f"no predictions were written to {folder} (an empty split?)")
    embeddings = np.concatenate(blocks, axis=0)
    first: dict[str, int] = {}
    for row, product_id in enumerate(ids):
        first.setdefault(product_id, row)
    if order is None:
        rows = np.fromiter(first.values(), dtype=np.int64, count=len(first))
        return list(first), embeddings[rows]
    missing = [p for p in order if p not in first]
    if missing:
        raise ValueError(
            f"{len(missing)} product(s) were not predicted, e.g. {missing[:5]}; did every rank read its data?"
        )
    rows = np.fromiter((first[p] for p in order), dtype=np.int64, count=len(order))
    return list(order), embeddings[rows]


def l2_normalize(embeddings: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; all-zero rows stay zero)."""
    x = np.asarray(embeddings, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def write_embeddings(output_dir: str | Path, ids: Sequence[str], embeddings: np.ndarray) -> None:
    """Write ``embeddings.npy`` (float32) and ``product_ids.json`` into ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / EMBEDDINGS_NAME, np.ascontiguousarray(embeddings, dtype=np.float32))
    (out / PRODUCT_IDS_NAME).write_text(json.dumps(list(ids)))
