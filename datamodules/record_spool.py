"""A catalogue's good records on disk while they are split and written, so sharding holds no record in memory.

``clipita shard`` reads and checks every row once, then splits the good ones by category and writes them in a
seeded random order. Keeping every :class:`~datamodules.catalogue.RawRecord` in a list for that costs about 1 KB
of Python objects per product (1.8 GB of peak memory at 1M products). Instead each good record is appended to a
spool file (one JSON line), and only a :class:`SpooledRecord` stays in memory: its line's number, its category
path (shared with every record of that category) and its own split folder. The split rules
(:mod:`datamodules.splits`) only look at ``category`` and ``split``, so they run on these unchanged and draw
exactly the same split as on full records; the writer then reads each record back by line number (one seek).

Example:
    >>> import tempfile
    >>> from datamodules.catalogue import RawRecord
    >>> with tempfile.TemporaryDirectory() as folder, RecordSpool(folder) as spool:
    ...     handle = spool.append(RawRecord(1, "p1", "Red shoe", {"colour": "red"}, ("Footwear", "Shoes")))
    ...     (handle.category, spool.read(handle).title)
    (('Footwear', 'Shoes'), 'Red shoe')
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path

from datamodules.catalogue import RawRecord
from datamodules.category_tree import CategoryPath

SPOOL_PREFIX = ".clipita-spool-"


class SpooledRecord:
    """What the split needs of a spooled record: its line in the spool, its category path and its own split."""

    __slots__ = ("category", "line", "split")

    def __init__(self, line: int, category: CategoryPath, split: str | None) -> None:
        self.line = line
        self.category = category
        self.split = split


class RecordSpool:
    """Good records appended to a temporary file in ``folder`` and read back by handle; removed on ``close``.

    Args:
        folder: Where the spool file goes (the shard output folder: same disk, removed with the run).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        descriptor, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=".jsonl", dir=folder)
        self.path = Path(name)
        self._file = os.fdopen(descriptor, "w+b")
        self._offsets = array("q")  # byte offset of each line: 8 bytes per record
        self._paths: dict[CategoryPath, CategoryPath] = {}  # one tuple per category, shared by its records
        self._end = 0
        self._at_end = True  # no seek between appends: a seek would flush the write buffer every time

    def __len__(self) -> int:
        return len(self._offsets)

    def append(self, record: RawRecord) -> SpooledRecord:
        """Write ``record`` to the spool; returns its in-memory handle."""
        fields = [
            record.row,
            record.id,
            record.title,
            record.attributes,
            record.category,
            record.image_path,
            record.image_format,
            record.image_sha256,
            record.description,
            record.split,
        ]
        line = json.dumps(fields, ensure_ascii=True).encode("ascii") + b"\n"
        if not self._at_end:
            self._file.seek(self._end)
            self._at_end = True
        self._file.write(line)
        self._offsets.append(self._end)
        self._end += len(line)
        category = self._paths.setdefault(tuple(record.category), tuple(record.category))
        return SpooledRecord(len(self._offsets) - 1, category, record.split)

    def read(self, handle: SpooledRecord | int) -> RawRecord:
        """The full record behind ``handle`` (or a line number)."""
        line = handle.line if isinstance(handle, SpooledRecord) else handle
        self._at_end = False
        self._file.seek(self._offsets[line])
        return _decode(self._file.readline())

    def __iter__(self) -> Iterator[RawRecord]:
        """Every record in the order appended (one sequential read)."""
        self._file.flush()
        with open(self.path, "rb") as handle:
            for raw in handle:
                yield _decode(raw)

    def close(self) -> None:
        """Close and delete the spool file."""
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> RecordSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode(raw: bytes) -> RawRecord:
    row, product_id, title, attributes, category, image_path, image_format, sha256, description, split = (
        json.loads(raw)
    )
    return RawRecord(
        row,
        product_id,
        title,
        attributes,
        tuple(category),
        image_path,
        [],
        image_format=image_format,
        image_sha256=sha256,
        description=description,
        split=split,
    )
