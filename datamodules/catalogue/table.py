"""Table readers (CSV, JSONL, Parquet): each row becomes cells (column -> raw value) or a row-level problem.

Used for a ``table`` catalogue's product table and for a folder tree's optional metadata table. Only the id
column (and for products the category and image columns) is required; title, attribute and description columns
are optional per row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from datamodules.catalogue.schema import DEFAULT_TITLE_COLUMN, CatalogueSchema
from datamodules.catalogue.values import (
    NUL_MARK,
    CatalogueError,
    CatalogueFileNotFoundError,
    Problem,
    check_regular_file,
)

Role = Literal["products", "metadata"]
Cells = tuple[int, dict[str, Any] | None, Problem | None]


@dataclass(frozen=True)
class Columns:
    """The columns a table is read with.

    Args:
        required: Columns every row must have.
        optional: Text columns read when present (title, attributes, description).
        title: The title column in use, or ``None`` (the catalogue has no titles).
    """

    required: list[str]
    optional: list[str]
    title: str | None


def table_columns(schema: CatalogueSchema, role: Role, header: list[str] | None = None) -> Columns:
    """The columns to read. With a header, the default ``title`` column is used only when present."""
    required = [schema.id_column]
    if role == "products":
        required += schema.category_columns if schema.category_columns else [str(schema.category_column)]
        if schema.image_column:
            required.append(schema.image_column)
    title = schema.title_column
    if title == DEFAULT_TITLE_COLUMN and header is not None and title not in header:
        title = None
    optional = ([title] if title else []) + list(schema.attribute_columns)
    if schema.description_column:
        optional.append(schema.description_column)
    return Columns(required, optional, title)


def check_header(schema: CatalogueSchema, columns: list[str], role: Role) -> Columns:
    """Fail naming the missing columns; returns the columns to read."""
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise CatalogueError(f"table {schema.table!r} has repeated column name(s) {repeated}")
    wanted = table_columns(schema, role, columns)
    missing = [c for c in wanted.required + wanted.optional if c not in columns]
    if missing:
        raise CatalogueError(f"table {schema.table!r} has no column(s) {missing}; its columns are {columns}")
    return wanted


def _open(path: str, **kwargs: Any):
    check_regular_file(path, "table")
    try:
        return open(path, **kwargs)
    except FileNotFoundError:
        raise CatalogueFileNotFoundError(f"table {path!r} does not exist") from None
    except OSError as exc:
        raise CatalogueError(f"cannot read table {path!r}: {exc}") from exc


def _read_csv(schema: CatalogueSchema, role: Role) -> tuple[Columns, Iterator[Cells]]:
    path = str(schema.table)
    # surrogateescape keeps undecodable bytes (reported per row) instead of failing the whole file;
    # utf-8-sig drops a byte-order mark.
    handle = _open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(line.replace("\0", NUL_MARK) for line in handle)
    try:
        header = next(reader)
    except StopIteration:
        handle.close()
        raise CatalogueError(f"table {path!r} is empty (no header row)") from None
    except csv.Error as exc:
        handle.close()
        raise CatalogueError(f"table {path!r}: cannot parse the header row: {exc}") from exc
    header = [h.strip() for h in header]
    try:
        columns = check_header(schema, header, role)
    except CatalogueError:
        handle.close()
        raise
    return columns, _csv_rows(schema, handle, reader, header)


def _csv_rows(schema: CatalogueSchema, handle: Any, reader: Any, header: list[str]) -> Iterator[Cells]:
    id_pos = header.index(schema.id_column)
    row = 0
    with handle:
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # the reader resets its state, so reading can go on with the next row
                row += 1
                message = f"unparsable CSV row near line {reader.line_num}: {exc}"
                yield row, None, Problem("malformed_row", message)
                continue
            if not cells:  # a blank line is not a record
                continue
            row += 1
            if len(cells) != len(header):
                partial = {schema.id_column: cells[id_pos]} if id_pos < len(cells) else {}
                message = f"CSV row has {len(cells)} fields, the header has {len(header)}"
                yield row, partial, Problem("malformed_row", message)
                continue
            cells = [c.replace(NUL_MARK, "\0") for c in cells]  # a NUL is a control character, as in JSONL
            yield row, dict(zip(header, cells, strict=True)), None


def _read_jsonl(schema: CatalogueSchema, role: Role) -> tuple[Columns, Iterator[Cells]]:
    columns = table_columns(schema, role)
    handle = _open(str(schema.table), mode="rb")  # bytes, so one undecodable line cannot stop the read
    return columns, _jsonl_rows(schema, handle, columns)


def _jsonl_rows(schema: CatalogueSchema, handle: Any, columns: Columns) -> Iterator[Cells]:
    row = 0
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            text = line.decode("utf-8", "surrogateescape")
            if not text.strip():
                continue
            row += 1
            try:
                obj = json.loads(text, strict=False)  # raw control characters: the same rule as escaped ones
            except json.JSONDecodeError as exc:
                yield row, None, Problem("malformed_row", f"invalid JSON on line {line_no}: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                kind = type(obj).__name__
                yield row, None, Problem("malformed_row", f"line {line_no} is a JSON {kind}, not an object")
                continue
            missing = [c for c in columns.required if c not in obj]
            if missing:
                partial = {schema.id_column: obj.get(schema.id_column)}
                yield row, partial, Problem("malformed_row", f"missing required column(s) {missing}")
                continue
            yield row, obj, None


def _read_parquet(schema: CatalogueSchema, role: Role) -> tuple[Columns, Iterator[Cells]]:
    import pyarrow.parquet as pq

    path = str(schema.table)
    check_regular_file(path, "table")
    try:
        pfile = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unreadable files
        raise CatalogueError(f"cannot read Parquet table {path!r}: {exc}") from exc
    columns = check_header(schema, list(pfile.schema_arrow.names), role)

    def rows() -> Iterator[Cells]:
        wanted = list(dict.fromkeys(columns.required + columns.optional))
        row = 0
        for batch in pfile.iter_batches(batch_size=4096, columns=wanted):
            for cells in batch.to_pylist():
                row += 1
                yield row, cells, None

    return columns, rows()


def read_table(schema: CatalogueSchema, role: Role = "products") -> tuple[Columns, Iterator[Cells]]:
    """Open ``schema.table`` and check its columns now; rows are read lazily from the returned iterator.

    Raises:
        CatalogueFileNotFoundError: The table does not exist.
        CatalogueError: It cannot be read, or lacks a column the schema names.
    """
    suffix = Path(str(schema.table)).suffix.lower()
    reader = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}[suffix]
    return reader(schema, role)
