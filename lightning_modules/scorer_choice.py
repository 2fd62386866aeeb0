"""Choosing the scorer from evidence: how much a query's score leans on each signal, per catalogue.

A network with ``route_novel_categories`` and/or ``image_evidence`` scores a query ``q`` against a product ``p`` as
the convex mix

    score(q, p) = (1 - w) * [(1 - v) * <category(q), fused(p)> + v * <category(q), image(p)>] + w * <name(q), title(p)>

of its trained fused towers, its image-only tower (``image_evidence``) and the zero-shot match of the category name
with the product's frozen title embedding (``route_novel_categories``). ``w`` is the *title* weight, ``v`` the
*image-only* weight; each has one value for the categories the network trained on (``seen_title_weight`` default 0,
``seen_image_weight`` default 0) and one for novel ones (``novel_title_weight`` default 1: today's routing,
``novel_image_weight`` default 0). On a catalogue whose titles name the category the title match is worth a lot for
novel categories; on one whose titles are noise it is worth nothing, the fused towers carry the noise too, and the
image alone (CLIP-I's scorer, ``w = 0, v = 1``) should answer. Which one holds is measured, not assumed:
:class:`ScorerSelection` evaluates a grid of weight *points* (every combination of the grid's values over the
network's signals) on the validation split, in the same pass as validation, and :func:`choose` picks

* the novel weights by the mean mAP@10 of the *novel* validation queries (the pseudo-novel leaves that
  ``data.pseudo_novel_fraction`` holds out of training: categories with validation products the model never
  trained on);
* the seen weights by the mean mAP@10 of the trained validation queries (every level).

With ``lexical_signal`` a third weight ``l`` (``seen_lexical_weight`` / ``novel_lexical_weight``, default 0) adds
``l * bm25n(q, p)``, a normalised BM25 match of the query text with the product's title and attributes
(:meth:`ClipIta.score`).

The rule is the *one-standard-error rule* over the points in a fixed preference order
(:func:`.one_standard_error.best_point`): the
best mean wins unless a point earlier in the order is within one standard error of it; the order is lexicographic
in (title weight, lexical weight, image-only weight), smallest first. So the rule prefers, in this order, (1) not to
lean on the frozen title match and (2) not to add the BM25 match, the signals a catalogue's text can make pure
noise, (3) the fused towers the recipe trained over the image-only tower. The default scorer (the fused towers) is the first point, and every other one must beat
it by more than the validation queries' noise. Without product titles in the validation split the title weights
are 0 and only the other signals are chosen; without novel validation queries the novel weights keep their
defaults. The choice and its evidence go into ``ClipIta.retrieval``, hence into the checkpoint, and every consumer
(test, leaderboard, index, search, gallery) scores through ``ClipIta.encode_query_texts``, which reads it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from clipita_core.weights import DEFAULTS, DESCENDANT_WEIGHT, NOVEL_PARENT_WEIGHT, weight_key

from .metrics import CategoryRetrievalMetrics
from .model import ClipIta
from .one_standard_error import best_point, check_grid

DEFAULT_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
TAXONOMY_GRID: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)  # tree-term weights tried (taxonomy_scoring)
CHOICE_KEY = "scorer_choice"  # the evidence, beside the weights in ClipIta.retrieval
SIGNALS: tuple[str, ...] = (
    "title",
    "lexical",
    "image",
)  # the 1-SE rule's preference order (module docstring)
NOVEL_DEFAULTS = {
    s: DEFAULTS[weight_key("novel", s)] for s in SIGNALS
}  # a novel query's weights without evidence
SIGNAL_NAMES = {"title": "title weight", "lexical": "lexical weight", "image": "image-only weight"}
Point = dict[str, float]


def network_signals(net: ClipIta) -> list[str]:
    """The signals whose weights a network's scorer can choose: ``title`` (with ``route_novel_categories``),
    ``lexical`` (with ``lexical_signal``) and ``image`` (with ``image_evidence``), in :data:`SIGNALS` order."""
    active = {
        "title": net.route_novel_categories,
        "lexical": net.lexical is not None,
        "image": net.image_evidence,
    }
    return [s for s in SIGNALS if active[s]]


def grid_points(grid: Sequence[float], signals: Sequence[str]) -> list[Point]:
    """Every combination of the grid's weights over ``signals``, in the 1-SE rule's preference order
    (lexicographic in :data:`SIGNALS` order, smallest first: the all-zero point, the fused towers, comes first)."""
    grid = check_grid(grid)
    unknown = [s for s in signals if s not in SIGNALS]
    if unknown or not signals:
        raise ValueError(f"scorer signals must be a non-empty subset of {list(SIGNALS)}, got {list(signals)}")
    ordered = [s for s in SIGNALS if s in signals]
    return [dict(zip(ordered, combo, strict=True)) for combo in itertools.product(grid, repeat=len(ordered))]


def _means(values: torch.Tensor, g: int) -> list[float | None]:
    if values.numel() == 0 or values.shape[1] == 0:
        return [None] * g
    return [float(v) for v in values.double().mean(dim=1)]


def choose(
    points: Sequence[Point] | Sequence[float],
    seen_values: torch.Tensor,
    novel_values: torch.Tensor,
    titles_present: int,
    default_novel: float = 1.0,
    min_queries: int = 1,
) -> dict[str, Any]:
    """The retrieval record of a choice: ``{seen_<signal>_weight, novel_<signal>_weight, ..., scorer_choice:
    evidence}`` for every signal of the points.

    Args:
        points: the weight points tried, in preference order (:func:`grid_points`); a plain sorted grid of numbers
            means title weights only.
        seen_values: ``[P, n]`` validation mAP@10 of the trained queries per point (queries with a relevant
            validation product only).
        novel_values: ``[P, m]`` the same for the novel queries.
        titles_present: validation products with a title; 0 fixes the title weights at 0 (nothing to match).
        default_novel: ``novel_title_weight`` when there is no novel validation query.
        min_queries: a side with fewer validation queries than this (but at least one) keeps the first allowed
            point, the preferred scorer: with two or three queries even the standard error is noise (one pseudo-novel
            leaf hit by chance moved a noise-title catalogue to the title match).
    """
    points = [p if isinstance(p, dict) else {"title": float(p)} for p in points]
    signals = list(points[0])
    evidence: dict[str, Any] = {
        "grid": sorted({p[s] for p in points for s in signals}),
        "signals": signals,
        "points": [dict(p) for p in points],
        "rule": (
            "one-standard-error: the first point within one SE (paired) of the best mean, points ordered by "
            f"({', '.join(SIGNAL_NAMES[s] for s in signals)}), smallest first"
        ),
        "val_seen_map@10": _means(seen_values, len(points)),
        "val_novel_map@10": _means(novel_values, len(points)),
        "titles_present": int(titles_present),
    }
    allowed = [i for i, p in enumerate(points) if titles_present > 0 or p.get("title", 0.0) == 0.0]
    defaults = {"seen": {s: 0.0 for s in signals}, "novel": {**NOVEL_DEFAULTS, "title": default_novel}}
    record: dict[str, Any] = {}
    for side, values in (("seen", seen_values), ("novel", novel_values)):
        index = None
        n = values.shape[1] if values.ndim == 2 else 0
        if 0 < n < min_queries:
            index = allowed[0]
            evidence[f"{side}_detail"] = {"queries": n, "min_queries": min_queries}
        elif len(allowed) > 1 or (allowed and titles_present > 0):
            index, detail = best_point(values[allowed] if values.numel() else values)
            if index is not None:
                index = allowed[index]
                detail["best_mean_index"] = allowed[detail["best_mean_index"]]
            evidence[f"{side}_detail"] = detail
        chosen = points[index] if index is not None else None
        if chosen is None and titles_present == 0:
            chosen = {s: 0.0 for s in signals}  # no title to match: the trained towers
            reason = "no product titles in validation: the trained towers"
        elif chosen is None:
            chosen = {s: defaults[side].get(s, 0.0) for s in signals}
            reason = (
                "no evidence"
                if side == "seen"
                else f"no novel validation category (data.pseudo_novel_fraction is 0?): default {default_novel}"
            )
        elif 0 < n < min_queries:
            reason = f"only {n} validation queries (fewer than {min_queries}): the preferred scorer"
        else:
            what = "the trained categories" if side == "seen" else "the pseudo-novel categories"
            reason = f"val mAP@10 of {what}"
            if titles_present == 0:
                reason += " (no product titles in validation: title weight 0)"
        evidence[f"{side}_reason"] = reason
        for s in signals:
            record[weight_key(side, s)] = float(chosen[s])
    record[CHOICE_KEY] = evidence
    return record


def describe(record: dict[str, Any]) -> str:
    """One paragraph a user reads: what the catalogue's titles (and the image alone) turned out to be worth."""
    evidence = record.get(CHOICE_KEY) or {}
    signals = evidence.get("signals") or ["title"]
    points = evidence.get("points") or [{"title": w} for w in evidence.get("grid", [])]

    def label(p: Point) -> str:
        return ", ".join(f"{p.get(s, 0.0):g}" for s in signals)

    def per_w(key: str) -> str:
        """The preferred point, the chosen one and the best mean (all points: ``retrieval[CHOICE_KEY]``)."""
        values = evidence.get(key) or []
        if len(points) <= 5:
            return ", ".join(
                f"{label(p)}: {'–' if v is None else f'{v:.3f}'}"
                for p, v in zip(points, values, strict=False)
            )
        side = "novel" if "novel" in key else "seen"
        chosen = {s: record.get(weight_key(side, s)) for s in signals}
        shown = {0: "preferred"}
        measured = [i for i, v in enumerate(values) if v is not None]
        if measured:
            shown.setdefault(max(measured, key=lambda i: values[i]), "best")
        at = next((i for i, p in enumerate(points) if all(p.get(s) == chosen[s] for s in signals)), None)
        if at is not None:
            shown[at] = "chosen" if at not in shown else f"{shown[at]}, chosen"
        return (
            ", ".join(
                f"{label(points[i])}: {'–' if i >= len(values) or values[i] is None else f'{values[i]:.3f}'} "
                f"({what})"
                for i, what in sorted(shown.items())
            )
            + f" ({len(points)} points tried)"
        )

    def weights(side: str) -> str:
        return ", ".join(
            f"{SIGNAL_NAMES[s]} {record.get(weight_key(side, s), DEFAULTS[weight_key(side, s)]):g}"
            for s in signals
        )

    per = "w" if signals == ["title"] else f"({', '.join(SIGNAL_NAMES[s] for s in signals)})"
    epoch = f" at epoch {evidence['epoch']}" if "epoch" in evidence else ""
    return (
        f"novel-category scorer: {weights('novel')} chosen{epoch} "
        f"({evidence.get('novel_reason', 'default')}; val pseudo-novel mAP@10 per {per}: "
        f"{per_w('val_novel_map@10')}); "
        f"seen-category scorer: {weights('seen')} chosen "
        f"({evidence.get('seen_reason', 'default')}; val seen mAP@10 per {per}: {per_w('val_seen_map@10')}); "
        f"{evidence.get('titles_present', '?')} validation products have a title"
        + (
            f"; tree terms: novel parent weight {record.get(NOVEL_PARENT_WEIGHT, 0.0):g}, "
            f"descendant weight {record.get(DESCENDANT_WEIGHT, 0.0):g} (grid {evidence['tree']['grid']})"
            if "tree" in evidence
            else ""
        )
    )


class ScorerSelection(torch.nn.Module):
    """Scores the validation split under every grid point at once, in the validation pass.

    The queries of point ``{title: w, image: v}`` are the category table encoded by ``ClipIta.encode_query_texts``
    with ``title_weights=(w, w)`` and ``image_only_weights=(v, v)`` (seen and novel queries are disjoint rows, so one
    grid serves both choices); all ``P x Q`` of them go into one :class:`CategoryRetrievalMetrics` (ranking depth
    10) with their table row as query id, so relevance and ``R`` are those of the ordinary evaluation.

    Args:
        grid: the weights tried for each signal.
        signals: the signals chosen (:func:`network_signals` of the network; default: the title weight only).
        min_queries: see :func:`choose`.
        taxonomy: also choose the tree terms of :mod:`.taxonomy_scoring` -- ``novel_parent_weight`` on the novel
            queries, ``descendant_weight`` on the trained ones -- over :data:`TAXONOMY_GRID`, one weight at a time
            with the other signals at the network's current choice (coordinate-wise: each validation epoch moves
            from the previous epoch's choice), 0 preferred by the same 1-SE rule.
    """

    def __init__(
        self,
        grid: Sequence[float] = DEFAULT_GRID,
        signals: Sequence[str] = ("title",),
        min_queries: int = 1,
        taxonomy: bool = False,
    ) -> None:
        super().__init__()
        self.taxonomy_grid = list(TAXONOMY_GRID) if taxonomy else []
        if min_queries < 1:
            raise ValueError(f"scorer_min_queries must be >= 1, got {min_queries}")
        self.min_queries = min_queries
        self.grid = check_grid(grid)
        self.points = grid_points(self.grid, signals)
        self.metric = CategoryRetrievalMetrics(
            ks=(10,), max_rank=10, ndcg_ks=(), recall_ks=(), ap_normalization="min_r_k"
        )
        self.titles_present = 0
        self.products = 0
        self.novel: torch.Tensor | None = None
        self.lexical = None  # (signal, vocabulary [V], idf [Q, V], weight per query row [P * Q]) when scored

    def start(
        self,
        net: ClipIta,
        texts: Sequence[str],
        paths: Sequence[Sequence[str]],
        text_features: torch.Tensor | None,
    ) -> None:
        """Fix the ``P x Q`` queries of this validation epoch and reset the counts."""
        with torch.no_grad():
            queries = [
                net.encode_query_texts(
                    texts,
                    paths,
                    text_features=text_features,
                    title_weights=(p.get("title", 0.0),) * 2,
                    image_only_weights=(p.get("image", 0.0),) * 2,
                )
                for p in self.points
            ]
            parent, descendants = net.scorer.weights.taxonomy
            for t in [(w, descendants) for w in self.taxonomy_grid] + [
                (parent, w) for w in self.taxonomy_grid
            ]:
                queries.append(
                    net.encode_query_texts(texts, paths, text_features=text_features, taxonomy_weights=t)
                )
        q = len(texts)
        self.novel = net.novel_mask(texts, paths)
        queries = torch.cat(queries)
        self.metric.set_queries(queries, query_ids=torch.arange(q).repeat(len(queries) // q))
        self.lexical = None
        if (
            any(p.get("lexical", 0.0) > 0 for p in self.points)
            and net.lexical is not None
            and net.lexical.fitted
        ):
            vocab, idf = net.lexical.query_weights(list(texts))
            weight = torch.tensor([p.get("lexical", 0.0) for p in self.points]).repeat_interleave(q)
            seen_l, novel_l = net.scorer.weights.pair("lexical")
            current = torch.where(self.novel, novel_l, seen_l).to(weight.dtype)
            weight = torch.cat([weight, current.repeat(2 * len(self.taxonomy_grid))])
            self.lexical = (net.lexical, vocab, idf, weight.to(queries))
        self.titles_present = 0
        self.products = 0

    def update(self, vectors: torch.Tensor, category_ids: torch.Tensor, batch: dict) -> None:
        """Fold a validation batch's retrieval vectors (and its ``lexical_tokens``, when the grid has lexical
        weights) in and count its products with a title."""
        tokens = batch.get("lexical_tokens")
        if self.lexical is not None and tokens is not None:
            signal, vocab, idf, weight = self.lexical
            queries = self.metric.query_embeddings.to(vectors)
            bm25 = signal.scores((vocab, idf), tokens.to(vectors.device)).to(vectors)
            rows = len(self.points) + 2 * len(self.taxonomy_grid)
            scores = queries @ vectors.T + weight.to(vectors)[:, None] * bm25.repeat(rows, 1)
            self.metric.update_scores(scores, category_ids)
        else:
            self.metric.update(vectors, category_ids)
        self.products += int(vectors.shape[0])
        if batch.get("title_mask") is not None:
            self.titles_present += int(torch.as_tensor(batch["title_mask"]).bool().sum())
        elif "title" in batch:
            self.titles_present += sum(bool(str(t).strip()) for t in batch["title"])
        elif "title_features" in batch:
            self.titles_present += int((batch["title_features"].abs().sum(dim=1) > 0).sum())

    def compute(
        self,
        titles_present: int | None = None,
        default_novel: float = 1.0,
        kept: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The choice (:func:`choose`) from the grid's per-query mAP@10; ``titles_present`` summed over ranks when
        given (the metric itself syncs across ranks). Its ``val_chosen_map@10_*`` evidence is validation under the
        chosen weights, or under ``kept``'s (a record chosen earlier and kept, e.g. by a refit) when given."""
        per_query = self.metric.compute_per_query()
        g, q, t = len(self.points), len(self.novel), len(self.taxonomy_grid)
        ap = per_query["map@10"].reshape(g + 2 * t, q).cpu()
        ap, tree_ap = ap[:g], ap[g:]
        novel = self.novel.cpu()

        measured = ~torch.isnan(ap[0])

        def rows(mask: torch.Tensor) -> torch.Tensor:
            return ap[:, mask & measured]

        titles = self.titles_present if titles_present is None else titles_present
        record = choose(self.points, rows(~novel), rows(novel), titles, default_novel, self.min_queries)
        evidence = record[CHOICE_KEY]
        evidence["seen_queries"] = int((~novel & measured).sum())
        evidence["novel_queries"] = int((novel & measured).sum())
        evidence["products"] = self.products
        if t:
            self._choose_tree(tree_ap, novel & measured, ~novel & measured, record)
        chosen = self._chosen(ap, novel, record if kept is None else kept)
        if chosen is not None:
            valid = ~torch.isnan(chosen)
            for name, mask in (("all", valid), ("seen", valid & ~novel), ("novel", valid & novel)):
                evidence[f"val_chosen_map@10_{name}"] = float(chosen[mask].mean()) if mask.any() else None
        return record

    def _choose_tree(
        self, tree_ap: torch.Tensor, novel: torch.Tensor, seen: torch.Tensor, record: dict[str, Any]
    ) -> None:
        """``novel_parent_weight`` by the novel queries, ``descendant_weight`` by the trained ones (1-SE rule,
        smallest weight preferred; too few queries keep 0), with their evidence."""
        t = len(self.taxonomy_grid)
        evidence = record[CHOICE_KEY].setdefault("tree", {"grid": self.taxonomy_grid})
        for key, values, mask in (
            (NOVEL_PARENT_WEIGHT, tree_ap[:t], novel),
            (DESCENDANT_WEIGHT, tree_ap[t:], seen),
        ):
            n = int(mask.sum())
            index, _ = best_point(values[:, mask]) if n >= self.min_queries else (None, {})
            record[key] = float(self.taxonomy_grid[index]) if index is not None else 0.0
            evidence[key] = {"val_map@10": _means(values[:, mask], t), "queries": n}

    def index_of(self, record: dict[str, Any], side: str) -> int | None:
        """The grid point of a record's ``side`` (``seen``/``novel``) weights; None when not a grid point."""
        signals = list(self.points[0])
        wanted = {s: float(record.get(weight_key(side, s), -1.0)) for s in signals}
        return next((i for i, p in enumerate(self.points) if p == wanted), None)

    def _chosen(self, ap: torch.Tensor, novel: torch.Tensor, record: dict[str, Any]) -> torch.Tensor | None:
        """``[Q]`` mAP@10 of every query under the record's weights (None when a weight is not a grid point)."""
        seen_i, novel_i = self.index_of(record, "seen"), self.index_of(record, "novel")
        if seen_i is None or novel_i is None:
            return None
        return torch.where(novel, ap[novel_i], ap[seen_i])
