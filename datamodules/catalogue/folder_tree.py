"""The folder-tree layout: images in folders named after their category path; text only from metadata.

File and folder names never become product text (a folder tree's file names usually repeat the class name, and
a title made from them would hand every text model the label). Product id = the image's path relative to
``image_root`` (POSIX separators), so equal file names in different folders never collide. Text comes from:

- an optional metadata ``table`` joined on ``id_column``: the image's relative path, with or without its
  extension (``Fruit/Apple/x.jpg`` or ``Fruit/Apple/x``; with ``split_folders`` the split folder is part of it);
- or, with ``sidecar_text: true``, a ``x.txt`` beside ``x.jpg``: first line = title, the rest = description.

Only image files (``IMAGE_SUFFIXES``) are rows; other files (the schema YAML, the metadata table, sidecar texts,
read-me files) are counted in ``stats["ignored_files"]`` and otherwise left alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from clipita_core.paths import format_path
from clipita_core.vocabulary import SPLITS
from datamodules.catalogue.schema import CatalogueSchema
from datamodules.catalogue.table import read_table
from datamodules.catalogue.values import (
    IMAGE_SUFFIXES,
    CatalogueError,
    CatalogueFileNotFoundError,
    Problem,
    RawRecord,
    has_undecodable,
    id_problem,
    scalar_text,
    show,
)

SPLIT_FOLDERS = SPLITS  # a folder tree's top folders are named after the splits

# cells of one metadata row -> (title, attributes, description, problems)
TextFields = tuple[str, dict[str, str], str, list[Problem]]


def _join_key(value: str) -> str:
    key = value.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def read_metadata(
    schema: CatalogueSchema, text_fields: Callable[[dict[str, Any]], TextFields], stats: dict[str, Any]
) -> dict[str, TextFields]:
    """The metadata table as join key -> text fields (the first row of a repeated key wins; repeats counted)."""
    if not schema.table:
        return {}
    columns, rows = read_table(schema, role="metadata")
    out: dict[str, TextFields] = {}
    meta = stats.setdefault(
        "metadata",
        {"table": schema.table, "rows": 0, "bad_rows": 0, "repeated_keys": 0, "title_column": columns.title},
    )
    for _row, cells, problem in rows:
        meta["rows"] += 1
        key = _join_key(scalar_text((cells or {}).get(schema.id_column)) or "")
        if problem is not None or not key:
            meta["bad_rows"] += 1
            continue
        if key in out:
            meta["repeated_keys"] += 1
            continue
        out[key] = text_fields(cells or {})
    meta["keys"] = len(out)
    return out


def _sidecar(path: str) -> tuple[str, str]:
    text_path = os.path.splitext(path)[0] + ".txt"
    try:
        text = Path(text_path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        return "", ""
    lines = text.strip().splitlines()
    title = lines[0].strip() if lines else ""
    return title, "\n".join(lines[1:]).strip()


def _record(
    schema: CatalogueSchema,
    row: int,
    rel: PurePosixPath,
    path: str,
    metadata: dict[str, TextFields],
    used: set[str],
) -> RawRecord:
    parts = rel.parts
    record = RawRecord(row, str(rel), image_path=path)
    problems = record.problems
    folders = parts[:-1]
    if schema.split_folders:
        if len(parts) < 2 or parts[0] not in SPLIT_FOLDERS:
            where = parts[0] if len(parts) > 1 else "image_root"
            problems.append(
                Problem(
                    "outside_split",
                    f"image {str(rel)!r} lies in {where!r}, not in a split folder {list(SPLIT_FOLDERS)}",
                )
            )
        else:
            record.split = parts[0]
        folders = folders[1:]
    record.category = tuple(p.strip() for p in folders)
    if not record.category:
        if not problems:
            problems.append(Problem("missing_category", f"image {str(rel)!r} lies in no category folder"))
    elif not all(record.category):
        problems.append(
            Problem("missing_category", f"folder path {show(format_path(record.category))} has a blank level")
        )
    undecodable = [v for v in parts if has_undecodable(v)]
    if undecodable:
        problems.append(
            Problem("non_utf8", f"file or folder name is not valid UTF-8: {show(undecodable[0])}")
        )
    bad_id = id_problem(record.id)
    if bad_id and not undecodable:
        problems.append(bad_id)
    for key in (str(rel), str(rel.with_suffix(""))):
        if key in metadata:
            record.title, record.attributes, record.description, extra = metadata[key]
            problems.extend(extra)
            used.add(key)
            break
    else:
        if schema.sidecar_text:
            record.title, record.description = _sidecar(path)
    return record


def read_folder_tree(
    schema: CatalogueSchema,
    text_fields: Callable[[dict[str, Any]], TextFields],
    stats: dict[str, Any],
) -> Iterator[RawRecord]:
    """One record per image file under ``image_root``, in sorted walk order (hidden files and folders skipped)."""
    root = schema.image_root
    if not os.path.exists(root):
        raise CatalogueFileNotFoundError(f"image_root {root!r} does not exist")
    if not os.path.isdir(root):
        raise CatalogueError(f"image_root {root!r} is not a folder")
    metadata = read_metadata(schema, text_fields, stats)
    used: set[str] = set()
    stats["ignored_files"] = 0
    row = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # a fixed order; no hidden folders
        rel_folder = PurePosixPath(*Path(os.path.relpath(folder, root)).parts)
        for name in sorted(f for f in files if not f.startswith(".")):  # .DS_Store is not a row
            if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                stats["ignored_files"] += 1
                continue
            row += 1
            rel = rel_folder / name if str(rel_folder) != "." else PurePosixPath(name)
            yield _record(schema, row, rel, os.path.join(folder, name), metadata, used)
    if "metadata" in stats:
        stats["metadata"]["unmatched_keys"] = len(set(metadata) - used)
