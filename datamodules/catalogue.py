"""A product catalogue as users bring it: its schema (a YAML file) and a reader that checks every record.

Two layouts are understood:

- ``table``: a CSV, JSONL or Parquet file with one product per row plus a folder of images.
- ``folder_tree``: images in a folder tree whose folder names are the category path, e.g.
  ``root/Apparel/Topwear/Shirts/blue_oxford-shirt.jpg``.

:func:`read_catalogue` yields one :class:`RawRecord` per input row and attaches the problems it finds to the
record instead of raising, so the shard writer can report every row it leaves out and why.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from PIL import Image

from datamodules.category_tree import CATEGORY_SEPARATOR, CategoryPath, format_path

TABLE_SUFFIXES = (".csv", ".jsonl", ".parquet")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
JPEG_FORMATS = ("JPEG", "MPO")  # MPO is a JPEG with extra frames; its bytes are JPEG bytes.

# Reasons a record is left out. Every problem message names the offending value.
ProblemKind = Literal[
    "malformed_row",
    "non_utf8",
    "bad_id",
    "duplicate_id",
    "empty_title",
    "missing_category",
    "missing_image",
    "corrupt_image",
    "unsupported_file",
]

# Stand-in for a NUL byte inside a CSV (the csv module refuses NULs). Never produced by UTF-8 decoding with
# ``surrogateescape`` (which maps only bytes 0x80-0xFF to U+DC80-U+DCFF), so it cannot collide with real text.
_NUL_MARK = "\udc00"


class CatalogueError(ValueError):
    """The catalogue cannot be read as described by its schema, or a record is invalid where that is fatal."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a record.

    Args:
        kind: A short machine-readable class of problem (used to count skipped rows by reason).
        message: What is wrong, naming the offending value.
    """

    kind: ProblemKind
    message: str


@dataclass
class RawRecord:
    """One input row of a catalogue, as read, with the problems found in it.

    Args:
        row: 1-based record number in the input: the n-th data row of a table (the CSV header and blank lines
            are not counted; for JSONL, blank lines are not counted) or the n-th file of a folder tree in
            sorted walk order.
        id: Product id (surrounding blanks stripped; ``""`` when it could not be read).
        title: Product title (surrounding blanks stripped).
        attributes: Attribute name -> value; missing or empty values are absent.
        category: Category path, root first.
        image_path: Absolute path of the product image (``None`` when it could not be determined).
        problems: Everything wrong with the record; empty for a good record.
        image_format: PIL format of the image (e.g. ``"JPEG"``) once the image was checked.
        image_sha256: sha256 of the image file's bytes as checked, to detect a file changing while sharding.
    """

    row: int
    id: str
    title: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    category: CategoryPath = ()
    image_path: str | None = None
    problems: list[Problem] = field(default_factory=list)
    image_format: str | None = None
    image_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        """All problems as one human-readable string (``""`` for a good record)."""
        return "; ".join(p.message for p in self.problems)

    def describe(self) -> str:
        """``row 12 (id '1563'): missing image file '/data/images/1563.jpg'`` — for error messages."""
        return f"row {self.row} (id {self.id!r}): {self.reason or 'ok'}"


@dataclass
class CatalogueSchema:
    """How to read a product catalogue.

    Load one from YAML with :meth:`from_yaml` (relative paths in the file are resolved against the YAML file's
    folder) or build one in Python (relative paths are resolved against the current directory).

    Args:
        layout: ``table`` (a product table plus an image folder) or ``folder_tree`` (images in folders named
            after their category path; id = file stem, title = stem with ``_`` and ``-`` turned to spaces,
            no attributes).
        table: Path of the product table (``.csv``, ``.jsonl`` or ``.parquet``); required for ``table``.
        image_root: Folder holding the images (for ``folder_tree``: the root of the category tree).
        id_column: Column holding the product id.
        image_column: Column holding each image's path relative to ``image_root``; ``None`` to derive the path
            from the id with ``image_pattern``.
        image_pattern: Image file name relative to ``image_root`` when ``image_column`` is ``None``;
            ``{id}`` is replaced by the product id.
        title_column: Column holding the product title.
        attribute_columns: Columns used as product attributes (name = column name).
        category_columns: Category level columns, root first (e.g. ``[masterCategory, subCategory]``).
            Give either these or ``category_column``.
        category_column: One column holding the whole category path as text, e.g. ``"A > B > C"``.
        category_separator: Separator of the levels in ``category_column``.
        name: Name of the catalogue (shown in summaries and the manifest).
    """

    layout: Literal["table", "folder_tree"] = "table"
    table: str | None = None
    image_root: str = "images"
    id_column: str = "id"
    image_column: str | None = None
    image_pattern: str = "{id}.jpg"
    title_column: str = "title"
    attribute_columns: list[str] = field(default_factory=list)
    category_columns: list[str] = field(default_factory=list)
    category_column: str | None = None
    category_separator: str = CATEGORY_SEPARATOR
    name: str = "catalogue"

    def __post_init__(self) -> None:
        if self.layout not in ("table", "folder_tree"):
            raise CatalogueError(
                f"unknown catalogue layout {self.layout!r}; expected 'table' or 'folder_tree'"
            )
        self.attribute_columns = list(self.attribute_columns or [])
        self.category_columns = list(self.category_columns or [])
        self.image_root = os.path.abspath(os.path.expanduser(str(self.image_root)))
        if self.layout == "folder_tree":
            return
        if not self.table:
            raise CatalogueError(
                "a 'table' catalogue needs `table`: the path of a .csv, .jsonl or .parquet file"
            )
        self.table = os.path.abspath(os.path.expanduser(str(self.table)))
        if Path(self.table).suffix.lower() not in TABLE_SUFFIXES:
            raise CatalogueError(
                f"table {self.table!r} has an unsupported extension; expected one of {', '.join(TABLE_SUFFIXES)}"
            )
        if bool(self.category_columns) == bool(self.category_column):
            raise CatalogueError(
                "give exactly one of `category_columns` (level columns, root first) or `category_column` "
                "(one column holding a path like 'A > B > C')"
            )
        if self.category_column is not None and not self.category_separator:
            raise CatalogueError("`category_separator` must not be empty")
        if "{id}" not in self.image_pattern and self.image_column is None:
            raise CatalogueError(f"image_pattern {self.image_pattern!r} must contain '{{id}}'")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> CatalogueSchema:
        """Read a schema from a YAML file; ``table`` and ``image_root`` are relative to the file's folder.

        Args:
            path: The YAML file.

        Raises:
            CatalogueError: The file is missing, is not a YAML mapping, or has unknown or invalid keys.
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CatalogueError(f"cannot read catalogue schema {str(path)!r}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise CatalogueError(f"catalogue schema {str(path)!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise CatalogueError(f"catalogue schema {str(path)!r} must be a YAML mapping of schema fields")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CatalogueError(
                f"catalogue schema {str(path)!r} has unknown keys {unknown}; known keys: {sorted(known)}"
            )
        base = path.resolve().parent
        for key in ("table", "image_root"):
            if data.get(key) is not None:
                data[key] = str(base / os.path.expanduser(str(data[key])))
        data.setdefault("image_root", str(base))
        data.setdefault("name", path.stem)
        try:
            return cls(**data)
        except TypeError as exc:
            raise CatalogueError(f"catalogue schema {str(path)!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The schema as plain JSON-able data (paths absolute)."""
        return asdict(self)

    def level_names(self, depth: int) -> list[str]:
        """Names of the category levels: the level columns, or ``level_1 ... level_<depth>``."""
        if self.category_columns:
            return list(self.category_columns)
        return [f"level_{d}" for d in range(1, depth + 1)]


# --------------------------------------------------------------------------------------------------------------
# Value checks shared by all layouts


def _has_undecodable(text: str) -> bool:
    """True when ``text`` holds bytes that were not valid UTF-8 (decoded with ``surrogateescape``) or other lone
    surrogates (e.g. a ``"\\ud800"`` escape in a JSON line), neither of which can be written as UTF-8."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def printable(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN`` and other lone surrogates as ``\\uNNNN`` (UTF-8 safe)."""
    if not _has_undecodable(text):
        return text
    out = []
    for ch in text:
        if ch == _NUL_MARK:
            out.append("\\x00")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _show(text: str) -> str:
    """``repr`` of a value for a message (NUL bytes and bad bytes escaped), shortened when long."""
    # repr() escapes surrogates as \udcNN; show undecodable bytes as \xNN and the NUL stand-in as \x00.
    shown = re.sub(r"\\udc([89a-f][0-9a-f])", r"\\x\1", repr(text)).replace("\\udc00", "\\x00")
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _id_problem(product_id: str) -> Problem | None:
    if not product_id:
        return Problem("bad_id", "empty id")
    bad = [ch for ch in (".", "/", "\\") if ch in product_id]
    if bad:
        return Problem(
            "bad_id",
            f"id {_show(product_id)} contains {' and '.join(repr(c) for c in bad)} "
            "(WebDataset keys may not contain '.', '/' or '\\')",
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in product_id):
        return Problem("bad_id", f"id {_show(product_id)} contains control characters")
    if _has_undecodable(product_id):
        return Problem("bad_id", f"id {_show(product_id)} contains NUL or non-UTF-8 bytes")
    return None


def _scalar_text(value: Any) -> str | None:
    """A table cell as text: ``None``/NaN/blank -> ``None``; integral floats lose their ``.0``."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, float):
        if math.isnan(value):
            return None
        value = str(int(value)) if value.is_integer() else repr(value)
    elif not isinstance(value, str):
        value = str(value)
    value = value.strip()
    return value or None


def check_image(path: str) -> tuple[str | None, str | None, Problem | None]:
    """Check that ``path`` is a readable, fully decodable image.

    The file is checked with PIL's ``verify()`` and then fully decoded with ``load()`` on a fresh handle, so
    truncated and corrupt files are caught here rather than at training time.

    Args:
        path: The image file.

    Returns:
        ``(format, sha256 of the file bytes, None)`` for a good image, else ``(None, None, problem)``.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, None, Problem("missing_image", f"missing image file {path!r}")
    except (
        OSError,
        ValueError,
    ) as exc:  # ValueError: a path holding NUL or bytes the file system cannot name
        message = getattr(exc, "strerror", None) or exc
        return None, None, Problem("missing_image", f"cannot read image file {path!r}: {message}")
    if not data:
        return None, None, Problem("corrupt_image", f"image file {path!r} is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            im.load()
    except (
        Exception
    ) as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBombError)
        return None, None, Problem("corrupt_image", f"corrupt or truncated image {path!r}: {exc}")
    return fmt, hashlib.sha256(data).hexdigest(), None


def jpeg_bytes(path: str, image_format: str | None = None) -> bytes:
    """The bytes stored in a shard for an image: the original bytes of a JPEG, else a re-encoded JPEG.

    Non-JPEG images (PNG, WebP, ...) are converted to RGB (transparency composited onto white, the usual
    catalogue background) and re-encoded as JPEG at quality 95.

    Args:
        path: The image file.
        image_format: Its PIL format when already known (skips opening it to find out).
    """
    data = Path(path).read_bytes()
    if image_format is None:
        with Image.open(io.BytesIO(data)) as im:
            image_format = im.format
    if image_format in JPEG_FORMATS:
        return data
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
        else:
            rgb = im.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=95)
    return out.getvalue()


# --------------------------------------------------------------------------------------------------------------
# Table readers: each yields (row number, cells or None, problem or None); cells map column -> raw value.


def _table_columns(schema: CatalogueSchema) -> tuple[list[str], list[str]]:
    """(required columns, optional columns) named by the schema."""
    required = [schema.id_column, schema.title_column]
    required += schema.category_columns if schema.category_columns else [str(schema.category_column)]
    if schema.image_column:
        required.append(schema.image_column)
    return required, list(schema.attribute_columns)


def _check_header(schema: CatalogueSchema, columns: list[str]) -> None:
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise CatalogueError(f"table {schema.table!r} has repeated column name(s) {repeated}")
    required, optional = _table_columns(schema)
    missing = [c for c in required + optional if c not in columns]
    if missing:
        raise CatalogueError(f"table {schema.table!r} has no column(s) {missing}; its columns are {columns}")


def _read_csv(schema: CatalogueSchema) -> Iterator[tuple[int, dict[str, Any] | None, Problem | None]]:
    path = str(schema.table)
    try:
        # surrogateescape keeps undecodable bytes (reported per row) instead of failing the whole file;
        # utf-8-sig drops a byte-order mark.
        handle = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise CatalogueError(f"cannot read table {path!r}: {exc}") from exc
    with handle:
        yield from _parse_csv(schema, path, (line.replace("\0", _NUL_MARK) for line in handle))


def _parse_csv(
    schema: CatalogueSchema, path: str, lines: Iterator[str]
) -> Iterator[tuple[int, dict[str, Any] | None, Problem | None]]:
    reader = csv.reader(lines)
    try:
        header = next(reader)
    except StopIteration:
        raise CatalogueError(f"table {path!r} is empty (no header row)") from None
    except csv.Error as exc:
        raise CatalogueError(f"table {path!r}: cannot parse the header row: {exc}") from exc
    header = [h.strip() for h in header]
    _check_header(schema, header)
    id_pos = header.index(schema.id_column)
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader resets its state, so reading can go on with the next row
            row += 1
            yield (
                row,
                None,
                Problem("malformed_row", f"unparsable CSV row near line {reader.line_num}: {exc}"),
            )
            continue
        if not cells:  # a blank line is not a record
            continue
        row += 1
        if len(cells) != len(header):
            partial = {schema.id_column: cells[id_pos]} if id_pos < len(cells) else {}
            problem = Problem(
                "malformed_row", f"CSV row has {len(cells)} fields, the header has {len(header)}"
            )
            yield row, partial, problem
            continue
        yield row, dict(zip(header, cells, strict=True)), None


def _read_jsonl(schema: CatalogueSchema) -> Iterator[tuple[int, dict[str, Any] | None, Problem | None]]:
    path = str(schema.table)
    required, _ = _table_columns(schema)
    row = 0
    try:
        handle = open(path, "rb")  # bytes, so one undecodable line cannot stop the read
    except OSError as exc:
        raise CatalogueError(f"cannot read table {path!r}: {exc}") from exc
    with handle:
        for line_no, line in enumerate(handle, start=1):
            if line_no == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            text = line.decode("utf-8", "surrogateescape")
            if not text.strip():
                continue
            row += 1
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield row, None, Problem("malformed_row", f"invalid JSON on line {line_no}: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                kind = type(obj).__name__
                yield row, None, Problem("malformed_row", f"line {line_no} is a JSON {kind}, not an object")
                continue
            missing = [c for c in required if c not in obj]
            if missing:
                partial = {schema.id_column: obj.get(schema.id_column)}
                yield row, partial, Problem("malformed_row", f"missing required column(s) {missing}")
                continue
            yield row, obj, None


def _read_parquet(schema: CatalogueSchema) -> Iterator[tuple[int, dict[str, Any] | None, Problem | None]]:
    import pyarrow.parquet as pq

    path = str(schema.table)
    try:
        pfile = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unreadable files
        raise CatalogueError(f"cannot read Parquet table {path!r}: {exc}") from exc
    columns = list(pfile.schema_arrow.names)
    _check_header(schema, columns)
    required, optional = _table_columns(schema)
    wanted = list(dict.fromkeys(required + optional))
    row = 0
    for batch in pfile.iter_batches(batch_size=4096, columns=wanted):
        for cells in batch.to_pylist():
            row += 1
            yield row, cells, None


# --------------------------------------------------------------------------------------------------------------
# Records


def _record_from_cells(schema: CatalogueSchema, row: int, cells: dict[str, Any]) -> RawRecord:
    problems: list[Problem] = []

    def text(column: str) -> str:
        value = cells.get(column)
        if isinstance(value, (dict, list)):
            problems.append(Problem("malformed_row", f"column {column!r} holds a {type(value).__name__}"))
            return ""
        return _scalar_text(value) or ""

    product_id = text(schema.id_column)
    title = text(schema.title_column)
    attributes: dict[str, str] = {}
    for column in schema.attribute_columns:
        value = text(column)
        if value:
            attributes[column] = value
    if schema.category_columns:
        levels = [text(c) for c in schema.category_columns]
        empty = [c for c, v in zip(schema.category_columns, levels, strict=True) if not v]
        if empty:
            problems.append(Problem("missing_category", f"empty category level(s) {empty}"))
        category = tuple(levels)
    else:
        raw_path = text(str(schema.category_column))
        separator = schema.category_separator.strip() or schema.category_separator
        parts = tuple(p.strip() for p in raw_path.split(separator))
        if not raw_path or not all(parts):
            problems.append(
                Problem("missing_category", f"category {_show(raw_path)} is empty or has an empty level")
            )
        category = parts if raw_path else ()

    # Text that was not valid UTF-8, or that held NUL bytes, is reported with the column it is in.
    named = {schema.id_column: product_id, schema.title_column: title, **attributes}
    if schema.category_columns:
        named.update(zip(schema.category_columns, category, strict=True))
    else:
        named[str(schema.category_column)] = format_path(category)
    for column, value in named.items():
        if _NUL_MARK in value:
            problems.append(Problem("non_utf8", f"column {column!r} contains a NUL byte: {_show(value)}"))
        elif _has_undecodable(value):
            problems.append(Problem("non_utf8", f"column {column!r} is not valid UTF-8: {_show(value)}"))

    id_problem = _id_problem(product_id)
    if id_problem:
        problems.append(id_problem)
    if not title:
        problems.append(Problem("empty_title", f"empty title (column {schema.title_column!r})"))

    image_path: str | None = None
    if schema.image_column:
        rel = text(schema.image_column)
        if rel:
            image_path = os.path.join(schema.image_root, rel)
        else:
            problems.append(Problem("missing_image", f"empty image path (column {schema.image_column!r})"))
    elif product_id and not id_problem:
        image_path = os.path.join(schema.image_root, schema.image_pattern.replace("{id}", product_id))
    return RawRecord(row, product_id, title, attributes, category, image_path, problems)


def _read_table(schema: CatalogueSchema) -> Iterator[RawRecord]:
    suffix = Path(str(schema.table)).suffix.lower()
    reader = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}[suffix]
    for row, cells, problem in reader(schema):
        if problem is not None:
            product_id = _scalar_text((cells or {}).get(schema.id_column)) or ""
            yield RawRecord(row, product_id, problems=[problem])
        else:
            assert cells is not None
            yield _record_from_cells(schema, row, cells)


def folder_tree_title(stem: str) -> str:
    """The title of a folder-tree image: its file stem with ``_`` and ``-`` turned to spaces."""
    return " ".join(re.sub(r"[_-]", " ", stem).split())


def _folder_tree_record(row: int, folder: str, name: str, category: CategoryPath) -> RawRecord:
    stem, suffix = os.path.splitext(name)
    record = RawRecord(row, stem.strip(), folder_tree_title(stem), {}, category, os.path.join(folder, name))
    problems = record.problems
    if suffix.lower() not in IMAGE_SUFFIXES:
        problems.append(
            Problem("unsupported_file", f"file {name!r} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        )
    if not category:
        problems.append(
            Problem("missing_category", f"file {name!r} lies directly in image_root, in no category")
        )
    elif not all(category):
        problems.append(
            Problem("missing_category", f"folder path {_show(format_path(category))} has a blank level")
        )
    undecodable = [v for v in (stem, *category) if _has_undecodable(v)]
    if undecodable:
        problems.append(
            Problem("non_utf8", f"file or folder name is not valid UTF-8: {_show(undecodable[0])}")
        )
    id_problem = _id_problem(record.id)
    if id_problem:
        problems.append(id_problem)
    if not record.title:
        problems.append(Problem("empty_title", f"file {name!r} gives an empty title"))
    return record


def _read_folder_tree(schema: CatalogueSchema) -> Iterator[RawRecord]:
    root = schema.image_root
    if not os.path.isdir(root):
        raise CatalogueError(f"image_root {root!r} is not a folder")
    row = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".")
        )  # walk in a fixed order; skip hidden folders
        rel_folder = os.path.relpath(folder, root)
        category = () if rel_folder == "." else tuple(p.strip() for p in Path(rel_folder).parts)
        for name in sorted(
            f for f in files if not f.startswith(".")
        ):  # hidden files (.DS_Store) are not rows
            row += 1
            yield _folder_tree_record(row, folder, name, category)


def read_catalogue(schema: CatalogueSchema, check_images: bool = True) -> Iterator[RawRecord]:
    """Yield one :class:`RawRecord` per input row, with its problems attached instead of raised.

    Problems found: malformed rows (wrong CSV field count, invalid JSON line, missing required column),
    text that is not valid UTF-8, bad ids (empty, or containing ``.``, ``/``, ``\\`` or control characters),
    duplicate ids (the second and later occurrences; the first occurrence keeps the id even if it is bad
    otherwise), empty titles, empty or missing category levels, missing image files and corrupt or truncated
    images. Missing attribute values are not problems: they are left out of ``attributes``.

    Args:
        schema: The catalogue to read.
        check_images: Fully decode each image (slow-ish, ~0.5 ms per small JPEG); when ``False`` only its
            existence is checked.

    Raises:
        CatalogueError: The table or folder itself cannot be read, or lacks a column the schema names.
    """
    records = _read_folder_tree(schema) if schema.layout == "folder_tree" else _read_table(schema)
    first_row: dict[str, int] = {}
    for record in records:
        if record.id:
            if record.id in first_row:
                record.problems.append(
                    Problem(
                        "duplicate_id",
                        f"duplicate id {_show(record.id)} (first seen in row {first_row[record.id]})",
                    )
                )
            else:
                first_row[record.id] = record.row
        if record.image_path is not None and not any(p.kind == "unsupported_file" for p in record.problems):
            if check_images:
                fmt, digest, problem = check_image(record.image_path)
                if problem is not None:
                    record.problems.append(problem)
                record.image_format, record.image_sha256 = fmt, digest
            elif not os.path.isfile(record.image_path):
                record.problems.append(Problem("missing_image", f"missing image file {record.image_path!r}"))
        yield record
