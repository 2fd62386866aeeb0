"""Choosing the scorer from evidence: how much a query's score leans on the frozen title match, per catalogue.

A network with ``route_novel_categories`` scores a query ``q`` against a product ``p`` as the convex mix

    score(q, p) = (1 - w) * <category(q), product(p)> + w * <name(q), title(p)>

of its trained towers and the zero-shot match of the category name with the product's frozen title embedding, with
one weight for the categories it trained on (``seen_title_weight``, default 0) and one for novel ones
(``novel_title_weight``, default 1: today's routing). On a catalogue whose titles name the category the title match
is worth a lot for novel categories; on one whose titles are noise it is worth nothing and the towers (the image
evidence) should answer. Which one holds is measured, not assumed: :class:`ScorerSelection` evaluates a grid of
weights on the validation split, in the same pass as validation, and :func:`choose` picks

* ``novel_title_weight`` by the mean mAP@10 of the *novel* validation queries (the pseudo-novel leaves that
  ``data.pseudo_novel_fraction`` holds out of training: categories with validation products the model never
  trained on);
* ``seen_title_weight`` by the mean mAP@10 of the trained validation queries (every level).

The best grid weight wins unless a smaller one (closer to the trained towers) is within one standard error of it
(:func:`best_weight`). Without product titles in the
validation split both weights are 0 (the towers); without novel validation queries ``novel_title_weight`` keeps its
default. The choice and its evidence go into ``ClipIta.retrieval``, hence into the checkpoint, and every consumer
(test, leaderboard, index, search, gallery) scores through ``ClipIta.encode_query_texts``, which reads it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .metrics import CategoryRetrievalMetrics
from .model import NOVEL_TITLE_WEIGHT, SEEN_TITLE_WEIGHT, ClipIta

DEFAULT_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
CHOICE_KEY = "scorer_choice"  # the evidence, beside the two weights in ClipIta.retrieval


def check_grid(grid: Sequence[float]) -> list[float]:
    """The grid sorted and checked: distinct weights in [0, 1]."""
    values = sorted(float(w) for w in grid)
    if not values or len(set(values)) != len(values) or not all(0.0 <= w <= 1.0 for w in values):
        raise ValueError(f"scorer_grid must be distinct weights in [0, 1], got {list(grid)}")
    return values


def best_weight(grid: Sequence[float], values: torch.Tensor) -> tuple[float | None, dict[str, Any]]:
    """The weight chosen from per-query values ``[G, n]`` (grid weight x query): the *one-standard-error rule*.

    The best mean wins unless a smaller weight (leaning more on the trained towers) is within one standard error of
    it -- the standard error of the per-query paired difference to the best weight; then the smallest such weight
    wins. A difference the validation queries cannot tell from noise therefore never moves the scorer away from
    the towers (Breiman et al., *Classification and Regression Trees*, 1984, the 1-SE rule). With fewer than two
    queries the best mean wins (ties: the smaller weight). None when there is no query.
    """
    grid = [float(w) for w in grid]
    if values.numel() == 0 or values.shape[1] == 0:
        return None, {}
    values = values.double()
    means = values.mean(dim=1)
    best = int(torch.argmax(means))  # the first maximum: ties go to the smaller weight (the grid is sorted)
    n = values.shape[1]
    se = [0.0] * len(grid)
    if n >= 2:
        diffs = values[best] - values
        se = [float(d.std(unbiased=True) / math.sqrt(n)) for d in diffs]
    chosen = next(i for i in range(len(grid)) if float(means[best] - means[i]) <= se[i] + 1e-12)
    return grid[chosen], {"best_mean_weight": grid[best], "se_to_best": se}


def _means(values: torch.Tensor, g: int) -> list[float | None]:
    if values.numel() == 0 or values.shape[1] == 0:
        return [None] * g
    return [float(v) for v in values.double().mean(dim=1)]


def choose(
    grid: Sequence[float],
    seen_values: torch.Tensor,
    novel_values: torch.Tensor,
    titles_present: int,
    default_novel: float = 1.0,
) -> dict[str, Any]:
    """The retrieval record of a choice: ``{seen_title_weight, novel_title_weight, scorer_choice: evidence}``.

    Args:
        grid: the weights tried (sorted).
        seen_values: ``[G, n]`` validation mAP@10 of the trained queries per grid weight (queries with a relevant
            validation product only).
        novel_values: ``[G, m]`` the same for the novel queries.
        titles_present: validation products with a title; 0 makes both weights 0 (the towers).
        default_novel: ``novel_title_weight`` when there is no novel validation query.
    """
    g = len(grid)
    evidence: dict[str, Any] = {
        "grid": list(grid),
        "rule": "one-standard-error: the smallest title weight within one SE (paired) of the best mean",
        "val_seen_map@10": _means(seen_values, g),
        "val_novel_map@10": _means(novel_values, g),
        "titles_present": int(titles_present),
    }
    if titles_present == 0:
        seen, novel = 0.0, 0.0
        evidence["seen_reason"] = evidence["novel_reason"] = (
            "no product titles in validation: the trained towers"
        )
        return {SEEN_TITLE_WEIGHT: seen, NOVEL_TITLE_WEIGHT: novel, CHOICE_KEY: evidence}
    seen, seen_detail = best_weight(grid, seen_values)
    novel, novel_detail = best_weight(grid, novel_values)
    evidence["seen_detail"], evidence["novel_detail"] = seen_detail, novel_detail
    evidence["seen_reason"] = "val mAP@10 of the trained categories" if seen is not None else "no evidence"
    evidence["novel_reason"] = (
        "val mAP@10 of the pseudo-novel categories"
        if novel is not None
        else f"no novel validation category (data.pseudo_novel_fraction is 0?): default {default_novel}"
    )
    seen = 0.0 if seen is None else seen
    novel = default_novel if novel is None else novel
    return {SEEN_TITLE_WEIGHT: seen, NOVEL_TITLE_WEIGHT: novel, CHOICE_KEY: evidence}


def describe(record: dict[str, Any]) -> str:
    """One paragraph a user reads: what the catalogue's titles turned out to be worth."""
    evidence = record.get(CHOICE_KEY) or {}
    grid = evidence.get("grid", [])

    def per_w(key: str) -> str:
        values = evidence.get(key) or []
        return ", ".join(
            f"{w:g}: {'–' if v is None else f'{v:.3f}'}" for w, v in zip(grid, values, strict=False)
        )

    epoch = f" at epoch {evidence['epoch']}" if "epoch" in evidence else ""
    return (
        f"novel-category scorer: title weight {record.get(NOVEL_TITLE_WEIGHT, 1.0):g} chosen{epoch} "
        f"({evidence.get('novel_reason', 'default')}; val pseudo-novel mAP@10 per w: {per_w('val_novel_map@10')}); "
        f"seen-category scorer: title weight {record.get(SEEN_TITLE_WEIGHT, 0.0):g} chosen "
        f"({evidence.get('seen_reason', 'default')}; val seen mAP@10 per w: {per_w('val_seen_map@10')}); "
        f"{evidence.get('titles_present', '?')} validation products have a title"
    )


class ScorerSelection(torch.nn.Module):
    """Scores the validation split under every grid weight at once, in the validation pass.

    The queries of grid weight ``w`` are the category table encoded by ``ClipIta.encode_query_texts`` with
    ``title_weights=(w, w)`` (seen and novel queries are disjoint rows, so one grid serves both choices); all
    ``G x Q`` of them go into one :class:`CategoryRetrievalMetrics` (ranking depth 10) with their table row as query
    id, so relevance and ``R`` are those of the ordinary evaluation.
    """

    def __init__(self, grid: Sequence[float] = DEFAULT_GRID) -> None:
        super().__init__()
        self.grid = check_grid(grid)
        self.metric = CategoryRetrievalMetrics(
            ks=(10,), max_rank=10, ndcg_ks=(), recall_ks=(), ap_normalization="min_r_k"
        )
        self.titles_present = 0
        self.products = 0
        self.novel: torch.Tensor | None = None

    def start(
        self,
        net: ClipIta,
        texts: Sequence[str],
        paths: Sequence[Sequence[str]],
        text_features: torch.Tensor | None,
    ) -> None:
        """Fix the ``G x Q`` queries of this validation epoch and reset the counts."""
        with torch.no_grad():
            queries = [
                net.encode_query_texts(texts, paths, text_features=text_features, title_weights=(w, w))
                for w in self.grid
            ]
        q = len(texts)
        self.novel = net.novel_mask(texts, paths)
        self.metric.set_queries(torch.cat(queries), query_ids=torch.arange(q).repeat(len(self.grid)))
        self.titles_present = 0
        self.products = 0

    def update(self, vectors: torch.Tensor, category_ids: torch.Tensor, batch: dict) -> None:
        """Fold a validation batch's retrieval vectors in and count its products with a title."""
        self.metric.update(vectors, category_ids)
        self.products += int(vectors.shape[0])
        if batch.get("title_mask") is not None:
            self.titles_present += int(torch.as_tensor(batch["title_mask"]).bool().sum())
        elif "title" in batch:
            self.titles_present += sum(bool(str(t).strip()) for t in batch["title"])
        elif "title_features" in batch:
            self.titles_present += int((batch["title_features"].abs().sum(dim=1) > 0).sum())

    def compute(self, titles_present: int | None = None, default_novel: float = 1.0) -> dict[str, Any]:
        """The choice (:func:`choose`) from the grid's per-query mAP@10; ``titles_present`` summed over ranks when
        given (the metric itself syncs across ranks)."""
        per_query = self.metric.compute_per_query()
        g, q = len(self.grid), len(self.novel)
        ap = per_query["map@10"].reshape(g, q).cpu()
        novel = self.novel.cpu()

        measured = ~torch.isnan(ap[0])

        def rows(mask: torch.Tensor) -> torch.Tensor:
            return ap[:, mask & measured]

        titles = self.titles_present if titles_present is None else titles_present
        record = choose(self.grid, rows(~novel), rows(novel), titles, default_novel)
        evidence = record[CHOICE_KEY]
        evidence["seen_queries"] = int((~novel & ~torch.isnan(ap[0])).sum())
        evidence["novel_queries"] = int((novel & ~torch.isnan(ap[0])).sum())
        evidence["products"] = self.products
        chosen = self._chosen(ap, novel, record[SEEN_TITLE_WEIGHT], record[NOVEL_TITLE_WEIGHT])
        if chosen is not None:
            valid = ~torch.isnan(chosen)
            for name, mask in (("all", valid), ("seen", valid & ~novel), ("novel", valid & novel)):
                evidence[f"val_chosen_map@10_{name}"] = float(chosen[mask].mean()) if mask.any() else None
        return record

    def _chosen(
        self, ap: torch.Tensor, novel: torch.Tensor, seen_w: float, novel_w: float
    ) -> torch.Tensor | None:
        """``[Q]`` mAP@10 of every query under the chosen weights (None when a weight is not a grid point)."""
        if seen_w not in self.grid or novel_w not in self.grid:
            return None
        return torch.where(novel, ap[self.grid.index(novel_w)], ap[self.grid.index(seen_w)])
