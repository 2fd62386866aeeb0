"""Raw shard records -> the batch dict the LightningModule consumes (ARCHITECTURE.md, "Batches"): one record is
decoded (its JPEG through the image tower's transform, its JSON through the record codec) and a list of decoded
records is stacked into a batch. What every raw-image reader shares: the streaming training/evaluation pipeline
(:mod:`datamodules.shard_pipeline`) and ``clipita index`` on raw shards (``clipita.retrieval.index_job``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from torch import Tensor

from clipita_core.paths import format_path
from clipita_core.tree import CategoryTree
from datamodules.features import LEXICAL_TOKENS
from datamodules.lexical_store import product_token_rows
from datamodules.records import decode_sample
from datamodules.shard_io import ShardDecodeError

ImageTransform = Callable[[Image.Image], Tensor]


def decode_record(sample: Mapping[str, Any], transform: ImageTransform) -> dict[str, Any]:
    """Decode one raw shard record (``jpg`` + ``json`` bytes) into tensors and plain values.

    Args:
        sample: The raw WebDataset sample: ``__key__``, ``__url__``, ``jpg`` and ``json`` bytes.
        transform: PIL RGB image -> float tensor ``[3, H, W]`` (resize, normalise...).

    Returns:
        ``{"image", "title", "attributes", "product_id", "category_path"}``.

    Raises:
        ShardDecodeError: Naming the shard URL and the sample key, on any failure (missing field, broken
            JPEG or JSON, a transform error).
    """
    key, url = sample.get("__key__"), sample.get("__url__")
    try:
        missing = [field for field in ("jpg", "json") if field not in sample]
        if missing:
            raise KeyError(f"record has no {' or '.join(missing)} field (fields: {sorted(sample)})")
        with Image.open(io.BytesIO(sample["jpg"])) as raw:
            image = raw.convert("RGB")
        record = decode_sample(sample)  # the one record codec: original id, category as a tuple of names
        return {
            "image": transform(image),
            "title": record.title,
            "attributes": dict(record.attributes),
            "product_id": record.id,
            "category_path": record.category,
        }
    except Exception as exc:
        raise ShardDecodeError(
            f"cannot decode sample {key!r} of shard {url}: {type(exc).__name__}: {exc}"
        ) from exc


def collate_records(
    samples: Sequence[Mapping[str, Any]],
    tree: CategoryTree,
    tokenizer: Any = None,
    attribute_names: Sequence[str] = (),
) -> dict[str, Any]:
    """Stack decoded records into the batch dict of ARCHITECTURE.md.

    Args:
        samples: Outputs of ``decode_record``.
        tree: The category table; ``category_ids`` index into it.
        tokenizer: The model's lexical tokenizer (``tokenize(texts)``), or None: with one the batch also carries
            ``lexical_tokens``, LongTensor ``[B, L]`` (``-1`` padded), the rows the feature path's token store
            holds for the same products (:func:`datamodules.lexical_store.product_token_rows`).
        attribute_names: The catalogue's attribute names (the manifest's order), whose values are tokenized.

    Returns:
        ``image`` float ``[B,3,H,W]``, ``title`` ``list[str]`` (``""`` when missing), ``title_mask`` bool ``[B]``
        (True = the product has a title), ``attributes`` ``list[dict]``, ``product_id``
        ``list[str]``, ``category_ids`` LongTensor ``[B, L]`` (ancestor per level, ``-1`` padded) and
        ``category_path`` ``list[tuple[str, ...]]``.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    paths = [tuple(s["category_path"]) for s in samples]
    unknown = [(s["product_id"], p) for s, p in zip(samples, paths, strict=True) if p not in tree]
    if unknown:
        product_id, path = unknown[0]
        raise KeyError(f"product {product_id!r} has category {format_path(path)!r}, which is not in the tree")
    batch = {
        # default_collate stacks straight into shared memory inside a DataLoader worker: no extra copy when
        # the batch is handed to the main process.
        "image": torch.utils.data.default_collate([s["image"] for s in samples]),
        "title": [s["title"] for s in samples],
        "title_mask": torch.tensor([bool(s["title"]) for s in samples], dtype=torch.bool),
        "attributes": [dict(s["attributes"]) for s in samples],
        "product_id": [s["product_id"] for s in samples],
        "category_ids": torch.from_numpy(tree.ancestor_matrix(paths)),
        "category_path": paths,
    }
    if tokenizer is not None:  # the BM25 signal's token rows, as the feature path's token store holds them
        rows = product_token_rows(tokenizer, batch["title"], batch["attributes"], attribute_names)
        batch[LEXICAL_TOKENS] = torch.from_numpy(rows.astype(np.int64))
    return batch
