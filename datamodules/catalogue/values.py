"""Records, problems and the value checks every catalogue layout shares (ids, text cells, images)."""

from __future__ import annotations

import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from clipita_core.paths import CategoryPath

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
JPEG_FORMATS = ("JPEG", "MPO")  # MPO is a JPEG with extra frames; its bytes are JPEG bytes.

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
]

# Stand-in for a NUL byte inside a CSV (the csv module refuses NULs). Never produced by UTF-8 decoding with
# ``surrogateescape`` (which maps only bytes 0x80-0xFF to U+DC80-U+DCFF), so it cannot collide with real text.
NUL_MARK = "\udc00"


class CatalogueError(ValueError):
    """The catalogue cannot be read as described by its schema, or a record is invalid where that is fatal."""


class CatalogueFileNotFoundError(CatalogueError, FileNotFoundError):
    """A file or folder the schema names does not exist (both a ``CatalogueError`` and a ``FileNotFoundError``)."""


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


def id_problem(product_id: str) -> Problem | None:
    """Ids are any non-empty text (dots, slashes, spaces and any script are fine: the shard key encodes them)
    except control characters and bytes that are not UTF-8, which no output could show on one line."""
    if not product_id:
        return Problem("bad_id", "empty id")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in product_id):
        return Problem("bad_id", f"id {show(product_id)} contains control characters")
    if has_undecodable(product_id):
        return Problem("bad_id", f"id {show(product_id)} contains NUL or non-UTF-8 bytes")
    return None


def scalar_text(value: Any) -> str | None:
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


_IN_MEMORY_FILE = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


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
        detail = _IN_MEMORY_FILE.sub(
            "the file", str(exc)
        )  # no memory address: the manifest stays reproducible
        return None, None, Problem("corrupt_image", f"corrupt or truncated image {path!r}: {detail}")
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
