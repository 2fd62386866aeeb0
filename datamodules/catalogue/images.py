"""A catalogue's image files: where they may lie, which files may be read, how big they may be, and what a shard
stores.

A catalogue names its images (a path column, an id pattern, a folder tree's files), and those names are text that
anyone may have written. Before a byte of an image is read, :func:`locate_image` checks, in this order:

1. **Location.** The path, symlinks resolved, lies inside the image root (``..``, an absolute path and a symlink
   pointing out are refused as ``outside_root``), unless the schema sets ``allow_outside_root: true``.
2. **Kind.** ``os.stat`` says it is a regular file. A FIFO would block the open forever, ``/dev/zero`` would never
   end, a directory or socket cannot be an image: each is refused as ``not_a_file`` without being opened.
3. **Size.** It holds at most ``max_bytes`` (``image_too_large``).

:func:`read_image_file` then opens the resolved path without following a last symlink and without blocking, checks
the open file again (it may have been swapped since the ``stat``), and reads at most ``max_bytes + 1`` bytes (a file
growing meanwhile is refused, not read to the end). Decoding (:func:`check_image`, :func:`jpeg_bytes`) checks the
header's width x height against ``max_pixels`` before any pixel is decoded; PIL's own decompression-bomb error is
the same refusal, never a traceback.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import warnings
from dataclasses import dataclass

from PIL import Image

from datamodules.catalogue.values import CatalogueError, Problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
JPEG_FORMATS = ("JPEG", "MPO")  # MPO is a JPEG with extra frames; its bytes are JPEG bytes.
DEFAULT_MAX_IMAGE_BYTES = 50_000_000
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the stat still does not block the open
    | getattr(os, "O_NOFOLLOW", 0)  # nor can a symlink swapped in for the resolved file lead elsewhere
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_IN_MEMORY_FILE = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class ImageLimits:
    """What may be read as an image (see the module docstring; the schema's ``image_limits()`` builds one).

    Args:
        root: The image root with symlinks resolved; images must lie inside it. ``None``: anywhere.
        max_bytes: Largest image file read, in bytes.
        max_pixels: Largest image decoded, in pixels (width x height from the file's header).
    """

    root: str | None = None
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # another drive (Windows)
        return False


def locate_image(path: str, limits: ImageLimits, what: str = "image") -> tuple[str, Problem | None]:
    """``(resolved path, None)`` when ``path`` may be read, else ``(path, problem)``; nothing is opened.

    ``what`` names the file in messages (``image``; ``sidecar text`` for a folder tree's text files)."""
    try:
        real = os.path.realpath(path)
        if limits.root is not None and not _inside(real, limits.root):
            via = "" if real == os.path.abspath(path) else f" (it resolves to {real!r})"
            message = f"{what} path {path!r} leaves the image root {limits.root!r}{via}"
            return path, Problem("outside_root", message + "; set `allow_outside_root: true` to allow it")
        info = os.stat(real)
    except FileNotFoundError:
        return path, Problem("missing_image", f"missing {what} file {path!r}")
    except (
        OSError,
        ValueError,
    ) as exc:  # ValueError: a path holding NUL or bytes the file system cannot name
        return path, _unreadable(path, exc, what)
    if not stat.S_ISREG(info.st_mode):
        return path, _not_a_file(path, info.st_mode, what)
    if info.st_size > limits.max_bytes:
        return path, _too_many_bytes(path, info.st_size, limits, what)
    return real, None


def _unreadable(path: str, exc: Exception, what: str) -> Problem:
    message = getattr(exc, "strerror", None) or exc
    return Problem("missing_image", f"cannot read {what} file {path!r}: {message}")


def _not_a_file(path: str, mode: int, what: str) -> Problem:
    return Problem(
        "not_a_file", f"{what} path {path!r} is a {_file_kind(mode)}, not a regular file: not read"
    )


def _too_many_bytes(path: str, size: int | None, limits: ImageLimits, what: str) -> Problem:
    held = f"{size:,} bytes" if size is not None else "more bytes"
    cap = "max_image_bytes" if what == "image" else "the limit"
    return Problem(
        "image_too_large", f"{what} file {path!r} holds {held}, more than {cap} ({limits.max_bytes:,})"
    )


def read_image_file(
    path: str, limits: ImageLimits, what: str = "image"
) -> tuple[bytes | None, Problem | None]:
    """The bytes of file ``path`` when :func:`locate_image` allows it and it stays within ``max_bytes``."""
    real, problem = locate_image(path, limits, what)
    if problem is not None:
        return None, problem
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as exc:
        return None, _unreadable(path, exc, what)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):  # swapped since the stat
            return None, _not_a_file(path, info.st_mode, what)
        try:
            data = handle.read(limits.max_bytes + 1)
        except OSError as exc:
            return None, _unreadable(path, exc, what)
    if len(data) > limits.max_bytes:  # it grew since the stat
        return None, _too_many_bytes(path, None, limits, what)
    return data, None


def _open_within(data: bytes, path: str, limits: ImageLimits) -> Image.Image:
    """``Image.open`` on ``data``, refusing (``ImageTooLarge``) a header over ``max_pixels`` before decoding."""
    try:
        with warnings.catch_warnings():
            # the pixel cap below is the check; PIL's warning threshold would only add noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image {path!r} is too large to decode: {exc}") from None
    width, height = im.size
    if width * height > limits.max_pixels:
        im.close()
        raise ImageTooLarge(
            f"image {path!r} is {width:,} x {height:,} pixels, more than max_image_pixels ({limits.max_pixels:,})"
        )
    return im


class ImageTooLarge(Exception):
    """An image's header says it decodes to more pixels than allowed (raised before any pixel is decoded)."""


def check_image(
    path: str, limits: ImageLimits | None = None
) -> tuple[str | None, str | None, Problem | None]:
    """Check that ``path`` may be read (:func:`locate_image`) and is a fully decodable image within the limits.

    The file is checked with PIL's ``verify()`` and then fully decoded with ``load()`` on a fresh handle, so
    truncated and corrupt files are caught here rather than at training time.

    Args:
        path: The image file.
        limits: Where it may lie and how big it may be (default: anywhere, the default caps).

    Returns:
        ``(format, sha256 of the file bytes, None)`` for a good image, else ``(None, None, problem)``.
    """
    limits = limits or ImageLimits()
    data, problem = read_image_file(path, limits)
    if problem is not None:
        return None, None, problem
    assert data is not None
    if not data:
        return None, None, Problem("corrupt_image", f"image file {path!r} is empty")
    try:
        with _open_within(data, path, limits) as im:
            im.verify()
        with _open_within(data, path, limits) as im:
            fmt = im.format
            im.load()
    except ImageTooLarge as exc:
        return None, None, Problem("image_too_large", str(exc))
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, struct.error)
        detail = _IN_MEMORY_FILE.sub(
            "the file", str(exc)
        )  # no memory address: the manifest stays reproducible
        return None, None, Problem("corrupt_image", f"corrupt or truncated image {path!r}: {detail}")
    return fmt, hashlib.sha256(data).hexdigest(), None


def jpeg_bytes(path: str, image_format: str | None = None, limits: ImageLimits | None = None) -> bytes:
    """The bytes stored in a shard for an image: the original bytes of a JPEG, else a re-encoded JPEG.

    The file is read under the same checks as :func:`check_image`. Non-JPEG images (PNG, WebP, ...) are converted
    to RGB (transparency composited onto white, the usual catalogue background) and re-encoded as JPEG at
    quality 95.

    Args:
        path: The image file.
        image_format: Its PIL format when already known (skips opening it to find out).
        limits: Where it may lie and how big it may be (default: anywhere, the default caps).

    Raises:
        CatalogueError: The file may not be read (it moved outside the root, became a special file or grew past
            a cap since it was checked).
    """
    limits = limits or ImageLimits()
    data, problem = read_image_file(path, limits)
    if problem is not None:
        raise CatalogueError(problem.message)
    assert data is not None
    if image_format is None:
        with _open_within(data, path, limits) as im:
            image_format = im.format
    if image_format in JPEG_FORMATS:
        return data
    with _open_within(data, path, limits) as im:
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
