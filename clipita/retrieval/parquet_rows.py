"""Reading a few rows or a few columns of a parquet table without loading it: batch by batch, from only the row
groups (or columns) needed, so memory is independent of the table's size (the index's product tables)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def read_parquet_rows(
    path: str | Path, rows: Sequence[int], batch_size: int = 65536
) -> dict[int, dict[str, Any]]:
    """Rows ``rows`` (0-based within the file) of a parquet table, each as ``frame.iloc[row].to_dict()`` would give
    it, read batch by batch from only the row groups holding them.

    Raises:
        IndexError: a row outside the table.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = np.unique(np.asarray(list(rows), dtype=np.int64))
    parquet = pq.ParquetFile(path)
    meta = parquet.metadata
    bounds = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
    if len(wanted) and (wanted[0] < 0 or wanted[-1] >= bounds[-1]):
        raise IndexError(f"{path}: rows {wanted[0]}..{wanted[-1]} outside its {bounds[-1]} rows")
    out: dict[int, dict[str, Any]] = {}
    for group in np.unique(np.searchsorted(bounds, wanted, side="right") - 1):
        start = int(bounds[group])
        pending = wanted[(wanted >= start) & (wanted < bounds[group + 1])]
        for batch in parquet.iter_batches(batch_size=batch_size, row_groups=[int(group)]):
            stop = start + batch.num_rows
            picked, pending = pending[pending < stop], pending[pending >= stop]
            if len(picked):
                frame = pa.Table.from_batches([batch.take(pa.array(picked - start))]).to_pandas()
                out.update((int(r), frame.iloc[i].to_dict()) for i, r in enumerate(picked))
            if not len(pending):
                break
            start = stop
    return out


def count_parquet_values(
    paths: Sequence[str | Path], columns: Sequence[str], batch_size: int = 65536
) -> Counter[tuple[Any, ...]]:
    """How many rows of the parquet tables ``paths`` hold each combination of ``columns``' values (a tuple in
    ``columns`` order, None for a null or a column a table lacks), read batch by batch from those columns only."""
    import pyarrow.parquet as pq

    counts: Counter[tuple[Any, ...]] = Counter()
    for path in paths:
        parquet = pq.ParquetFile(path)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=batch_size, columns=present):
            values = {c: batch.column(c).to_pylist() for c in present}
            counts.update(zip(*(values.get(c, [None] * batch.num_rows) for c in columns), strict=True))
    return counts
