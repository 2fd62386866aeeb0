"""The category tree: every node of a catalogue's taxonomy, indexed once, shared by data, model and metrics."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from clipita_core.paths import CategoryPath, CategoryText, category_text_of, format_path


@dataclass
class CategoryTree:
    """All nodes of a category taxonomy in a fixed order (by depth, then path).

    Built from the products' full paths (root first). Every prefix of a path is a node, so queries can be asked at
    any level. Node ``i`` is ``paths[i]``; ``depth[i]`` is 1 for the top level.

    Example:
        >>> tree = CategoryTree.from_paths([("Apparel", "Topwear", "Shirts"), ("Footwear", "Shoes")])
        >>> tree.paths[:2]
        [('Apparel',), ('Footwear',)]
        >>> tree.ancestor_ids(("Apparel", "Topwear", "Shirts"))
        [0, 2, 4]
    """

    paths: list[CategoryPath]
    _index: dict[CategoryPath, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.paths = [tuple(p) for p in self.paths]
        self._index = {p: i for i, p in enumerate(self.paths)}
        if len(self._index) != len(self.paths):
            raise ValueError("CategoryTree paths must be unique")

    @classmethod
    def from_paths(cls, product_paths: Iterable[Sequence[str]]) -> CategoryTree:
        nodes: set[CategoryPath] = set()
        for path in product_paths:
            path = tuple(path)
            if not path:
                raise ValueError("empty category path")
            for d in range(1, len(path) + 1):
                nodes.add(path[:d])
        return cls(sorted(nodes, key=lambda p: (len(p), p)))

    def __len__(self) -> int:
        return len(self.paths)

    def index(self, path: Sequence[str]) -> int:
        try:
            return self._index[tuple(path)]
        except KeyError:
            raise KeyError(f"category {format_path(path)!r} is not in the tree") from None

    def __contains__(self, path: Sequence[str]) -> bool:
        return tuple(path) in self._index

    @property
    def depth(self) -> np.ndarray:
        return np.array([len(p) for p in self.paths], dtype=np.int64)

    @property
    def max_depth(self) -> int:
        return max(len(p) for p in self.paths)

    def parent(self, i: int) -> int:
        """Index of the parent of node ``i``; -1 for a top-level node."""
        p = self.paths[i]
        return -1 if len(p) == 1 else self._index[p[:-1]]

    @property
    def leaves(self) -> list[int]:
        """Nodes with no children."""
        has_child = {p[:-1] for p in self.paths if len(p) > 1}
        return [i for i, p in enumerate(self.paths) if p not in has_child]

    def nodes_at_depth(self, depth: int) -> list[int]:
        return [i for i, p in enumerate(self.paths) if len(p) == depth]

    def ancestor_ids(self, path: Sequence[str]) -> list[int]:
        """Table indices of every prefix of ``path``, root first (the path itself last)."""
        path = tuple(path)
        return [self.index(path[:d]) for d in range(1, len(path) + 1)]

    def ancestor_matrix(self, product_paths: Sequence[Sequence[str]]) -> np.ndarray:
        """``[N, max_depth]`` int64 of ancestor ids per product, padded with -1 (the batch key ``category_ids``)."""
        out = np.full((len(product_paths), self.max_depth), -1, dtype=np.int64)
        for n, path in enumerate(product_paths):
            ids = self.ancestor_ids(path)
            out[n, : len(ids)] = ids
        return out

    def texts(self, style: CategoryText = "leaf") -> list[str]:
        """The text each node is encoded from (:func:`~clipita_core.paths.category_text_of`), in node order."""
        category_text_of(("",), style)  # validates the style, even on an empty tree
        return [category_text_of(p, style) for p in self.paths]

    def to_json(self) -> list[list[str]]:
        return [list(p) for p in self.paths]

    @classmethod
    def from_json(cls, paths: Sequence[Sequence[str]]) -> CategoryTree:
        return cls([tuple(p) for p in paths])
