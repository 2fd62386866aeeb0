"""Catalogue -> WebDataset shards + ``manifest.json``, with every input row either sharded or reported.

``clipita shard`` calls :func:`shard_catalogue`. The split is reproducible from ``seed``:

1. ``unseen_fraction`` of the leaf categories (rounded up; at least one when there are two or more leaves, never
   all of them) are held out as *unseen*: all their products go to ``test``, none to ``train``/``val``.
2. The other products are split per category path into ``train``/``val``/``test`` by ``val_fraction`` and
   ``test_fraction`` (stratified; a category's expected share is rounded at random, and every category keeps
   at least one product in ``train``).

Within a split, records are written in a seeded random order, ``shard_size`` per tar file
(``{split}-{NNNNNN}.tar``). Each record is ``__key__`` = product id, ``jpg`` = the image bytes, ``json`` =
``{"id", "title", "attributes", "category", "split"}`` (see ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import webdataset as wds
from tqdm.auto import tqdm

from datamodules.catalogue import (
    CatalogueError,
    CatalogueSchema,
    RawRecord,
    jpeg_bytes,
    printable,
    read_catalogue,
)
from datamodules.category_tree import CategoryPath, CategoryTree, format_path

__all__ = [
    "CatalogueError",
    "ManifestError",
    "SPLITS",
    "MANIFEST_NAME",
    "shard_catalogue",
    "write_shards",
    "load_manifest",
    "shard_urls",
]

SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
SHARD_NAME = re.compile(r"^(train|val|test)-\d{6}\.tar$")
_REQUIRED_KEYS = ("version", "content_hash", "input_rows", "sharded", "skipped", "tree", "splits")


class ManifestError(ValueError):
    """A shard folder's manifest is missing or invalid, or does not match the shard files on disk."""


# --------------------------------------------------------------------------------------------------------------
# Splitting


def choose_unseen(leaves: Sequence[CategoryPath], fraction: float, rng: random.Random) -> list[CategoryPath]:
    """Pick ``ceil(fraction * len(leaves))`` leaves (at least 1 when there are >= 2 leaves, never all).

    Args:
        leaves: The leaf categories (any order; they are sorted first so the pick depends on ``rng`` only).
        fraction: Share of leaves to hold out; 0 holds out none.
        rng: Random source.
    """
    leaves = sorted(set(leaves))
    if fraction <= 0 or len(leaves) < 2:
        return []
    k = min(max(1, math.ceil(fraction * len(leaves) - 1e-9)), len(leaves) - 1)
    return sorted(rng.sample(leaves, k))


def assign_splits(
    records: Sequence[RawRecord],
    unseen: set[CategoryPath],
    val_fraction: float,
    test_fraction: float,
    rng: random.Random,
) -> dict[str, list[RawRecord]]:
    """Split good records into train/val/test: unseen categories to test, the rest stratified by category.

    Args:
        records: Good records, in input order.
        unseen: Category paths whose products all go to ``test``.
        val_fraction: Expected share of each seen category going to ``val``.
        test_fraction: Expected share of each seen category going to ``test``.
        rng: Random source.

    Returns:
        split -> records, each list in a seeded random order.
    """
    out: dict[str, list[RawRecord]] = {s: [] for s in SPLITS}
    by_category: dict[CategoryPath, list[RawRecord]] = defaultdict(list)
    for record in records:
        by_category[record.category].append(record)
    for category in sorted(by_category):
        group = by_category[category]
        if category in unseen:
            out["test"].extend(group)
            continue
        group = list(group)
        rng.shuffle(group)
        n = len(group)

        def share(fraction: float, n: int = n) -> int:
            exact = n * fraction
            return int(exact) + (1 if rng.random() < exact - int(exact) else 0)

        n_val, n_test = share(val_fraction), share(test_fraction)
        while n_val + n_test > n - 1 and n_val + n_test > 0:  # keep at least one product in train
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        out["val"].extend(group[:n_val])
        out["test"].extend(group[n_val : n_val + n_test])
        out["train"].extend(group[n_val + n_test :])
    for split in SPLITS:
        rng.shuffle(out[split])
    return out


# --------------------------------------------------------------------------------------------------------------
# Writing


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_json(record: RawRecord, split: str) -> bytes:
    meta = {
        "id": record.id,
        "title": record.title,
        "attributes": record.attributes,
        "category": list(record.category),
        "split": split,
    }
    return json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")


def _image_bytes(record: RawRecord) -> bytes:
    assert record.image_path is not None
    try:
        data = jpeg_bytes(record.image_path, record.image_format)
    except Exception as exc:
        raise CatalogueError(
            f"row {record.row} (id {record.id!r}): image could not be re-read: {exc}"
        ) from exc
    if record.image_format in ("JPEG", "MPO") and record.image_sha256 is not None:
        if hashlib.sha256(data).hexdigest() != record.image_sha256:
            raise CatalogueError(
                f"row {record.row} (id {record.id!r}): image {record.image_path!r} changed while sharding"
            )
    return data


def _clear_old_output(out: Path) -> None:
    """Remove shards and a manifest from an earlier run so no stale file survives next to the new ones."""
    for path in out.iterdir():
        if path.is_file() and (SHARD_NAME.match(path.name) or path.name == MANIFEST_NAME):
            path.unlink()


def _skipped_entry(record: RawRecord) -> dict[str, Any]:
    return {
        "row": record.row,
        "id": printable(record.id),
        "reason": record.reason,
        "kinds": sorted({p.kind for p in record.problems}),
    }


def write_shards(
    schema: CatalogueSchema,
    output_dir: str,
    shard_size: int = 1000,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    unseen_fraction: float = 0.2,
    on_error: Literal["skip", "fail"] = "skip",
    progress: bool = True,
) -> dict[str, Any]:
    """Shard the catalogue described by ``schema`` (:func:`shard_catalogue` for a schema given in Python).

    Args:
        schema: The catalogue to shard.
        output_dir: Folder to write the shards and ``manifest.json`` into (created if needed).
        shard_size: Products per tar file.
        seed: Seed of the unseen-category choice, the split and the order of records in the shards.
        val_fraction: Share of each seen category's products that goes to ``val``.
        test_fraction: Share of each seen category's products that goes to ``test``.
        unseen_fraction: Share of leaf categories held out entirely (their products all go to ``test``).
        on_error: ``skip`` bad rows (listed in the manifest) or ``fail`` at the first one.
        progress: Show progress bars.

    Returns:
        The manifest (as written to ``manifest.json``).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    if not 0.0 <= unseen_fraction < 1.0:
        raise ValueError(f"unseen_fraction must be in [0, 1), got {unseen_fraction}")
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    started = time.perf_counter()

    # 1. Read and check every record.
    good: list[RawRecord] = []
    skipped: list[RawRecord] = []
    reading = tqdm(
        read_catalogue(schema),
        desc=f"checking {schema.name}",
        unit=" rows",
        disable=not progress,
        leave=False,
    )
    for record in reading:
        if record.ok:
            good.append(record)
            continue
        if on_error == "fail":
            raise CatalogueError(f"{schema.name}: bad record at {record.describe()}")
        skipped.append(record)
    input_rows = len(good) + len(skipped)

    # 2. Split.
    rng = random.Random(seed)
    tree = CategoryTree.from_paths(r.category for r in good) if good else CategoryTree([])
    leaves = [tree.paths[i] for i in tree.leaves]
    product_paths = {r.category for r in good}
    unseen = choose_unseen([p for p in leaves if p in product_paths], unseen_fraction, rng)
    splits = assign_splits(good, set(unseen), val_fraction, test_fraction, rng)

    # 3. Write shards, split by split, and hash what was written.
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear_old_output(out)
    content = hashlib.sha256()
    split_info: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(good), desc=f"writing {out}", unit=" products", disable=not progress, leave=False)
    for split in SPLITS:
        records = splits[split]
        files: dict[str, dict[str, Any]] = {}
        for shard_no, start in enumerate(range(0, len(records), shard_size)):
            name = f"{split}-{shard_no:06d}.tar"
            chunk = records[start : start + shard_size]
            with wds.TarWriter(str(out / name), mtime=0, encoder=False) as sink:
                for record in chunk:
                    meta = _record_json(record, split)
                    image = _image_bytes(record)
                    sink.write({"__key__": record.id, "jpg": image, "json": meta})
                    content.update(record.id.encode("utf-8") + b"\0")
                    content.update(meta + b"\0")
                    content.update(hashlib.sha256(image).hexdigest().encode("ascii") + b"\n")
                    bar.update(1)
            path = out / name
            files[name] = {"count": len(chunk), "bytes": path.stat().st_size, "sha256": _sha256_file(path)}
        per_category = Counter(format_path(r.category) for r in records)
        split_info[split] = {
            "count": len(records),
            "shards": list(files),
            "shard_files": files,
            "per_category": dict(sorted(per_category.items())),
        }
    bar.close()

    depth = tree.max_depth if len(tree) else 0
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "created_by": "clipita shard",
        "schema": schema.to_dict(),
        "content_hash": content.hexdigest(),
        "seed": seed,
        "fractions": {"val": val_fraction, "test": test_fraction, "unseen": unseen_fraction},
        "shard_size": shard_size,
        "input_rows": input_rows,
        "sharded": len(good),
        "skipped": [_skipped_entry(r) for r in skipped],
        "skipped_by_kind": dict(sorted(Counter(r.problems[0].kind for r in skipped).items())),
        "tree": {"levels": schema.level_names(depth), "paths": tree.to_json()},
        "unseen_categories": [list(p) for p in unseen],
        "splits": split_info,
        "attribute_names": list(schema.attribute_columns),
    }
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST_NAME)
    print(summarize(manifest, str(out), time.perf_counter() - started), file=sys.stdout)
    return manifest


def summarize(manifest: dict[str, Any], output_dir: str, seconds: float | None = None) -> str:
    """One paragraph: what was sharded where, per split, and what was skipped by reason."""
    splits = manifest["splits"]
    parts = []
    for split in SPLITS:
        info = splits[split]
        n_shards = len(info["shards"])
        parts.append(f"{split} {info['count']:,} ({n_shards} shard{'s' if n_shards != 1 else ''})")
    text = (
        f"Sharded {manifest['sharded']:,} of {manifest['input_rows']:,} rows of catalogue "
        f"{manifest['schema'].get('name', '?')!r} into {output_dir}: {', '.join(parts)}; "
        f"{len(manifest['unseen_categories'])} unseen leaf categories are in test only."
    )
    if manifest["skipped"]:
        reasons = ", ".join(
            f"{n:,} {kind.replace('_', ' ')}" for kind, n in manifest["skipped_by_kind"].items()
        )
        text += f" Skipped {len(manifest['skipped']):,} rows ({reasons}); see 'skipped' in {MANIFEST_NAME}."
    else:
        text += " No rows skipped."
    if seconds is not None:
        text += f" Took {seconds:.1f} s; content hash {manifest['content_hash'][:12]}."
    return text


def shard_catalogue(
    catalog: str,
    output_dir: str,
    shard_size: int = 1000,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    unseen_fraction: float = 0.2,
    on_error: Literal["skip", "fail"] = "skip",
    progress: bool = True,
) -> dict[str, Any]:
    """Turn a catalogue into WebDataset shards ``{split}-NNNNNN.tar`` plus ``manifest.json``.

    Every row is checked (image fully decoded, title, category, id); bad rows are skipped and listed in the
    manifest with their row number, id and reason, so ``sharded + len(skipped) == input_rows``. Earlier shards
    and manifest in ``output_dir`` are replaced. Prints a one-paragraph summary and returns the manifest.

    Args:
        catalog: Catalogue schema YAML file (see ``datamodules.catalogue.CatalogueSchema``).
        output_dir: Folder to write the shards and ``manifest.json`` into (created if needed).
        shard_size: Products per tar file.
        seed: Seed of the unseen-category choice, the split and the order of records in the shards.
        val_fraction: Share of each seen category's products that goes to ``val``.
        test_fraction: Share of each seen category's products that goes to ``test``.
        unseen_fraction: Share of leaf categories held out entirely (their products all go to ``test``).
        on_error: ``skip`` bad rows (listed in the manifest) or ``fail`` at the first one.
        progress: Show progress bars.

    Returns:
        The manifest (as written to ``manifest.json``).

    Raises:
        CatalogueError: The catalogue cannot be read, or ``on_error="fail"`` and a row is bad (the message names
            its row, id and reason).
    """
    schema = CatalogueSchema.from_yaml(catalog)
    return write_shards(
        schema,
        output_dir,
        shard_size=shard_size,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        unseen_fraction=unseen_fraction,
        on_error=on_error,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------------------------
# Reading back


def load_manifest(shard_dir: str, check_hashes: bool = True) -> dict[str, Any]:
    """Read ``manifest.json`` from ``shard_dir`` and check it against the shard files on disk.

    Args:
        shard_dir: Folder written by :func:`shard_catalogue`.
        check_hashes: Also recompute each shard's sha256 (sizes are always checked).

    Raises:
        ManifestError: The manifest is missing, is not valid JSON, lacks required keys, or a shard it lists is
            missing or differs in size or sha256 from what was written; the message names the file.
    """
    folder = Path(shard_dir)
    path = folder / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} in {str(folder)!r}: run `clipita shard` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {str(path)!r}: {exc}") from exc
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{str(path)!r} must hold a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ManifestError(f"{str(path)!r} lacks required keys {missing}")
    if manifest["version"] != MANIFEST_VERSION:
        raise ManifestError(f"{str(path)!r} has version {manifest['version']!r}; expected {MANIFEST_VERSION}")
    splits = manifest["splits"]
    if not isinstance(splits, dict) or any(s not in splits for s in SPLITS):
        raise ManifestError(f"{str(path)!r}: 'splits' must have entries {list(SPLITS)}")
    for split in SPLITS:
        info = splits[split]
        try:
            names, files = info["shards"], info["shard_files"]
        except (TypeError, KeyError) as exc:
            raise ManifestError(f"{str(path)!r}: split {split!r} lacks {exc}") from None
        for name in names:
            shard = folder / name
            expected = files.get(name) if isinstance(files, dict) else None
            if not isinstance(expected, dict) or "bytes" not in expected or "sha256" not in expected:
                raise ManifestError(f"{str(path)!r} records no size/sha256 for shard {name!r}")
            if not shard.is_file():
                raise ManifestError(f"shard {str(shard)!r} listed in {MANIFEST_NAME} is missing")
            size = shard.stat().st_size
            if size != expected["bytes"]:
                raise ManifestError(
                    f"shard {str(shard)!r} has {size:,} bytes; {MANIFEST_NAME} recorded {expected['bytes']:,}"
                )
            if check_hashes and _sha256_file(shard) != expected["sha256"]:
                raise ManifestError(
                    f"shard {str(shard)!r} does not match the sha256 recorded in {MANIFEST_NAME}"
                )
    return manifest


def shard_urls(manifest: dict[str, Any], shard_dir: str, split: str) -> list[str]:
    """Paths of the shards of ``split`` (empty when the split has no products).

    Args:
        manifest: From :func:`load_manifest`.
        shard_dir: The folder holding the shards.
        split: ``train``, ``val`` or ``test``.
    """
    if split not in manifest["splits"]:
        raise ValueError(f"unknown split {split!r}; the manifest has {sorted(manifest['splits'])}")
    return [str(Path(shard_dir) / name) for name in manifest["splits"][split]["shards"]]
