"""Hierarchy consistency in the leaderboard: HC@10 of every leaf query, per row and split seed, and its summary per
tree (:mod:`lightning_modules.metrics.hierarchy_consistency` defines it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lightning_modules.metrics import hierarchy_consistency, macro_over_trees, per_tree_consistency

from .run import LeaderboardRun
from .statistics import seed_summary

HC_KEY = "hc@10"  # per-query key in a row's results (NaN for inner nodes)
HC_K = 10


def ancestor_table(paths: Sequence[tuple[str, ...]]) -> torch.Tensor:
    """``[Q, L]`` table ids of each row's path, root first, the row itself last, ``-1`` padded."""
    index = {tuple(p): i for i, p in enumerate(paths)}
    depth = max((len(p) for p in paths), default=1)
    out = torch.full((len(paths), depth), -1, dtype=torch.long)
    for i, path in enumerate(paths):
        for d in range(1, len(path) + 1):
            out[i, d - 1] = index[tuple(path[:d])]
    return out


def add_consistency(
    per_query: dict[str, np.ndarray],
    ranking: torch.Tensor,
    paths: Sequence[tuple[str, ...]],
    leaves: np.ndarray,
) -> dict[str, np.ndarray]:
    """``per_query`` with ``hc@10`` added, from the row's full kept ranking (``[Q, max_rank]``, every table row a
    query) and the gallery's ``num_relevant``."""
    values = hierarchy_consistency(
        ranking,
        ancestor_table(paths),
        torch.as_tensor(per_query["num_relevant"]).long(),
        k=HC_K,
        leaf_mask=torch.as_tensor(leaves, dtype=torch.bool),
    )
    return {**per_query, HC_KEY: values.numpy()}


def consistency_summary(run: LeaderboardRun) -> dict[str, dict[str, Any]]:
    """``{row: {"leaves"|"seen"|"unseen"|"macro_over_trees"|"tree:<root>": {"mean", "std", "values"}}}``: means over
    each seed's leaf queries (or per tree, then over trees), then mean ± sample std over seeds. Rows whose results
    lack ``hc@10`` (runs saved before it existed) are left out."""
    out: dict[str, dict[str, Any]] = {}
    seeds = run.spec.split_seeds
    for row in run.ran:
        results = run.results[row]
        if any(HC_KEY not in results[s].per_query for s in seeds if s in results):
            continue
        per_seed: dict[str, list[float]] = {}
        for seed in seeds:
            if seed not in results:
                continue
            context, values = run.contexts[seed], results[seed].per_query[HC_KEY]
            for name, group in (
                ("leaves", "specific"),
                ("seen", "specific_seen"),
                ("unseen", "specific_unseen"),
            ):
                mask = context.groups.get(group)
                chosen = values[mask] if mask is not None else np.zeros(0)
                chosen = chosen[np.isfinite(chosen)]
                per_seed.setdefault(name, []).append(float(chosen.mean()) if chosen.size else math.nan)
            trees = per_tree_consistency(torch.as_tensor(values), [p[0] for p in context.paths])
            per_seed.setdefault("macro_over_trees", []).append(macro_over_trees(trees))
            for root, value in trees.items():
                per_seed.setdefault(f"tree:{root}", []).append(value)
        out[row] = {name: seed_summary(values) for name, values in per_seed.items()}
    return out


def consistency_section(run: LeaderboardRun, summary: dict[str, dict[str, Any]]) -> list[str]:
    """The markdown section: one line per row (leaves, seen, unseen, macro over trees, then each tree)."""
    if not summary:
        return []
    seeds = len(run.spec.split_seeds)
    trees = sorted({k for cells in summary.values() for k in cells if k.startswith("tree:")})

    def cell(c: dict[str, Any] | None) -> str:
        if c is None or math.isnan(c["mean"]):
            return "–"
        return f"{c['mean']:.3f}" + (f" ± {c['std']:.3f}" if seeds > 1 else "")

    header = ["Model", "leaves", "seen leaves", "unseen leaves", "macro over trees", *[t[5:] for t in trees]]
    lines = [
        "## Hierarchy consistency (HC@10)",
        "",
        f"Share of a leaf query's top-{HC_K} products that every ancestor of the leaf also retrieves within its own "
        "R-precision cut-off (max(10, R)); in the spirit of ProTeCt's hierarchical consistent accuracy "
        "(`lightning_modules/metrics/hierarchy_consistency.py` defines it). Mean over leaf queries, per tree, and "
        "the macro mean over trees; ± is the std over split seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in run.ran:
        if row not in summary:
            continue
        cells = summary[row]
        values = [cells.get(k) for k in ("leaves", "seen", "unseen", "macro_over_trees")]
        lines.append(
            "| " + " | ".join([row, *map(cell, values), *[cell(cells.get(t)) for t in trees]]) + " |"
        )
    return [*lines, ""]
