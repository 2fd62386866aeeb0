"""How sharded products are split into train / val / test (reproducible from a seed).

Two split modes, one rule over both:

1. **Drawn** (tables, and folder trees without ``split_folders``): ``unseen_fraction`` of the leaf categories
   (rounded up; at least one when there are two or more leaves, never all of them) are held out as *unseen*: all
   their products go to ``test``, none to ``train``/``val``. The other products are split per category path
   into ``train``/``val``/``test`` by ``val_fraction`` and ``test_fraction`` (stratified; a category's expected
   share is rounded at random, and every category keeps at least one product in ``train``).
2. **The catalogue's own** (a folder tree with ``split_folders: true``): every product stays in the split
   folder it came from, but for the rule below. No leaf is held out on purpose; the leaves with no product in
   ``train`` are the unseen categories, since no model trains on them.

In both modes ``pseudo_novel_fraction`` of the *seen* leaves can be held out of training as validation-only
categories (:func:`choose_pseudo_novel`): their would-be ``train`` products go to ``val`` instead (drawn: they are
split exactly as a seen leaf would be, same random draws, so ``test`` is unchanged). They are drawn from their own
random stream after the unseen draw, so the unseen leaves, the ``test`` split and its order are the same for the
same seed whatever the fraction. Validation can then measure the model on categories it never trained on (the
*novel* case) without touching the test's unseen leaves.

**The rule: unseen leaves are in test only** (:func:`test_only`). Every choice made on validation (the scorer's
signal weights, its tree terms, any mixing coefficient) reads the ``val`` split, so no product of an unseen leaf
may be there: in the catalogue's own split, a ``val`` product of a leaf with no ``train`` product moves to
``test`` (``manifest.json`` counts them, ``moved_to_test``). Drawn splits never put one there, so they are
unchanged. This is the one place the validation product set is decided; everything downstream inherits it.

Within a split, records are in a seeded random order.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from clipita_core.paths import CategoryPath
from clipita_core.tree import CategoryTree
from clipita_core.vocabulary import SPLITS

SPLIT_RULES = 2  # the version of these rules: shards drawn under an older one are drawn again (2: test_only)


@dataclass(frozen=True)
class SplitOptions:
    """How a catalogue's products are split: the one declaration of the split options, their defaults, their help
    and their checks. ``clipita shard`` (``seed``, ``val_fraction``, ...) and the DataModule (``data.split_seed``,
    ``data.val_fraction``, ...) take them as flat options whose defaults and help come from here
    (:func:`split_options_doc`); the shard writer takes the object.

    Attributes:
        seed: seed of the unseen-category choice, the product split and the order of records in the shards.
        val_fraction: share of each seen category's products that goes to ``val`` (not with a folder tree's own
            ``split_folders``).
        test_fraction: share of each seen category's products that goes to ``test`` (not with ``split_folders``).
        unseen_fraction: share of leaf categories held out of training (all their products go to ``test``). With a
            folder tree's own ``split_folders`` no leaf is drawn: the leaves with no ``train`` product are the
            unseen ones, and their ``val`` products go to ``test`` too. In every split mode the ``val`` split holds
            no product of an unseen leaf (:mod:`datamodules.splits`), so nothing chosen on validation (scorer
            weights, tree terms, mixing coefficients) has seen a test category.
        pseudo_novel_fraction: share of the remaining (seen) leaves held out of training as validation-only
            categories: their products go to ``val`` (and their usual share to ``test``), never to ``train``, so
            validation measures categories the model never trained on (``val/specific_novel/...``). The unseen
            leaves and the ``test`` split are the same as with 0 (the default). Listed in the manifest as
            ``pseudo_novel_categories``; the DataModule keeps such shards beside the plain ones
            (``shards/seed<N>-pn<fraction>``).
    """

    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    unseen_fraction: float = 0.2
    pseudo_novel_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction", "unseen_fraction", "pseudo_novel_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1, got {self.val_fraction} + {self.test_fraction}"
            )

    def fractions(self) -> dict[str, float]:
        """The fractions as ``manifest.json`` records them (``fractions``)."""
        return {
            "val": self.val_fraction,
            "test": self.test_fraction,
            "unseen": self.unseen_fraction,
            "pseudo_novel": self.pseudo_novel_fraction,
        }


SPLIT_DEFAULTS = SplitOptions()  # the defaults the flat options of ``clipita shard`` and the DataModule read


def split_options_doc(docstring: str | None, names: Mapping[str, str] | None = None, indent: int = 8) -> str:
    """``docstring`` with ``{split_options}`` replaced by the ``Args:`` entries of the split options (their help
    from :class:`SplitOptions`, each under its flat name: ``names`` maps a field to another, e.g. ``seed`` to
    ``split_seed``), so a command's ``--help`` shows the one declaration."""
    doc = SplitOptions.__doc__ or ""
    body = doc[doc.index("Attributes:") + len("Attributes:") :].strip("\n").rstrip()
    entries = []
    for line in body.splitlines():  # entries indented 8 in the class docstring, continuation lines 12
        text = line[8:]
        field = text.split(":", 1)[0]
        if names and field in names:
            text = names[field] + text[len(field) :]
        entries.append(" " * indent + text)
    return (docstring or "").replace("{split_options}", "\n".join(entries).lstrip())


Item = TypeVar("Item")  # a record, or anything standing for one (the shard writer's spool line numbers)


def _category(record: Any) -> CategoryPath:
    return record.category


def _split(record: Any) -> str | None:
    return record.split


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


def pseudo_novel_rng(seed: int) -> random.Random:
    """The random stream of the pseudo-novel draw: its own, so the split's main stream is untouched by it."""
    return random.Random(f"pseudo-novel:{seed}")


def choose_pseudo_novel(
    leaves: Sequence[CategoryPath], unseen: Sequence[CategoryPath], fraction: float, rng: random.Random
) -> list[CategoryPath]:
    """Pick ``round(fraction * n)`` of the ``n`` seen leaves (``leaves`` minus ``unseen``) as validation-only
    categories: at least 1 when ``fraction > 0`` and there are >= 2 seen leaves, never all of them (training keeps
    at least one leaf).

    Args:
        leaves: The leaf categories with products (any order; sorted first so the pick depends on ``rng`` only).
        unseen: The test's unseen leaves (never picked).
        fraction: Share of the seen leaves to hold out of training; 0 holds out none.
        rng: Random source (:func:`pseudo_novel_rng`).
    """
    seen = sorted(set(leaves) - set(unseen))
    if fraction <= 0 or len(seen) < 2:
        return []
    k = min(max(1, round(fraction * len(seen))), len(seen) - 1)
    return sorted(rng.sample(seen, k))


def assign_splits(
    records: Sequence[Item],
    unseen: set[CategoryPath],
    val_fraction: float,
    test_fraction: float,
    rng: random.Random,
    pseudo_novel: set[CategoryPath] = frozenset(),
    pseudo_novel_order: random.Random | None = None,
    category_of: Callable[[Item], CategoryPath] = _category,
) -> dict[str, list[Item]]:
    """Split good records into train/val/test: unseen categories to test, the rest stratified by category.

    Args:
        records: Good records, in input order.
        unseen: Category paths whose products all go to ``test``.
        val_fraction: Expected share of each seen category going to ``val``.
        test_fraction: Expected share of each seen category going to ``test``.
        rng: Random source.
        pseudo_novel: Category paths held out of training for validation: split like any seen category (the same
            random draws, so ``test`` does not change), then their ``train`` share goes to ``val``.
        pseudo_novel_order: Random source of ``val``'s order once the pseudo-novel products joined it (not ``rng``,
            whose draws stay the same; default ``Random(0)``).
        category_of: A record's category path (default: its ``category``).

    Returns:
        split -> records, each list in a seeded random order.
    """
    out: dict[str, list[Item]] = {s: [] for s in SPLITS}
    by_category: dict[CategoryPath, list[Item]] = defaultdict(list)
    for record in records:
        by_category[category_of(record)].append(record)
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
    for split in SPLITS:  # the same draws whatever pseudo_novel is: test keeps its products and order
        rng.shuffle(out[split])
    if pseudo_novel:  # then their train share moves to val, shuffled in by a stream of its own
        moved = [r for r in out["train"] if category_of(r) in pseudo_novel]
        out["train"] = [r for r in out["train"] if category_of(r) not in pseudo_novel]
        out["val"].extend(moved)
        (pseudo_novel_order or random.Random(0)).shuffle(out["val"])
    return out


def own_splits(
    records: Sequence[Item],
    rng: random.Random,
    category_of: Callable[[Item], CategoryPath] = _category,
    split_of: Callable[[Item], str | None] = _split,
) -> tuple[dict[str, list[Item]], list[CategoryPath]]:
    """Keep each record in its own split folder; unseen = leaves with no product in ``train``.

    Args:
        records: Good records, in input order.
        rng: Random source of the order within each split.
        category_of: A record's category path (default: its ``category``).
        split_of: A record's split folder (default: its ``split``).

    Returns:
        (split -> records in a seeded random order, the unseen leaf paths sorted).
    """
    out: dict[str, list[Item]] = {s: [] for s in SPLITS}
    for record in records:
        split = split_of(record)
        assert split in SPLITS, split
        out[split].append(record)
    for split in SPLITS:
        rng.shuffle(out[split])
    trained = {category_of(r) for r in out["train"]}
    paths = {category_of(r) for r in records}
    inner = {p[:d] for p in paths for d in range(1, len(p))}
    unseen = sorted(p for p in paths - trained if p not in inner)
    return out, unseen


def test_only(
    splits: dict[str, list[Item]],
    unseen: Sequence[CategoryPath],
    rng: random.Random,
    category_of: Callable[[Item], CategoryPath] = _category,
) -> int:
    """Move every ``train``/``val`` product of an ``unseen`` leaf to ``test`` (in place); returns how many moved.

    ``test`` is reshuffled by ``rng`` only when something moved (a drawn split, which never puts one elsewhere,
    keeps its order)."""
    held = set(unseen)
    moved = 0
    for split in ("train", "val"):
        out = [r for r in splits[split] if category_of(r) in held]
        if out:
            splits[split] = [r for r in splits[split] if category_of(r) not in held]
            splits["test"].extend(out)
            moved += len(out)
    if moved:
        rng.shuffle(splits["test"])
    return moved


def draw_splits(
    records: Sequence[Item],
    split_folders: bool,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    unseen_fraction: float,
    pseudo_novel_fraction: float,
    category_of: Callable[[Item], CategoryPath] = _category,
    split_of: Callable[[Item], str | None] = _split,
) -> tuple[dict[str, list[Item]], list[CategoryPath], list[CategoryPath], CategoryTree]:
    """The split ``clipita shard`` writes: drawn (:func:`assign_splits`) or the catalogue's own folders.

    Args:
        records: Good records in input order, or anything standing for them with ``category_of`` and ``split_of``
            (the shard writer passes its spool's line numbers).
        split_folders: Keep each record in its own split folder (:func:`own_splits`) instead of drawing (the
            unseen leaves' ``val`` products then move to ``test``: :func:`test_only`).
        seed: Seed of the draw and of the order within each split.
        val_fraction: See :func:`assign_splits`.
        test_fraction: See :func:`assign_splits`.
        unseen_fraction: Share of leaves held out (:func:`choose_unseen`; not with ``split_folders``).
        pseudo_novel_fraction: Share of seen leaves held out of training (:func:`choose_pseudo_novel`).
        category_of: A record's category path (default: its ``category``).
        split_of: A record's split folder (default: its ``split``).

    Returns:
        (split -> records in write order, unseen leaves, pseudo-novel leaves, the category tree of the records).
    """
    rng = random.Random(seed)
    product_paths = {category_of(r) for r in records}
    tree = CategoryTree.from_paths(product_paths)
    novel_rng = pseudo_novel_rng(seed)
    if split_folders:
        splits, unseen = own_splits(records, rng, category_of, split_of)
        trained = sorted({category_of(r) for r in splits["train"]})
        pseudo_novel = choose_pseudo_novel(trained, unseen, pseudo_novel_fraction, novel_rng)
        if pseudo_novel:
            held = set(pseudo_novel)
            splits["val"] += [r for r in splits["train"] if category_of(r) in held]
            splits["train"] = [r for r in splits["train"] if category_of(r) not in held]
            novel_rng.shuffle(splits["val"])
    else:
        leaves = [tree.paths[i] for i in tree.leaves]
        leaves = [p for p in leaves if p in product_paths]
        unseen = choose_unseen(leaves, unseen_fraction, rng)
        pseudo_novel = choose_pseudo_novel(leaves, unseen, pseudo_novel_fraction, novel_rng)
        splits = assign_splits(
            records,
            set(unseen),
            val_fraction,
            test_fraction,
            rng,
            set(pseudo_novel),
            pseudo_novel_order=novel_rng,
            category_of=category_of,
        )
    test_only(splits, unseen, random.Random(f"test-only:{seed}"), category_of)  # every mode: the one rule
    return splits, unseen, pseudo_novel, tree
