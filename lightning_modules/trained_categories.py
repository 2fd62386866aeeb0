"""The categories a model trained on, and which queries are novel to it.

Vocabulary (used the same way everywhere in clipita):

- **unseen** category: held out of training *by the split* (``manifest.json``'s ``unseen_categories``); a property of
  the data. Evaluation reports ``specific_seen`` / ``specific_unseen`` settings from it.
- **novel** category: one *this model* has no training product for, i.e. not in :attr:`ClipIta.trained_categories`;
  a property of the model (it travels in its checkpoint). With ``route_novel_categories`` a novel query is scored by
  the zero-shot title match instead of the trained heads. Every unseen category is novel to a model trained on that
  split; a free-text query that names no catalogue category is novel too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from clipita_core.paths import CategoryText, category_text_of


class TrainedCategories:
    """The trained set of a model: every category (any level) with a training product, as sorted paths, and the query
    texts they are written as in the model's :data:`~clipita_core.paths.CategoryText` style."""

    def __init__(self, paths: Iterable[Sequence[str]] = (), category_text: CategoryText = "leaf") -> None:
        self.paths: list[tuple[str, ...]] = sorted({tuple(p) for p in paths})
        self._paths = set(self.paths)
        self._texts = {category_text_of(p, category_text) for p in self.paths}

    def novel_mask(
        self, texts: Sequence[str], paths: Sequence[Sequence[str] | None] | None = None
    ) -> torch.Tensor:
        """``[Q]`` True where a query is novel: its category path (when given) or else its text is not in the trained
        set. An empty trained set (a model never set up on a catalogue) calls nothing novel."""
        if paths is not None and len(paths) != len(texts):
            raise ValueError(f"{len(texts)} query texts but {len(paths)} paths")
        if not self.paths:
            return torch.zeros(len(texts), dtype=torch.bool)
        novel = []
        for i, text in enumerate(texts):
            path = None if paths is None else paths[i]
            if path is not None:
                novel.append(tuple(path) not in self._paths)
            else:
                novel.append(text not in self._texts)
        return torch.tensor(novel, dtype=torch.bool)
