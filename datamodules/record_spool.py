"""A catalogue's good records on disk while they are split and written, so sharding holds no record in memory.

``clipita shard`` reads and checks every row once, then splits the good ones by category and writes them in a
seeded random order. Keeping every :class:`~datamodules.catalogue.RawRecord` in a list for that costs about 1 KB
of Python objects per product (1.8 GB of peak memory at 1M products). Instead each good record is appended to a
spool file (one JSON line) and stands in memory as its line number, with 13 bytes in flat arrays: the line's byte
offset, its category (an index into the spool's category paths) and its own split folder. The split rules
(:mod:`datamodules.splits`) take the line numbers with :meth:`RecordSpool.category` and :meth:`RecordSpool.split`
as accessors and draw exactly the split they draw on full records; the writer then reads each record back by line
number (one seek).

Example:
    >>> import tempfile
    >>> from datamodules.catalogue import RawRecord
    >>> with tempfile.TemporaryDirectory() as folder, RecordSpool(folder) as spool:
    ...     line = spool.append(RawRecord(1, "p1", "Red shoe", {"colour": "red"}, ("Footwear", "Shoes")))
    ...     (line, spool.category(line), spool.read(line).title)
    (0, ('Footwear', 'Shoes'), 'Red shoe')
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path

from clipita_core.paths import CategoryPath
from datamodules.catalogue import RawRecord

SPOOL_PREFIX = ".clipita-spool-"
_SPLIT_CODES = (None, "train", "val", "test")


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
        self._categories = array("i")  # index into self._paths: 4 bytes per record
        self._splits = array("b")  # index into _SPLIT_CODES: 1 byte per record
        self._paths: list[CategoryPath] = []
        self._path_index: dict[CategoryPath, int] = {}
        self._end = 0
        self._at_end = True  # no seek between appends: a seek would flush the write buffer every time

    def __len__(self) -> int:
        return len(self._offsets)

    def append(self, record: RawRecord) -> int:
        """Write ``record`` to the spool; returns its line number (0, 1, ... in the order appended)."""
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
        path = tuple(record.category)
        if path not in self._path_index:
            self._path_index[path] = len(self._paths)
            self._paths.append(path)
        self._categories.append(self._path_index[path])
        self._splits.append(_SPLIT_CODES.index(record.split))
        return len(self._offsets) - 1

    def category(self, line: int) -> CategoryPath:
        """The category path of the record on ``line`` (one tuple per category, shared)."""
        return self._paths[self._categories[line]]

    def split(self, line: int) -> str | None:
        """The record's own split folder (``split_folders`` catalogues), else ``None``."""
        return _SPLIT_CODES[self._splits[line]]

    def read(self, line: int) -> RawRecord:
        """The full record on ``line``."""
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
