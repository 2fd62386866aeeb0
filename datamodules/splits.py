"""How sharded products are split into train / val / test (reproducible from a seed).

Two ways:

1. **Drawn** (tables, and folder trees without ``split_folders``): ``unseen_fraction`` of the leaf categories
   (rounded up; at least one when there are two or more leaves, never all of them) are held out as *unseen*: all
   their products go to ``test``, none to ``train``/``val``. The other products are split per category path
   into ``train``/``val``/``test`` by ``val_fraction`` and ``test_fraction`` (stratified; a category's expected
   share is rounded at random, and every category keeps at least one product in ``train``).
2. **The catalogue's own** (a folder tree with ``split_folders: true``): every product stays in the split
   folder it came from. No leaf is held out on purpose; the leaves with no product in ``train`` (present only
   in ``val``/``test``) are the unseen categories, since no model trains on them.

Within a split, records are in a seeded random order.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

from datamodules.catalogue import RawRecord
from datamodules.category_tree import CategoryPath

SPLITS = ("train", "val", "test")


def choose_unseen(leaves: Sequence[CategoryPath], fraction: float, rng: random.Random) -> list[CategoryPath]:
    """Pick ``ceil(fraction * len(leaves))`` leaves (at least 1 when there are >= 2 leaves, never all).

    Args:
        leaves: The leaf categories (any order; they are sorted first so the pick depends on ``rng`` only).
        fraction: Share of leaves to hold out; 0 holds out none.
        rng: Random source.
    """
    leaves = sorted(set(leaves))
    if fraction <= 0 or len(leaves) < 2:
        return []
    k = min(max(1, math.ceil(fraction * len(leaves) - 1e-9)), len(leaves) - 1)
    return sorted(rng.sample(leaves, k))


def assign_splits(
    records: Sequence[RawRecord],
    unseen: set[CategoryPath],
    val_fraction: float,
    test_fraction: float,
    rng: random.Random,
) -> dict[str, list[RawRecord]]:
    """Split good records into train/val/test: unseen categories to test, the rest stratified by category.

    Args:
        records: Good records, in input order.
        unseen: Category paths whose products all go to ``test``.
        val_fraction: Expected share of each seen category going to ``val``.
        test_fraction: Expected share of each seen category going to ``test``.
        rng: Random source.

    Returns:
        split -> records, each list in a seeded random order.
    """
    out: dict[str, list[RawRecord]] = {s: [] for s in SPLITS}
    by_category: dict[CategoryPath, list[RawRecord]] = defaultdict(list)
    for record in records:
        by_category[record.category].append(record)
    for category in sorted(by_category):
        group = by_category[category]
        if category in unseen:
            out["test"].extend(group)
            continue
        group = list(group)
        rng.shuffle(group)
        n = len(group)

        def share(fraction: float, n: int = n) -> int:
            exact = n * fraction
            return int(exact) + (1 if rng.random() < exact - int(exact) else 0)

        n_val, n_test = share(val_fraction), share(test_fraction)
        while n_val + n_test > n - 1 and n_val + n_test > 0:  # keep at least one product in train
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        out["val"].extend(group[:n_val])
        out["test"].extend(group[n_val : n_val + n_test])
        out["train"].extend(group[n_val + n_test :])
    for split in SPLITS:
        rng.shuffle(out[split])
    return out


def own_splits(
    records: Sequence[RawRecord], rng: random.Random
) -> tuple[dict[str, list[RawRecord]], list[CategoryPath]]:
    """Keep each record in its own split folder; unseen = leaves with no product in ``train``.

    Returns:
        (split -> records in a seeded random order, the unseen leaf paths sorted).
    """
    out: dict[str, list[RawRecord]] = {s: [] for s in SPLITS}
    for record in records:
        assert record.split in SPLITS, record.split
        out[record.split].append(record)
    for split in SPLITS:
        rng.shuffle(out[split])
    trained = {r.category for r in out["train"]}
    paths = {r.category for r in records}
    inner = {p[:d] for p in paths for d in range(1, len(p))}
    unseen = sorted(p for p in paths - trained if p not in inner)
    return out, unseen
