"""Catalogue -> WebDataset shards + ``manifest.json``, with every input row either sharded or reported.

``clipita shard`` calls :func:`shard_catalogue`. The split is reproducible from ``seed`` (see
:mod:`datamodules.splits`: drawn with an unseen-leaf hold-out, or the catalogue's own split folders).

Within a split, records are written in a seeded random order, ``shard_size`` per tar file
(``{split}-{NNNNNN}.tar``), each through the one record codec :mod:`datamodules.records` (``__key__`` = a
reversible safe encoding of the product id, ``jpg`` = the image bytes, ``json`` = ``{"id", "title",
"attributes", "category", "split"}`` plus ``"description"`` when there is one; see ARCHITECTURE.md).

The manifest also records how many products lack each modality (``modalities``, ``modalities_present``) and
the leakage guard's measurement (``leakage``, :mod:`datamodules.leakage`). No product surviving the checks is
an error (:class:`NoProductsError`) naming the top skip reasons.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections import Counter
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
from datamodules.category_tree import CategoryTree, format_path
from datamodules.leakage import describe_leakage, leakage_report
from datamodules.manifest import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SHARD_NAME,
    ManifestError,
    load_manifest,
    modalities_present,
    sha256_file,
    shard_urls,
)
from datamodules.records import ShardRecord, encode_sample
from datamodules.splits import (
    SPLITS,
    assign_splits,
    choose_pseudo_novel,
    choose_unseen,
    own_splits,
    pseudo_novel_rng,
)

__all__ = [
    "CatalogueError",
    "ManifestError",
    "NoProductsError",
    "SPLITS",
    "MANIFEST_NAME",
    "assign_splits",
    "choose_pseudo_novel",
    "choose_unseen",
    "load_manifest",
    "modalities_present",
    "shard_catalogue",
    "shard_urls",
    "summarize",
    "write_shards",
]

MODALITIES = ("image", "title", "attributes", "description")


class NoProductsError(CatalogueError):
    """No row of the catalogue survived the checks; the message names the top reasons with counts."""


def _no_products_message(schema: CatalogueSchema, skipped: list[RawRecord]) -> str:
    if not skipped:
        where = schema.table if schema.layout == "table" else schema.image_root
        return f"catalogue {schema.name!r} has no products: {where!r} holds no rows (or no images)"
    by_kind = Counter(r.problems[0].kind for r in skipped)
    example = {}
    for r in skipped:
        example.setdefault(r.problems[0].kind, r)
    top = ", ".join(
        f"{n:,} {kind.replace('_', ' ')} (e.g. {example[kind].describe()})"
        for kind, n in by_kind.most_common(3)
    )
    return f"no product of catalogue {schema.name!r} survived the checks: all {len(skipped):,} rows were skipped: {top}"


def _shard_record(record: RawRecord, split: str) -> ShardRecord:
    return ShardRecord(
        id=record.id,
        category=tuple(record.category),
        title=record.title,
        attributes=dict(record.attributes),
        split=split,
        description=record.description,
    )


def _modalities(good: list[RawRecord]) -> dict[str, dict[str, int]]:
    present = {
        "image": len(good),
        "title": sum(bool(r.title) for r in good),
        "attributes": sum(bool(r.attributes) for r in good),
        "description": sum(bool(r.description) for r in good),
    }
    return {m: {"present": present[m], "missing": len(good) - present[m]} for m in MODALITIES}


def _leakage_fields(schema: CatalogueSchema, record: RawRecord) -> dict[str, str]:
    product_id = record.id
    if schema.layout == "folder_tree":  # the folders are the category: only the file name can leak
        product_id = os.path.splitext(product_id.rsplit("/", 1)[-1])[0]
    return {
        "title": record.title,
        "attributes": " ; ".join(record.attributes.values()),
        "description": record.description,
        "id": product_id,
    }


def _image_bytes(record: RawRecord) -> bytes:
    assert record.image_path is not None
    try:
        data = jpeg_bytes(record.image_path, record.image_format)
    except Exception as exc:
        raise CatalogueError(
            f"row {record.row} (id {printable(record.id)!r}): image could not be re-read: {exc}"
        ) from exc
    if record.image_format in ("JPEG", "MPO") and record.image_sha256 is not None:
        if hashlib.sha256(data).hexdigest() != record.image_sha256:
            raise CatalogueError(
                f"row {record.row} (id {printable(record.id)!r}): image {record.image_path!r} changed while sharding"
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


def write_shards(  # noqa: C901 - read, split, write, describe: one pass each
    schema: CatalogueSchema,
    output_dir: str,
    shard_size: int = 1000,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    unseen_fraction: float = 0.2,
    on_error: Literal["skip", "fail"] = "skip",
    progress: bool = True,
    pseudo_novel_fraction: float = 0.0,
) -> dict[str, Any]:
    """Shard the catalogue described by ``schema`` (:func:`shard_catalogue` for a schema given in a YAML file).

    Args:
        schema: The catalogue to shard.
        output_dir: Folder to write the shards and ``manifest.json`` into (created if needed).
        shard_size: Products per tar file.
        seed: Seed of the unseen-category choice, the split and the order of records in the shards.
        val_fraction: Share of each seen category's products that goes to ``val`` (not with ``split_folders``).
        test_fraction: Share of each seen category's products that goes to ``test`` (not with ``split_folders``).
        unseen_fraction: Share of leaf categories held out entirely (their products all go to ``test``); with
            ``split_folders`` the unseen leaves are those with no product in ``train`` instead.
        on_error: ``skip`` bad rows (listed in the manifest) or ``fail`` at the first one.
        progress: Show progress bars.
        pseudo_novel_fraction: Share of the seen leaves held out of training as validation-only categories (their
            products go to ``val`` and ``test``, never to ``train``; see :mod:`datamodules.splits`). The unseen
            leaves and the ``test`` split are the same as with 0. Listed in the manifest as
            ``pseudo_novel_categories``.

    Returns:
        The manifest (as written to ``manifest.json``).

    Raises:
        NoProductsError: No row survived the checks (nothing is written).
        CatalogueError: The catalogue cannot be read, or ``on_error="fail"`` and a row is bad.
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
    if not 0.0 <= pseudo_novel_fraction < 1.0:
        raise ValueError(f"pseudo_novel_fraction must be in [0, 1), got {pseudo_novel_fraction}")
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    started = time.perf_counter()

    # 1. Read and check every record.
    good: list[RawRecord] = []
    skipped: list[RawRecord] = []
    reader_stats: dict[str, Any] = {}
    reading = tqdm(
        read_catalogue(schema, stats=reader_stats),
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
    if not good:
        raise NoProductsError(_no_products_message(schema, skipped))

    # 2. Split.
    rng = random.Random(seed)
    tree = CategoryTree.from_paths(r.category for r in good)
    novel_rng = pseudo_novel_rng(seed)
    if schema.split_folders:
        splits, unseen = own_splits(good, rng)
        trained = sorted({r.category for r in splits["train"]})
        pseudo_novel = choose_pseudo_novel(trained, unseen, pseudo_novel_fraction, novel_rng)
        if pseudo_novel:
            held = set(pseudo_novel)
            splits["val"] += [r for r in splits["train"] if r.category in held]
            splits["train"] = [r for r in splits["train"] if r.category not in held]
            novel_rng.shuffle(splits["val"])
    else:
        leaves = [tree.paths[i] for i in tree.leaves]
        product_paths = {r.category for r in good}
        leaves = [p for p in leaves if p in product_paths]
        unseen = choose_unseen(leaves, unseen_fraction, rng)
        pseudo_novel = choose_pseudo_novel(leaves, unseen, pseudo_novel_fraction, novel_rng)
        splits = assign_splits(
            good,
            set(unseen),
            val_fraction,
            test_fraction,
            rng,
            set(pseudo_novel),
            pseudo_novel_order=novel_rng,
        )

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
                    sample = encode_sample(_shard_record(record, split), _image_bytes(record))
                    sink.write(sample)
                    content.update(record.id.encode("utf-8") + b"\0")
                    content.update(sample["json"] + b"\0")
                    content.update(hashlib.sha256(sample["jpg"]).hexdigest().encode("ascii") + b"\n")
                    bar.update(1)
            path = out / name
            files[name] = {"count": len(chunk), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        per_category = Counter(format_path(r.category) for r in records)  # display strings, for people
        category_counts = Counter(r.category for r in records)  # the paths themselves, for programs
        split_info[split] = {
            "count": len(records),
            "shards": list(files),
            "shard_files": files,
            "per_category": dict(sorted(per_category.items())),
            "category_counts": [[list(p), n] for p, n in sorted(category_counts.items())],
        }
    bar.close()

    modalities = _modalities(good)
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "created_by": "clipita shard",
        "schema": schema.to_dict(),
        "content_hash": content.hexdigest(),
        "seed": seed,
        "fractions": {
            "val": val_fraction,
            "test": test_fraction,
            "unseen": unseen_fraction,
            "pseudo_novel": pseudo_novel_fraction,
        },
        "split_source": "folders" if schema.split_folders else "drawn",
        "shard_size": shard_size,
        "input_rows": input_rows,
        "sharded": len(good),
        "skipped": [_skipped_entry(r) for r in skipped],
        "skipped_by_kind": dict(sorted(Counter(r.problems[0].kind for r in skipped).items())),
        "tree": {"levels": schema.level_names(tree.max_depth), "paths": tree.to_json()},
        "unseen_categories": [list(p) for p in unseen],
        "pseudo_novel_categories": [list(p) for p in pseudo_novel],
        "splits": split_info,
        "attribute_names": list(schema.attribute_columns),
        "modalities": modalities,
        "modalities_present": [m for m in MODALITIES if modalities[m]["present"]],
        "leakage": leakage_report((r.category, _leakage_fields(schema, r)) for r in good),
        "reader": reader_stats,
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
    if manifest.get("pseudo_novel_categories"):
        text += (
            f" {len(manifest['pseudo_novel_categories'])} pseudo-novel leaf categories are held out of training "
            "(validation-only)."
        )
    modalities = manifest.get("modalities")
    if modalities:
        lacking = [
            f"{info['missing']:,} lack {name if name != 'attributes' else 'attributes'}"
            for name, info in modalities.items()
            if name != "image" and info["missing"] and (name != "description" or info["present"])
        ]
        if lacking:
            text += f" Of {manifest['sharded']:,} products, {', '.join(lacking)}."
    if manifest.get("leakage"):
        text += " " + describe_leakage(manifest["leakage"])
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
    catalogue: str,
    output_dir: str,
    shard_size: int = 1000,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    unseen_fraction: float = 0.2,
    on_error: Literal["skip", "fail"] = "skip",
    progress: bool = True,
    pseudo_novel_fraction: float = 0.0,
) -> dict[str, Any]:
    """Turn a catalogue into WebDataset shards ``{split}-NNNNNN.tar`` plus ``manifest.json``.

    Every row is checked (image fully decoded, category, id); bad rows are skipped and listed in the
    manifest with their row number, id and reason, so ``sharded + len(skipped) == input_rows``. Earlier shards
    and manifest in ``output_dir`` are replaced. Prints a one-paragraph summary and returns the manifest.

    Args:
        catalogue: Catalogue schema YAML file (see ``datamodules.catalogue.CatalogueSchema``).
        output_dir: Folder to write the shards and ``manifest.json`` into (created if needed).
        shard_size: Products per tar file.
        seed: Seed of the unseen-category choice, the split and the order of records in the shards.
        val_fraction: Share of each seen category's products that goes to ``val``.
        test_fraction: Share of each seen category's products that goes to ``test``.
        unseen_fraction: Share of leaf categories held out entirely (their products all go to ``test``).
        on_error: ``skip`` bad rows (listed in the manifest) or ``fail`` at the first one.
        progress: Show progress bars.
        pseudo_novel_fraction: Share of the seen leaves held out of training as validation-only categories
            (:func:`write_shards`).

    Returns:
        The manifest (as written to ``manifest.json``).

    Raises:
        NoProductsError: No row survived the checks; the message names the top skip reasons with counts.
        CatalogueFileNotFoundError: The schema, table or image folder does not exist.
        CatalogueError: The catalogue cannot be read, or ``on_error="fail"`` and a row is bad (the message names
            its row, id and reason).
    """
    schema = CatalogueSchema.from_yaml(catalogue)
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
        pseudo_novel_fraction=pseudo_novel_fraction,
    )
