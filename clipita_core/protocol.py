"""The evaluation protocol: what a split's retrieval is evaluated on, built from its manifest.

Every category of the tree is a query, encoded from its text (:func:`~clipita_core.paths.category_text_of` in one
style); the *settings* are named groups of queries whose metrics are reported apart (``all``, ``general``,
``level-N``, ``specific``, and on test ``specific_seen`` / ``specific_unseen``). The split names three sets of table
ids: the *seen* categories (every category, any level, with a training product: what a model trains on), the *novel*
ones (pseudo-novel leaves held out of training for validation) and the *unseen* ones (leaves held out of training by
the split, test only). ``ClipItaModule`` takes a protocol the way it takes its network; the baselines score the same
queries under the same settings.

Plain numpy and tuples: the LightningModule converts to tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from clipita_core.manifest import Manifest
from clipita_core.paths import CategoryPath, CategoryText, category_text_of
from clipita_core.tree import CategoryTree

TEST_ONLY_SETTINGS = ("specific_seen", "specific_unseen")  # split by the split's unseen leaves (test only)


def _ids(values: Iterable[int], tree: CategoryTree, what: str) -> tuple[int, ...]:
    out = tuple(int(i) for i in values)
    bad = [i for i in out if not 0 <= i < len(tree)]
    if bad:
        raise ValueError(f"{what} category ids {bad[:5]} are not rows of the {len(tree)}-category table")
    return out


@dataclass(frozen=True)
class EvalProtocol:
    """The queries, the settings and the seen / novel / unseen categories of one split.

    Build it from a split's manifest with :meth:`from_manifest`; the constructor takes the parts themselves (an
    in-memory catalogue's).

    Attributes:
        tree: the category table; query ``i`` is ``tree.paths[i]``.
        text_style: the text each query is encoded from (the network's ``category_text``).
        seen_ids: table ids of every category (any level) with a training product.
        novel_ids: table ids of the pseudo-novel leaves (validation-only; ``()`` without them).
        unseen_ids: table ids of the leaves held out of training by the split (test only).
        attribute_names: the catalogue's attribute columns, in order.
    """

    tree: CategoryTree
    text_style: CategoryText = "leaf"
    seen_ids: tuple[int, ...] = ()
    novel_ids: tuple[int, ...] = ()
    unseen_ids: tuple[int, ...] = ()
    attribute_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        category_text_of(("",), self.text_style)  # a bad style fails here, naming the valid ones
        for name in ("seen_ids", "novel_ids", "unseen_ids"):
            object.__setattr__(self, name, _ids(getattr(self, name), self.tree, name.removesuffix("_ids")))
        object.__setattr__(self, "attribute_names", tuple(str(a) for a in self.attribute_names))

    @classmethod
    def from_manifest(cls, manifest: Manifest, text_style: CategoryText = "leaf") -> EvalProtocol:
        """The protocol of a shard folder's split: its tree, the categories of its train split (with their
        ancestors), its pseudo-novel and unseen leaves and its attribute names."""
        tree = CategoryTree.from_json(manifest.tree_paths)
        seen: set[int] = set()
        for path in manifest.split("train").category_paths:
            seen.update(tree.ancestor_ids(path))
        return cls(
            tree=tree,
            text_style=text_style,
            seen_ids=tuple(sorted(seen)),
            novel_ids=tuple(tree.index(p) for p in manifest.pseudo_novel_categories),
            unseen_ids=tuple(tree.index(p) for p in manifest.unseen_categories),
            attribute_names=tuple(manifest.attribute_names),
        )

    def difference(self, other: EvalProtocol) -> str | None:
        """What makes ``other`` another evaluation than this one (None when they are the same)."""
        if list(self.tree.paths) != list(other.tree.paths):
            return "the category tables differ"
        for name in ("text_style", "seen_ids", "novel_ids", "unseen_ids", "attribute_names"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                return f"{name} {theirs!r} vs {mine!r}"
        return None

    # -------------------------------------------------------------------------------------------- queries
    @property
    def num_queries(self) -> int:
        return len(self.tree)

    @property
    def query_paths(self) -> list[CategoryPath]:
        return [tuple(p) for p in self.tree.paths]

    @property
    def query_texts(self) -> list[str]:
        """The text each query is encoded from, in table order."""
        return self.tree.texts(self.text_style)

    @property
    def seen_paths(self) -> list[CategoryPath]:
        """The seen categories' paths: the trained set of a model fitted on this split."""
        return [self.tree.paths[i] for i in self.seen_ids]

    def mask(self, ids: Sequence[int]) -> np.ndarray:
        """``[Q]`` bool, True at ``ids``."""
        out = np.zeros(len(self.tree), dtype=bool)
        out[list(ids)] = True
        return out

    # ------------------------------------------------------------------------------------------- settings
    @property
    def settings(self) -> dict[str, np.ndarray]:
        """The test's settings, ``{name: [Q] bool}``: ``all``; ``general`` (top level); ``specific`` (leaves);
        ``level-d`` for each inner depth; with unseen leaves ``specific_seen`` / ``specific_unseen`` (the leaves
        split by the split's unseen ones)."""
        depth = self.tree.depth
        leaves = self.mask(self.tree.leaves)
        groups = {"all": np.ones(len(self.tree), dtype=bool), "general": depth == 1, "specific": leaves}
        for d in range(2, self.tree.max_depth):
            groups[f"level-{d}"] = depth == d
        unseen = self.mask(self.unseen_ids)
        if unseen.any():
            groups["specific_seen"] = leaves & ~unseen
            groups["specific_unseen"] = leaves & unseen
        return groups

    @property
    def validation_settings(self) -> dict[str, np.ndarray]:
        """The test's settings with the leaves split by what a model fitted on this split trains on:
        ``specific_seen`` (seen leaves) and ``specific_novel`` (the others that have validation products: the
        pseudo-novel ones). The unseen leaves have no validation product in any split mode, so nothing chosen on
        validation sees them. With no seen category (no trained set) nothing is novel."""
        groups = {k: v for k, v in self.settings.items() if k not in TEST_ONLY_SETTINGS}
        if "specific" in groups and len(self.tree):
            novel = ~self.mask(self.seen_ids) if self.seen_ids else np.zeros(len(self.tree), dtype=bool)
            groups["specific_seen"] = groups["specific"] & ~novel
            groups["specific_novel"] = groups["specific"] & novel
        return groups
