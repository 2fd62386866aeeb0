"""The folder-tree layout: images in folders named after their category path; text only from metadata.

File and folder names never become product text (a folder tree's file names usually repeat the class name, and
a title made from them would hand every text model the label). Product id = the image's path relative to
``image_root`` (POSIX separators), so equal file names in different folders never collide. Text comes from:

- an optional metadata ``table`` joined on ``id_column``: the image's relative path, with or without its
  extension (``Fruit/Apple/x.jpg`` or ``Fruit/Apple/x``; with ``split_folders`` the split folder is part of it);
- or, with ``sidecar_text: true``, a ``x.txt`` beside ``x.jpg``: first line = title, the rest = description.

Only image files (``IMAGE_SUFFIXES``) are rows; other files (the schema YAML, the metadata table, sidecar texts,
read-me files) are counted in ``stats["ignored_files"]`` and otherwise left alone. Symlinked folders are not
walked (``stats["folder_links_not_followed"]``); a symlinked image is a row, read only if it resolves inside
``image_root`` (see :mod:`datamodules.catalogue.images`), and so is a sidecar text. A file or folder name with a
control character skips its images as ``control_character`` (names are the ids and categories).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from clipita_core.paths import format_path
from clipita_core.vocabulary import SPLITS
from datamodules.catalogue.images import IMAGE_SUFFIXES, ImageLimits, read_image_file
from datamodules.catalogue.schema import CatalogueSchema
from datamodules.catalogue.table import read_table
from datamodules.catalogue.values import (
    MAX_FIELD_CHARS,
    CatalogueError,
    CatalogueFileNotFoundError,
    Problem,
    RawRecord,
    clean_text,
    has_undecodable,
    id_problem,
    key_problem,
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


def _sidecar(path: str, limits: ImageLimits, replaced: Counter) -> tuple[str, str, Problem | None]:
    """(title, description, problem) from the ``.txt`` beside an image; none is fine, an unreadable one is not."""
    text_path = os.path.splitext(path)[0] + ".txt"
    if not os.path.lexists(text_path):
        return "", "", None
    cap = ImageLimits(limits.root, max_bytes=4 * MAX_FIELD_CHARS, max_pixels=limits.max_pixels)
    data, problem = read_image_file(text_path, cap, what="sidecar text")
    if problem is not None:
        return "", "", problem
    assert data is not None
    text, n = clean_text(data.decode("utf-8", "surrogateescape"))
    if n:
        replaced["sidecar text"] += 1
    if has_undecodable(text):
        return "", "", Problem("non_utf8", f"sidecar text {text_path!r} is not valid UTF-8")
    lines = text.strip().splitlines()
    title = lines[0].strip() if lines else ""
    return title, "\n".join(lines[1:]).strip(), None


def _record(
    schema: CatalogueSchema,
    row: int,
    rel: PurePosixPath,
    path: str,
    metadata: dict[str, TextFields],
    used: set[str],
    stats: dict[str, Any],
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
    control = [p for v in parts if (p := key_problem("file or folder name", v)) is not None]
    if control:
        problems.append(control[0])
    bad_id = id_problem(record.id)
    if bad_id and not undecodable and not control:
        problems.append(bad_id)
    for key in (str(rel), str(rel.with_suffix(""))):
        if key in metadata:
            record.title, record.attributes, record.description, extra = metadata[key]
            problems.extend(extra)
            used.add(key)
            break
    else:
        if schema.sidecar_text:
            replaced = stats.setdefault("control_characters_replaced", Counter())
            record.title, record.description, problem = _sidecar(path, schema.image_limits(), replaced)
            if problem is not None:
                problems.append(problem)
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
    stats["folder_links_not_followed"] = 0
    row = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # a fixed order; no hidden folders
        stats["folder_links_not_followed"] += sum(os.path.islink(os.path.join(folder, d)) for d in dirs)
        rel_folder = PurePosixPath(*Path(os.path.relpath(folder, root)).parts)
        for name in sorted(f for f in files if not f.startswith(".")):  # .DS_Store is not a row
            if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                stats["ignored_files"] += 1
                continue
            row += 1
            rel = rel_folder / name if str(rel_folder) != "." else PurePosixPath(name)
            yield _record(schema, row, rel, os.path.join(folder, name), metadata, used, stats)
    if "metadata" in stats:
        stats["metadata"]["unmatched_keys"] = len(set(metadata) - used)
