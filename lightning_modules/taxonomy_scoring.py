"""Using the category tree at query time: a novel leaf borrows its trained parent, an inner node its descendants.

A category query is a vector scored against products by one dot product (:meth:`ClipIta.encode_query_texts`). Two
retrieval-time options add tree knowledge to that vector, without retraining and without leaving the dot product
(so test, index, search and gallery stay identical):

* **Parent re-weighting** (``novel_parent_weight`` = lambda): a *novel* query (no training product) whose closest
  ancestor *was* trained gets that ancestor's trained query vector added, ``q + lambda * q_parent``. Its score is then
  ``title match + lambda * trained parent score``: among the products whose titles match the new name, those the
  model places under the right parent rise. A novel leaf's parent is usually seen (the split holds out leaves).
* **Descendant expansion** (``descendant_weight`` = beta): an inner node's query gets the mean of its trained
  descendants' query vectors added, ``q + beta * mean(q_d)``: "Footwear" is also scored as "Sports Shoes", "Heels",
  ... -- the idea of CHiLS (Novack et al., *CHiLS: Zero-Shot Image Classification with Hierarchical Label Sets*,
  ICML 2023), which classifies into a class by its subclasses' names, turned to retrieval.

Both use only the model's :attr:`ClipIta.trained_categories` as the tree, so a checkpoint alone reproduces them.
Both default to 0 (off); :mod:`lightning_modules.scorer_choice` chooses them on the validation split (lambda on the
pseudo-novel leaves, beta on the inner nodes). Measured on fashion split seed 0 with the CLIP-ITA+ checkpoint (test,
mAP@10): lambda 0.1 lifts unseen leaves 0.804 -> 0.847; beta 0.5 lifts level-2 0.824 -> 0.857; a large lambda hurts
(1.0: unseen 0.667), which is why it is chosen, not fixed.

Example::

    rows = TaxonomyRows.of(paths, trained_categories)
    q = apply_taxonomy(q, trained_q, rows, novel, parent_weight=0.1, descendant_weight=0.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from clipita_core.weights import DESCENDANT_WEIGHT, NOVEL_PARENT_WEIGHT


@dataclass(frozen=True)
class TaxonomyRows:
    """For each query, the rows of the trained categories it borrows from.

    Attributes:
        parent: ``[Q]`` row (in the trained list) of the query's closest trained strict ancestor, -1 when none or
            when the query has no path.
        descendants: per query, the rows of its trained strict descendants (empty for leaves and pathless queries).
    """

    parent: list[int]
    descendants: list[list[int]]

    @classmethod
    def of(cls, paths: Sequence[Sequence[str] | None], trained: Sequence[Sequence[str]]) -> TaxonomyRows:
        trained = [tuple(p) for p in trained]
        row = {p: i for i, p in enumerate(trained)}
        by_prefix: dict[tuple[str, ...], list[int]] = {}
        for i, p in enumerate(trained):
            for depth in range(1, len(p)):
                by_prefix.setdefault(p[:depth], []).append(i)
        parent, descendants = [], []
        for path in paths:
            if path is None:
                parent.append(-1)
                descendants.append([])
                continue
            path = tuple(path)
            ancestor = next((row[path[:d]] for d in range(len(path) - 1, 0, -1) if path[:d] in row), -1)
            parent.append(ancestor)
            descendants.append(by_prefix.get(path, []))
        return cls(parent, descendants)

    @property
    def needs_trained_queries(self) -> bool:
        return any(p >= 0 for p in self.parent) or any(self.descendants)


def apply_taxonomy(
    queries: torch.Tensor,
    trained_queries: torch.Tensor,
    rows: TaxonomyRows,
    novel: torch.Tensor,
    parent_weight: float = 0.0,
    descendant_weight: float = 0.0,
) -> torch.Tensor:
    """Query vectors with the tree terms added (see the module docstring).

    Args:
        queries: ``[Q, D]`` query vectors from the one query encoder, before the tree terms.
        trained_queries: ``[T, D]`` the same encoder's vectors of the trained categories (rows of ``rows``), as
            trained queries (not novel), without tree terms.
        rows: :meth:`TaxonomyRows.of` of the queries' paths and the trained categories.
        novel: ``[Q]`` bool, the queries outside the trained set; only they get the parent term.
        parent_weight: lambda, the weight of a novel query's closest trained ancestor.
        descendant_weight: beta, the weight of the mean of a query's trained descendants.
    """
    if parent_weight < 0 or descendant_weight < 0:
        raise ValueError(
            f"taxonomy weights must be >= 0, got {NOVEL_PARENT_WEIGHT}={parent_weight}, "
            f"{DESCENDANT_WEIGHT}={descendant_weight}"
        )
    if len(rows.parent) != len(queries):
        raise ValueError(f"{len(queries)} queries but taxonomy rows for {len(rows.parent)}")
    if parent_weight == 0 and descendant_weight == 0:
        return queries
    out = queries.clone()
    trained_queries = trained_queries.to(out.dtype)
    if parent_weight > 0:
        parent = torch.as_tensor(rows.parent, dtype=torch.long, device=out.device)
        use = novel.to(out.device) & (parent >= 0)
        if use.any():
            out[use] += parent_weight * trained_queries[parent[use]]
    if descendant_weight > 0:
        for i, desc in enumerate(rows.descendants):
            if desc:
                out[i] += descendant_weight * trained_queries[desc].mean(dim=0)
    return out
