"""Records, problems and the value checks every catalogue layout shares (ids, category names, text cells).

**Control characters** (Unicode category ``Cc``: C0, DEL, C1; NUL included) follow one rule whatever the table
format (CSV, JSONL, Parquet) or layout (a folder tree's file and folder names, its sidecar texts):

- in a **key** (the id, a category level, an image path) a control character skips the row as
  ``control_character``, naming the field (:func:`key_problem`): a key is shown on one line and matched exactly,
  and a leaf named ``"Shoes\x1b[31m"`` is no category;
- in **free text** (title, attributes, description) tab and line breaks (LF, CR) are kept and every other control
  character becomes a space (:func:`clean_text`); the reader counts the replacements per field (the manifest's
  ``reader.control_characters_replaced``).

Surrounding blanks are stripped from every cell (:func:`scalar_text`); a control character other than tab, newline
and carriage return is not a blank, so it is never stripped out of sight. Bytes that are not UTF-8 (and lone
surrogates) skip the row as ``non_utf8``. A cell longer than :data:`MAX_FIELD_CHARS` skips the row as
``malformed_row`` in every format (the CSV reader's own limit).
"""

from __future__ import annotations

import math
import os
import re
import stat
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from clipita_core.paths import CategoryPath

# Reasons a record is left out. Every problem message names the offending value.
ProblemKind = Literal[
    "malformed_row",
    "non_utf8",
    "bad_id",
    "duplicate_id",
    "missing_category",
    "missing_image",
    "corrupt_image",
    "outside_split",
    "outside_root",
    "not_a_file",
    "image_too_large",
    "control_character",
]

# Stand-in for a NUL byte inside a CSV (the csv module refuses NULs). Never produced by UTF-8 decoding with
# ``surrogateescape`` (which maps only bytes 0x80-0xFF to U+DC80-U+DCFF), so it cannot collide with real text.
NUL_MARK = "\udc00"
MAX_FIELD_CHARS = (
    131_072  # Python's csv module refuses longer fields; JSONL and Parquet cells get the same cap
)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
_CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # all but tab, LF and CR
# Unicode white space that str.strip() would remove, less the control characters other than tab, LF and CR
_BLANKS = "".join(
    ch
    for ch in map(chr, range(0x3001))
    if ch.isspace() and (unicodedata.category(ch) != "Cc" or ch in "\t\n\r")
)


class CatalogueError(ValueError):
    """The catalogue cannot be read as described by its schema, or a record is invalid where that is fatal."""


class CatalogueFileNotFoundError(CatalogueError, FileNotFoundError):
    """A file or folder the schema names does not exist (both a ``CatalogueError`` and a ``FileNotFoundError``)."""


def check_regular_file(path: str, what: str) -> None:
    """Fail unless ``path`` is a regular file, checked before it is opened (opening a FIFO blocks until someone
    writes to it; ``/dev/zero`` never ends).

    Raises:
        CatalogueFileNotFoundError: ``path`` does not exist.
        CatalogueError: It cannot be looked at, or is a folder, FIFO, socket or device.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CatalogueFileNotFoundError(f"{what} {path!r} does not exist") from None
    except (OSError, ValueError) as exc:
        raise CatalogueError(
            f"cannot read {what} {path!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise CatalogueError(f"{what} {path!r} is not a regular file (a folder, FIFO, socket or device)")


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
            are not counted; for JSONL, blank lines are not counted) or the n-th image of a folder tree in
            sorted walk order.
        id: Product id (surrounding blanks stripped; ``""`` when it could not be read). Any non-empty text
            without control characters; folder trees use the image's path relative to ``image_root``.
        title: Product title (surrounding blanks stripped); ``""`` when the product has none (not a problem).
        attributes: Attribute name -> value; missing or empty values are absent.
        category: Category path, root first.
        image_path: Absolute path of the product image (``None`` when it could not be determined).
        problems: Everything wrong with the record; empty for a good record.
        image_format: PIL format of the image (e.g. ``"JPEG"``) once the image was checked.
        image_sha256: sha256 of the image file's bytes as checked, to detect a file changing while sharding.
        description: Free text about the product; ``""`` when none.
        split: The catalogue's own split (``train``/``val``/``test``) for a folder tree read with
            ``split_folders``; ``None`` otherwise.
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
    description: str = ""
    split: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        """All problems as one human-readable string (``""`` for a good record)."""
        return "; ".join(p.message for p in self.problems)

    def describe(self) -> str:
        """``row 12 (id '1563'): missing image file '/data/images/1563.jpg'`` — for error messages."""
        return f"row {self.row} (id {show(self.id)}): {self.reason or 'ok'}"


def has_undecodable(text: str) -> bool:
    """True when ``text`` holds bytes that were not valid UTF-8 (decoded with ``surrogateescape``) or other lone
    surrogates (e.g. a ``"\\ud800"`` escape in a JSON line), neither of which can be written as UTF-8."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def printable(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN`` and other lone surrogates as ``\\uNNNN`` (UTF-8 safe)."""
    if not has_undecodable(text):
        return text
    out = []
    for ch in text:
        if ch == NUL_MARK:
            out.append("\\x00")
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif "\ud800" <= ch <= "\udfff":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def show(text: str) -> str:
    """``repr`` of a value for a message (NUL bytes and bad bytes escaped), shortened when long."""
    # repr() escapes surrogates as \udcNN; show undecodable bytes as \xNN and the NUL stand-in as \x00.
    shown = re.sub(r"\\udc([89a-f][0-9a-f])", r"\\x\1", repr(text)).replace("\\udc00", "\\x00")
    return shown if len(shown) <= 80 else shown[:77] + "..."


def key_problem(field: str, value: str) -> Problem | None:
    """``control_character`` when a key (id, category level, image path) holds one, naming the field and value."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    message = f"{field} {show(value)} contains the control character {found.group()!r}"
    return Problem("control_character", message)


def clean_text(value: str) -> tuple[str, int]:
    """Free text with every control character but tab, LF and CR replaced by a space; and how many were."""
    return _CONTROL_IN_TEXT.subn(" ", value)


def id_problem(product_id: str) -> Problem | None:
    """Ids are any non-empty text (dots, slashes, spaces and any script are fine: the shard key encodes them)
    except control characters (:func:`key_problem`) and bytes that are not UTF-8, which no output could show on
    one line."""
    if not product_id:
        return Problem("bad_id", "empty id")
    control = key_problem("id", product_id)
    if control is not None:
        return control
    if has_undecodable(product_id):
        return Problem("bad_id", f"id {show(product_id)} contains non-UTF-8 bytes")
    return None


def scalar_text(value: Any) -> str | None:
    """A table cell as text: ``None``/NaN/blank -> ``None``; integral floats lose their ``.0``; surrounding blanks
    stripped (white space, tab, newline, carriage return; never another control character)."""
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
    value = value.strip(_BLANKS)
    return value or None
