"""Output shards: the files a sharded job writes for one input shard (a feature shard of ``clipita encode``, an
index shard of ``clipita index``), written so that a killed writer never leaves a half shard that looks done.

Every file is written under a temporary name (``<name>.tmp<pid>``) and renamed into place; the shard's ``ids`` file
is written last, and a shard is done when its ids file and every other file it should hold are there. Resuming a
job is therefore skipping the input shards whose output is done (:mod:`datamodules.shard_jobs`). Numpy only, so
readers of the files (``clipita search``) load nothing heavier.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

IDS = (
    "ids"  # the product ids of an output shard, row for row; written last: its presence marks the shard done
)


def temporary(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (unique per process)."""
    return path.with_name(path.name + f".tmp{os.getpid()}")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` a temporary file, then rename it to ``path`` (readers see the old file or the whole new one)."""
    tmp = temporary(path)
    write(tmp)
    os.replace(tmp, path)


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` (C order) under a temporary name, renamed."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))

    atomic_write(path, write)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_output_shard(
    path_of: Callable[[str], Path],
    ids: Sequence[str],
    arrays: Mapping[str, np.ndarray],
    files: Mapping[str, Callable[[Path], object]] | None = None,
) -> None:
    """Write one output shard: each array (``.npy`` at ``path_of(name)``), then each other file (``files``: name ->
    a writer of a path), every one under a temporary name and renamed; the ids file last."""
    for name, array in arrays.items():
        save_npy(path_of(name), array)
    for name, write in (files or {}).items():
        atomic_write(path_of(name), write)
    save_npy(path_of(IDS), np.asarray(list(ids), dtype=str))


def output_shard_done(path_of: Callable[[str], Path], names: Iterable[str]) -> bool:
    """Whether the shard's ids file (written last) and its other files ``names`` are all there."""
    return path_of(IDS).is_file() and all(path_of(n).is_file() for n in names)
