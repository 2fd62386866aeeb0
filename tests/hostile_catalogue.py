"""Hostile catalogues for tests: every kind of input a stranger's catalogue can hold that must not reach outside the
catalogue, hang the reader or exhaust memory, each with the skip reason clipita must give it.

A catalogue is built in a case folder::

    case/cat/            the catalogue: schema YAML, product table, images/ (the image root)
    case/outside/        files a row may point at but must not read: secret.jpg, secret.txt

:func:`build` writes one from a list of row kinds (the keys of :data:`TABLE_KINDS` / :data:`TREE_KINDS`) and returns
what each row must become: sharded (``None``) or skipped with a given problem kind.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import socket
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

MAX_IMAGE_BYTES = (
    100_000  # the generated schemas' cap: a good image is < 1 KB, an "oversize" one 120 KB, bombs less
)
HUGE = 200_000  # characters of a huge field (more than the 131,072 any cell may hold)
LEAVES = [("Fruit", "Apple"), ("Fruit", "Pear"), ("Veg", "Leek"), ("Veg", "Kale"), ("Nut", "Pecan")]

# row kind -> the problem kind it is skipped with (None: sharded); "outside" kinds read fine with allow_outside_root
TABLE_KINDS: dict[str, str | None] = {
    "good": None,
    "dotdot": "outside_root",  # ../../outside/secret.jpg
    "absolute": "outside_root",  # /.../outside/secret.jpg
    "symlink_out": "outside_root",  # images/x.jpg -> outside/secret.jpg
    "symlink_in": None,  # images/x.jpg -> images/.store/x.jpg
    "device": "outside_root",  # /dev/zero (not_a_file with allow_outside_root)
    "device_link": "outside_root",  # images/x.jpg -> /dev/zero
    "fifo": "not_a_file",
    "socket": "not_a_file",
    "directory": "not_a_file",
    "oversize": "image_too_large",  # more bytes than the schema's max_image_bytes
    "bomb": "image_too_large",  # a 12 KB PNG of 10,000 x 10,000 px: over max_image_pixels
    "bomb_pil": "image_too_large",  # 20,000 x 20,000 px: over PIL's own decompression-bomb limit too
    "corrupt": "corrupt_image",
    "missing": "missing_image",
    "empty_image_path": "missing_image",
    "control_id": "control_character",
    "nul_id": "control_character",
    "control_category": "control_character",
    "control_image_path": "control_character",
    "empty_id": "bad_id",
    "empty_category": "missing_category",
    "duplicate_id": "duplicate_id",
    "huge_id": "malformed_row",
}
TEXT_KINDS: dict[str, str | None] = {  # only for a table with text
    "control_title": None,  # replaced by a space
    "nul_title": None,
    "control_attribute": None,
    "empty_title": None,
    "huge_title": "malformed_row",
}
TREE_KINDS: dict[str, str | None] = {
    "good": None,
    "symlink_out": "outside_root",
    "symlink_in": None,
    "device_link": "outside_root",
    "fifo": "not_a_file",
    "socket": "not_a_file",
    "oversize": "image_too_large",
    "bomb": "image_too_large",
    "bomb_pil": "image_too_large",
    "corrupt": "corrupt_image",
    "control_folder": "control_character",
    "control_file": "control_character",
    "at_root": "missing_category",
    "sidecar_fifo": "not_a_file",  # only read with sidecar_text
    "sidecar_out": "outside_root",
    "sidecar_control": None,
}
OUTSIDE_KINDS = {
    "dotdot",
    "absolute",
    "symlink_out",
    "sidecar_out",
}  # regular files outside: read when allowed
DEVICE_KINDS = {"device", "device_link"}  # /dev/zero: never a regular file


@dataclass
class Built:
    """A built catalogue: its schema YAML and what each row must become (row number -> problem kind or None)."""

    case: Path
    schema: Path
    expected: dict[int, str | None] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.case / "cat"

    @property
    def outside(self) -> Path:
        return self.case / "outside"


def jpeg(colour: tuple[int, int, int], seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 12, (size, size, 3)), 0, 255)
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="JPEG", quality=80)
    return out.getvalue()


@functools.cache
def noise_png(size: int = 200) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@functools.cache
def bomb_png(side: int) -> bytes:
    """A valid 1-bit black PNG of ``side`` x ``side`` pixels: a few KB on disk, side^2 bytes once decoded to L/RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    finally:
        sock.close()  # the socket file stays


def _outside(case: Path) -> Path:
    outside = case / "outside"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.jpg").write_bytes(jpeg((9, 9, 9), 99))
    (outside / "secret.txt").write_text("a secret title\n")
    return outside


def _image_file(path: Path, kind: str, leaf: int, i: int, outside: Path) -> None:
    """Write (or link, or make) the file a row of ``kind`` names at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = ((leaf * 67) % 256, (leaf * 151 + 40) % 256, (leaf * 97 + 90) % 256)
    if kind == "symlink_out":
        path.symlink_to(outside / "secret.jpg")
    elif kind == "symlink_in":
        real = path.parent / ".store" / path.name
        real.parent.mkdir(exist_ok=True)
        real.write_bytes(jpeg(colour, i))
        path.symlink_to(real)
    elif kind == "device_link":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        _socket(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "oversize":
        path.write_bytes(noise_png())
    elif kind in ("bomb", "bomb_pil"):
        path.write_bytes(bomb_png(10_000 if kind == "bomb" else 20_000))
    elif kind == "corrupt":
        path.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    elif kind != "missing":
        path.write_bytes(jpeg(colour, i))


def _table_row(
    kind: str, i: int, leaf: int, images: Path, outside: Path, ids: list[str], text: bool
) -> dict[str, str]:
    top, name = LEAVES[leaf]
    product_id, image = f"p{i}", f"img{i}.jpg"
    title, colour = f"{name.lower()} number {i}", "green"
    if kind in ("dotdot", "absolute", "device"):
        image = {
            "dotdot": "../../outside/secret.jpg",
            "absolute": str(outside / "secret.jpg"),
            "device": "/dev/zero",
        }[kind]
    else:
        _image_file(images / image, kind, leaf, i, outside)
    if kind == "empty_image_path":
        image = "  "
    elif kind == "control_image_path":
        image = "img\x1b" + str(i) + ".jpg"
    elif kind == "control_id":
        product_id = f"p\x07{i}"
    elif kind == "nul_id":
        product_id = f"p\0{i}"
    elif kind == "empty_id":
        product_id = " "
    elif kind == "huge_id":
        product_id = "p" * HUGE
    elif kind == "duplicate_id" and ids:
        product_id = ids[0]
    elif kind == "control_category":
        name = name + "\x1b[31m"
    elif kind == "empty_category":
        name = ""
    elif kind == "control_title":
        title = "red\x1b[0m shirt\x85 \x0c"
    elif kind == "nul_title":
        title = "blue\0jeans"
    elif kind == "control_attribute":
        colour = "gr\x7fey"
    elif kind == "empty_title":
        title = ""
    elif kind == "huge_title":
        title = "x" * HUGE
    if kind in ("good", "symlink_in"):
        ids.append(product_id)
    row = {"id": product_id, "image": image, "top": top, "leaf": name}
    if text:
        row.update(title=title, colour=colour)
    return row


def _write_table(path: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        table = pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in columns})
        pq.write_table(table, path)


def build_table(
    case: Path, kinds: list[tuple[str, int]], fmt: str = "csv", text: bool = True, allow_outside: bool = False
) -> Built:
    """A table catalogue (``text``: with title and attribute columns, else images only) with one row per
    ``(kind, leaf)``, in the table format ``fmt`` (csv, jsonl, parquet)."""
    outside = _outside(case)
    root = case / "cat"
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, ids = [], []
    built = Built(case, root / "catalogue.yaml")
    for i, (kind, leaf) in enumerate(kinds):
        rows.append(_table_row(kind, i, leaf, images, outside, ids, text))
        built.expected[i + 1] = expected_kind(kind, allow_outside, TABLE_KINDS | TEXT_KINDS)
        if kind == "duplicate_id" and rows[-1]["id"] == f"p{i}":  # nothing earlier to repeat: an ordinary row
            built.expected[i + 1] = None
    columns = ["id", "image", "top", "leaf"] + (["title", "colour"] if text else [])
    table = root / f"products.{fmt}"
    _write_table(table, rows, columns)
    schema = {
        "name": "hostile",
        "table": table.name,
        "image_root": "images",
        "image_column": "image",
        "category_columns": ["top", "leaf"],
        "title_column": "title" if text else None,
        "attribute_columns": ["colour"] if text else [],
        "allow_outside_root": allow_outside,
        "max_image_bytes": MAX_IMAGE_BYTES,
    }
    built.schema.write_text(yaml.safe_dump(schema))
    return built


def build_tree(
    case: Path, kinds: list[tuple[str, int]], sidecar_text: bool = False, allow_outside: bool = False
) -> Built:
    """A folder-tree catalogue with one image (or image-named special file) per ``(kind, leaf)``. Rows are numbered
    in the reader's sorted walk order."""
    outside = _outside(case)
    root = case / "cat"
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    by_path: dict[str, str | None] = {}
    for i, (kind, leaf) in enumerate(kinds):
        top, name = LEAVES[leaf]
        if kind == "control_folder":
            name = name + "\x1b"
        folder = images if kind == "at_root" else images / top / name
        file = f"img\x07{i}.jpg" if kind == "control_file" else f"img{i}.jpg"
        image_kind = kind if kind in TABLE_KINDS else "good"
        _image_file(folder / file, image_kind, leaf, i, outside)
        sidecar = folder / f"{Path(file).stem}.txt"
        if kind == "sidecar_fifo":
            os.mkfifo(sidecar)
        elif kind == "sidecar_out":
            sidecar.symlink_to(outside / "secret.txt")
        elif kind == "sidecar_control":
            sidecar.write_text("a title \x1b with a control\nand \0 a description\n")
        expected = expected_kind(kind, allow_outside, TREE_KINDS)
        if kind.startswith("sidecar") and not sidecar_text:
            expected = None
        by_path[str((folder / file).relative_to(images))] = expected
    built = Built(case, root / "catalogue.yaml")
    walked = []
    for folder, dirs, files in os.walk(images):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        walked += [
            os.path.relpath(os.path.join(folder, f), images) for f in sorted(files) if not f.startswith(".")
        ]
    walked = [p for p in walked if p.endswith(".jpg")]
    built.expected = {row: by_path[path] for row, path in enumerate(walked, start=1)}
    schema = {
        "name": "hostile",
        "layout": "folder_tree",
        "image_root": "images",
        "sidecar_text": sidecar_text,
        "allow_outside_root": allow_outside,
        "max_image_bytes": MAX_IMAGE_BYTES,
    }
    built.schema.write_text(yaml.safe_dump(schema))
    return built


def expected_kind(kind: str, allow_outside: bool, kinds: dict[str, str | None]) -> str | None:
    """The problem kind a row of ``kind`` is skipped with (None: sharded), given ``allow_outside_root``."""
    if allow_outside and kind in OUTSIDE_KINDS:
        return None
    if allow_outside and kind in DEVICE_KINDS:
        return "not_a_file"
    return kinds[kind]
