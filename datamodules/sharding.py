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
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from clipita_core.paths import format_path
from clipita_core.vocabulary import RECORDED_MODALITIES, SPLITS
from datamodules.catalogue import (
    CatalogueError,
    CatalogueSchema,
    ImageLimits,
    RawRecord,
    jpeg_bytes,
    printable,
    read_catalogue,
)
from datamodules.leakage import leakage_report
from datamodules.manifest import (
    MANIFEST_NAME,
    MANIFEST_VERSION,
    SHARD_NAME,
    Manifest,
    ManifestError,
    load_manifest,
    sha256_file,
    summarize,
)
from datamodules.record_spool import SPOOL_PREFIX, RecordSpool
from datamodules.records import ShardRecord
from datamodules.shard_io import ShardTarWriter
from datamodules.splits import (
    SPLIT_DEFAULTS,
    SplitOptions,
    assign_splits,
    choose_pseudo_novel,
    choose_unseen,
    draw_splits,
    split_options_doc,
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
    "shard_catalogue",
    "summarize",
    "write_shards",
]


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


def _count_modalities(present: Counter, record: RawRecord) -> None:
    present["image"] += 1
    present["title"] += bool(record.title)
    present["attributes"] += bool(record.attributes)
    present["description"] += bool(record.description)


def _modalities(present: Counter, good: int) -> dict[str, dict[str, int]]:
    return {m: {"present": present[m], "missing": good - present[m]} for m in RECORDED_MODALITIES}


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


def _image_bytes(record: RawRecord, limits: ImageLimits) -> bytes:
    assert record.image_path is not None
    try:
        data = jpeg_bytes(record.image_path, record.image_format, limits)
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


def _clear_old_output(out: Path, spool: Path) -> None:
    """Remove shards, a manifest and spools from an earlier run so no stale file survives next to the new ones."""
    for path in out.iterdir():
        stale_spool = path.name.startswith(SPOOL_PREFIX) and path.name != spool.name
        if path.is_file() and (SHARD_NAME.match(path.name) or path.name == MANIFEST_NAME or stale_spool):
            path.unlink()


def _skipped_entry(record: RawRecord) -> dict[str, Any]:
    return {
        "row": record.row,
        "id": printable(record.id),
        "reason": record.reason,
        "kinds": sorted({p.kind for p in record.problems}),
    }


def _read_into(
    schema: CatalogueSchema, spool: RecordSpool, on_error: str, progress: bool, num_workers: int
) -> tuple[list[RawRecord], Counter, dict[str, Any]]:
    """1. Read and check every record: good ones go to ``spool``; returns the skipped records, the modality counts
    of the good ones and what the reader saw."""
    skipped: list[RawRecord] = []
    present: Counter = Counter()
    reader_stats: dict[str, Any] = {}
    reading = tqdm(
        read_catalogue(schema, stats=reader_stats, num_workers=num_workers),
        desc=f"checking {schema.name}",
        unit=" rows",
        disable=not progress,
        leave=False,
    )
    for record in reading:
        if record.ok:
            spool.append(record)
            _count_modalities(present, record)
            continue
        if on_error == "fail":
            raise CatalogueError(f"{schema.name}: bad record at {record.describe()}")
        skipped.append(record)
    if not len(spool):
        raise NoProductsError(_no_products_message(schema, skipped))
    return skipped, present, reader_stats


def write_shards(  # noqa: C901 - read, split, write, describe
    schema: CatalogueSchema,
    output_dir: str,
    shard_size: int = 1000,
    split_options: SplitOptions = SPLIT_DEFAULTS,
    on_error: Literal["skip", "fail"] = "skip",
    progress: bool = True,
    num_workers: int = 0,
) -> Manifest:
    """Shard the catalogue described by ``schema`` (:func:`shard_catalogue` for a schema given in a YAML file).

    Args:
        schema: The catalogue to shard.
        output_dir: Folder to write the shards and ``manifest.json`` into (created if needed).
        shard_size: Products per tar file.
        split_options: How the products are split (:class:`datamodules.splits.SplitOptions`; the seed also orders the
            records within each split).
        on_error: ``skip`` bad rows (listed in the manifest) or ``fail`` at the first one.
        progress: Show progress bars.
        num_workers: Processes decoding the images while the rows are checked (0: this process); the shards and
            manifest are the same whatever the number.

    Returns:
        The manifest (as written to ``manifest.json``).

    Raises:
        NoProductsError: No row survived the checks (nothing is written).
        CatalogueError: The catalogue cannot be read, or ``on_error="fail"`` and a row is bad.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    started = time.perf_counter()
    out = Path(output_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with RecordSpool(out) as spool:
        try:
            skipped, present, reader_stats = _read_into(schema, spool, on_error, progress, num_workers)
        except CatalogueError:
            spool.close()
            if created and not any(out.iterdir()):
                out.rmdir()
            raise
        # 2. Split the good records, standing for each by its spool line.
        splits, unseen, pseudo_novel, tree = draw_splits(
            range(len(spool)),
            schema.split_folders,
            split_options.seed,
            split_options.val_fraction,
            split_options.test_fraction,
            split_options.unseen_fraction,
            split_options.pseudo_novel_fraction,
            category_of=spool.category,
            split_of=spool.split,
        )
        input_rows = len(spool) + len(skipped)
        moved_to_test = sum(
            spool.split(line) in ("train", "val") for line in splits["test"]
        )  # splits.test_only

        # 3. Write shards, split by split, reading each record back from the spool, and hash what was written.
        limits = schema.image_limits()  # the checks the images passed hold again when they are re-read
        _clear_old_output(out, spool.path)
        content = hashlib.sha256()
        split_info: dict[str, dict[str, Any]] = {}
        bar = tqdm(
            total=input_rows - len(skipped),
            desc=f"writing {out}",
            unit=" products",
            disable=not progress,
            leave=False,
        )
        for split in SPLITS:
            lines = splits[split]
            files: dict[str, dict[str, Any]] = {}
            for shard_no, start in enumerate(range(0, len(lines), shard_size)):
                name = f"{split}-{shard_no:06d}.tar"
                chunk = lines[start : start + shard_size]
                with ShardTarWriter(out / name) as sink:
                    for line in chunk:
                        record = spool.read(line)
                        sample = sink.write(_shard_record(record, split), _image_bytes(record, limits))
                        content.update(record.id.encode("utf-8") + b"\0")
                        content.update(sample["json"] + b"\0")
                        content.update(hashlib.sha256(sample["jpg"]).hexdigest().encode("ascii") + b"\n")
                        bar.update(1)
                path = out / name
                files[name] = {"count": len(chunk), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
            category_counts = Counter(map(spool.category, lines))  # the paths themselves, for programs
            per_category = Counter()  # display strings, for people
            for path_, n in category_counts.items():
                per_category[format_path(path_)] += n
            split_info[split] = {
                "count": len(lines),
                "shards": list(files),
                "shard_files": files,
                "per_category": dict(sorted(per_category.items())),
                "category_counts": [[list(p), n] for p, n in sorted(category_counts.items())],
            }
        bar.close()
        leakage = leakage_report((r.category, _leakage_fields(schema, r)) for r in spool)
        sharded = len(spool)

    modalities = _modalities(present, sharded)
    manifest = Manifest.from_dict(
        {
            "version": MANIFEST_VERSION,
            "created_by": "clipita shard",
            "schema": schema.to_dict(),
            "content_hash": content.hexdigest(),
            "seed": split_options.seed,
            "fractions": split_options.fractions(),
            "split_source": "folders" if schema.split_folders else "drawn",
            "moved_to_test": moved_to_test,
            "shard_size": shard_size,
            "input_rows": input_rows,
            "sharded": sharded,
            "skipped": [_skipped_entry(r) for r in skipped],
            "skipped_by_kind": dict(sorted(Counter(r.problems[0].kind for r in skipped).items())),
            "tree": {"levels": schema.level_names(tree.max_depth), "paths": tree.to_json()},
            "unseen_categories": [list(p) for p in unseen],
            "pseudo_novel_categories": [list(p) for p in pseudo_novel],
            "splits": split_info,
            "attribute_names": list(schema.attribute_columns),
            "modalities": modalities,
            "modalities_present": [m for m in RECORDED_MODALITIES if modalities[m]["present"]],
            "leakage": leakage,
            "reader": reader_stats,
        }
    )
    tmp = out / (MANIFEST_NAME + ".tmp")
    manifest.write(tmp)
    os.replace(tmp, out / MANIFEST_NAME)
    print(summarize(manifest, str(out), time.perf_counter() - started), file=sys.stdout)
    return manifest


def shard_catalogue(
    catalogue: str,
    output_dir: str,
    shard_size: int = 1000,
    seed: int = SPLIT_DEFAULTS.seed,
    val_fraction: float = SPLIT_DEFAULTS.val_fraction,
    test_fraction: float = SPLIT_DEFAULTS.test_fraction,
    unseen_fraction: float = SPLIT_DEFAULTS.unseen_fraction,
    on_error: Literal["skip", "fail"] = "skip",
    progress: bool = True,
    pseudo_novel_fraction: float = SPLIT_DEFAULTS.pseudo_novel_fraction,
    num_workers: int = 0,
) -> Manifest:
    """Turn a catalogue into WebDataset shards ``{split}-NNNNNN.tar`` plus ``manifest.json`` (``clipita shard``).

    Every row is checked (image fully decoded, category, id); bad rows are skipped and listed in the
    manifest with their row number, id and reason, so ``sharded + len(skipped) == input_rows``. Earlier shards
    and manifest in ``output_dir`` are replaced. Prints a one-paragraph summary and returns the manifest.

    Args:
        catalogue: Catalogue schema YAML file (see ``datamodules.catalogue.CatalogueSchema``).
        output_dir: Folder to write the shards and ``manifest.json`` into (created if needed).
        shard_size: Products per tar file.
        {split_options}
        on_error: ``skip`` bad rows (listed in the manifest) or ``fail`` at the first one.
        progress: Show progress bars.
        num_workers: Processes decoding the images while the rows are checked (0: this process); the output is the
            same whatever the number.

    Returns:
        The manifest (as written to ``manifest.json``).

    Raises:
        NoProductsError: No row survived the checks; the message names the top skip reasons with counts.
        CatalogueFileNotFoundError: The schema, table or image folder does not exist.
        CatalogueError: The catalogue cannot be read, or ``on_error="fail"`` and a row is bad (the message names
            its row, id and reason).
    """
    schema = CatalogueSchema.from_yaml(catalogue)
    split_options = SplitOptions(seed, val_fraction, test_fraction, unseen_fraction, pseudo_novel_fraction)
    return write_shards(schema, output_dir, shard_size, split_options, on_error, progress, num_workers)


shard_catalogue.__doc__ = split_options_doc(shard_catalogue.__doc__)  # the split options' help, declared once
