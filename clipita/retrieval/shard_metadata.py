"""The product metadata of an index, read from the input shards' tar headers and small JSON members (the images
are skipped): one row per record with the JPEG's byte range, so thumbnails are read with one seek."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from clipita_core.manifest import Manifest
from clipita_core.paths import format_path
from datamodules.records import category_to_text, decode_json
from datamodules.shard_io import shard_members

PRODUCT_COLUMNS = [
    "id", "title", "category", "category_path", "split", "shard", "key", "jpg_offset", "jpg_size",
]  # fmt: skip


def read_shard_metadata(shard_path: str | Path) -> list[dict[str, Any]]:
    """One row per record of an uncompressed WebDataset tar: its JSON fields and the JPEG's byte range.

    Only tar headers and the small JSON members are read (the image data is skipped).

    Returns:
        Dicts with ``id`` (the original product id), ``title``, ``category`` (display string), ``category_path``
        (JSON list of names), ``split``, ``shard`` (file name), ``key``, ``jpg_offset`` and ``jpg_size`` (-1 when
        the record has no ``jpg``), in the tar's order.
    """
    shard_path = Path(shard_path)
    records: dict[str, dict[str, Any]] = {}
    for name, offset, size, read in shard_members(shard_path):
        directory, _, base = name.rpartition("/")
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
            record = decode_json(read(), key)
            row["id"] = record.id
            row["title"] = record.title
            row["category"] = format_path(record.category)
            row["category_path"] = category_to_text(record.category)
            row["split"] = record.split
        elif ext == "jpg":
            row["jpg_offset"] = offset
            row["jpg_size"] = size
    return list(records.values())


def products_frame(manifest: Manifest, shard_dir: str | Path, splits: Sequence[str]) -> pd.DataFrame:
    """Metadata of every product of ``splits``, in shard order (the order the predict loaders serve them)."""
    rows: list[dict[str, Any]] = []
    for split in splits:
        for url in manifest.shard_urls(shard_dir, split):
            for row in read_shard_metadata(url):
                row["split"] = row["split"] or split
                rows.append(row)
    frame = pd.DataFrame(rows, columns=PRODUCT_COLUMNS)
    duplicated = frame["id"].duplicated()
    if duplicated.any():
        raise ValueError(f"product ids repeat across shards, e.g. {frame['id'][duplicated].head(5).tolist()}")
    return frame.astype({"jpg_offset": "int64", "jpg_size": "int64"})
