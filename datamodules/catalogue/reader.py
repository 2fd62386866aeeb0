"""``read_catalogue``: every input row as a :class:`RawRecord` with its problems attached, for any layout."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from functools import partial
from itertools import islice
from typing import Any, Literal

from clipita_core.paths import split_path
from datamodules.catalogue.folder_tree import TextFields, read_folder_tree
from datamodules.catalogue.images import ImageLimits, check_image, locate_image
from datamodules.catalogue.schema import CatalogueSchema
from datamodules.catalogue.seen_ids import SeenIds
from datamodules.catalogue.table import Columns, read_table
from datamodules.catalogue.values import (
    MAX_FIELD_CHARS,
    Problem,
    RawRecord,
    clean_text,
    has_undecodable,
    id_problem,
    key_problem,
    scalar_text,
    show,
)

CHECK_WINDOW = 2048  # records per window of image checks handed to the workers


class _Cells:
    """Text of one row's cells, collecting the problems found (non-scalar cells, bad bytes, control characters,
    cells over :data:`MAX_FIELD_CHARS`); the control characters replaced in free text are counted in
    ``replaced`` (column -> rows)."""

    def __init__(self, cells: dict[str, Any], replaced: Counter) -> None:
        self.cells = cells
        self.replaced = replaced
        self.problems: list[Problem] = []

    def text(self, column: str | None, kind: Literal["key", "free"] = "free") -> str:
        """The cell of ``column``: a ``key`` (id, category level, image path) with a control character is a
        problem; in ``free`` text they become spaces (tab, LF and CR kept)."""
        if not column:
            return ""
        value = self.cells.get(column)
        if isinstance(value, (dict, list)):
            self.problems.append(
                Problem("malformed_row", f"column {column!r} holds a {type(value).__name__}")
            )
            return ""
        text = scalar_text(value) or ""
        if len(text) > MAX_FIELD_CHARS:
            message = f"column {column!r} holds {len(text):,} characters, more than {MAX_FIELD_CHARS:,}"
            self.problems.append(Problem("malformed_row", message))
            return ""
        if has_undecodable(text):
            self.problems.append(Problem("non_utf8", f"column {column!r} is not valid UTF-8: {show(text)}"))
        if kind == "key":
            problem = key_problem(f"column {column!r}", text)
            if problem is not None:
                self.problems.append(problem)
            return text
        text, replaced = clean_text(text)
        if replaced:
            self.replaced[column] += 1
        return text


def _text_fields(schema: CatalogueSchema, title_column: str | None, cells: _Cells) -> TextFields:
    """(title, attributes, description, problems) of a row; empty values are absent, not problems."""
    title = cells.text(title_column)
    attributes = {c: v for c in schema.attribute_columns if (v := cells.text(c))}
    description = cells.text(schema.description_column)
    return title, attributes, description, cells.problems


def _record_from_cells(
    schema: CatalogueSchema, columns: Columns, row: int, cells: dict[str, Any], replaced: Counter
) -> RawRecord:
    read = _Cells(cells, replaced)
    product_id = read.text(schema.id_column, "key")
    problems = read.problems
    bad_id = problems[0] if problems else id_problem(product_id)  # bad bytes, control characters, empty
    if schema.category_columns:
        levels = [read.text(c, "key") for c in schema.category_columns]
        empty = [c for c, v in zip(schema.category_columns, levels, strict=True) if not v]
        if empty:
            problems.append(Problem("missing_category", f"empty category level(s) {empty}"))
        category = tuple(levels)
    else:
        raw_path = read.text(str(schema.category_column), "key")
        parts = split_path(raw_path, schema.category_separator)
        if not raw_path or not all(parts):
            problems.append(
                Problem("missing_category", f"category {show(raw_path)} is empty or has an empty level")
            )
        category = parts if raw_path else ()
    title, attributes, description, _ = _text_fields(schema, columns.title, read)
    if bad_id is not None and bad_id not in problems:
        problems.append(bad_id)

    image_path: str | None = None
    if schema.image_column:
        known = len(problems)
        rel = read.text(schema.image_column, "key")
        if rel and len(problems) == known:  # a path with a control character names no file to look at
            image_path = os.path.join(schema.image_root, rel)
        elif not rel:
            problems.append(Problem("missing_image", f"empty image path (column {schema.image_column!r})"))
    elif product_id and not bad_id:
        image_path = os.path.join(schema.image_root, schema.image_pattern.replace("{id}", product_id))
    return RawRecord(
        row, product_id, title, attributes, category, image_path, problems, description=description
    )


def _read_table_records(
    schema: CatalogueSchema, stats: dict[str, Any], replaced: Counter
) -> Iterator[RawRecord]:
    columns, rows = read_table(schema, role="products")
    stats["title_column"] = columns.title
    for row, cells, problem in rows:
        if problem is not None:
            product_id = scalar_text((cells or {}).get(schema.id_column)) or ""
            yield RawRecord(row, product_id, problems=[problem])
        else:
            assert cells is not None
            yield _record_from_cells(schema, columns, row, cells, replaced)


def read_catalogue(
    schema: CatalogueSchema,
    check_images: bool = True,
    stats: dict[str, Any] | None = None,
    num_workers: int = 0,
) -> Iterator[RawRecord]:
    """Yield one :class:`RawRecord` per input row, with its problems attached instead of raised.

    Problems found: malformed rows (wrong CSV field count, invalid JSON line, missing required column, a cell
    over ``MAX_FIELD_CHARS``), text that is not valid UTF-8, empty ids, control characters in a key (id, category
    level, image path; in free text they become spaces, counted in ``stats["control_characters_replaced"]``),
    duplicate ids (the second and later occurrences), empty or missing category levels, images outside a split
    folder (``split_folders``), image paths that leave the image root, image paths that are no regular file,
    missing image files, images over the schema's byte or pixel caps, and corrupt or truncated images (see
    :mod:`datamodules.catalogue.images`). A missing title, attribute or description is not a problem: the product
    simply lacks it.

    Args:
        schema: The catalogue to read.
        check_images: Fully decode each image (slow-ish, ~0.5 ms per small JPEG); when ``False`` only its
            existence is checked.
        stats: Filled with what the reader saw besides rows (the title column in use, files a folder tree
            ignored, how the metadata table joined).
        num_workers: Processes decoding the images (0: in this process). The records and their problems are the
            same, in the same order, whatever the number: rows are read here and checked a window at a time.

    Raises:
        CatalogueFileNotFoundError: The table or image folder does not exist.
        CatalogueError: The table or folder cannot be read, or lacks a column the schema names.
    """
    stats = {} if stats is None else stats
    replaced = stats.setdefault("control_characters_replaced", Counter())
    if schema.layout == "folder_tree":

        def fields(cells: dict[str, Any]) -> TextFields:
            return _text_fields(schema, schema.title_column, _Cells(cells, replaced))

        records = read_folder_tree(schema, fields, stats)
    else:
        records = _read_table_records(schema, stats, replaced)
    records = _with_duplicates_marked(records)
    limits = schema.image_limits()
    if not check_images:
        for record in records:
            if record.image_path is not None:
                problem = locate_image(record.image_path, limits)[1]
                if problem is not None:
                    record.problems.append(problem)
            yield record
    elif num_workers > 0:
        yield from _checked_in_workers(records, num_workers, limits)
    else:
        for record in records:
            if record.image_path is not None:
                _attach(record, check_image(record.image_path, limits))
            yield record


def _with_duplicates_marked(records: Iterator[RawRecord]) -> Iterator[RawRecord]:
    """The second and later records of an id get a ``duplicate_id`` problem naming the first one's row."""
    seen = SeenIds()
    for record in records:
        if record.id:
            first = seen.first_row(record.id, record.row)
            if first is not None:
                message = f"duplicate id {show(record.id)} (first seen in row {first})"
                record.problems.append(Problem("duplicate_id", message))
        yield record


def _attach(record: RawRecord, checked: tuple[str | None, str | None, Problem | None]) -> None:
    fmt, digest, problem = checked
    if problem is not None:
        record.problems.append(problem)
    record.image_format, record.image_sha256 = fmt, digest


def _checked_in_workers(
    records: Iterator[RawRecord], num_workers: int, limits: ImageLimits
) -> Iterator[RawRecord]:
    """Records with their images checked by ``num_workers`` processes, in input order. A window of records is
    checked while the previous one is handed on, so at most two windows are held (memory independent of the
    catalogue). A worker that dies fails the read (``BrokenProcessPool``) instead of hanging it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork where there is one (no re-import of the caller's main module, as DataLoader workers); else spawn
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context(method)) as pool:

        def submit(batch: list[RawRecord]) -> tuple[list[RawRecord], Iterator[Any]]:
            paths = [r.image_path for r in batch if r.image_path is not None]
            check = partial(check_image, limits=limits)
            return batch, pool.map(check, paths, chunksize=max(1, len(paths) // (4 * num_workers)))

        current = submit(list(islice(records, CHECK_WINDOW)))
        while current[0]:
            upcoming = submit(list(islice(records, CHECK_WINDOW)))
            batch, checked = current
            for record in batch:
                if record.image_path is not None:
                    _attach(record, next(checked))
                yield record
            current = upcoming
