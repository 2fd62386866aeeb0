"""The one-standard-error rule: choosing among candidates measured on the same queries, in a preference order.

A candidate (a weight, a point of a weight grid) is measured by one value per validation query. The best mean does
not simply win: a candidate earlier in the preference order (the simpler or safer one) wins when it is within one
standard error of the best, so a difference the queries cannot tell from noise never moves the choice. The scorer's
signal weights (:mod:`.scorer_choice`) and the WiSE-FT mix (:mod:`.wise_ft`) are both chosen by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def check_grid(grid: Sequence[float]) -> list[float]:
    """The grid sorted and checked: distinct weights in [0, 1]."""
    values = sorted(float(w) for w in grid)
    if not values or len(set(values)) != len(values) or not all(0.0 <= w <= 1.0 for w in values):
        raise ValueError(f"scorer_grid must be distinct weights in [0, 1], got {list(grid)}")
    return values


def best_point(values: torch.Tensor) -> tuple[int | None, dict[str, Any]]:
    """The row chosen from per-query values ``[P, n]`` (candidate x query, candidates in preference order): the
    *one-standard-error rule*.

    The best mean wins unless an earlier candidate (by the preference order: leaning more on the trained towers) is
    within one standard error of it -- the standard error of the per-query paired difference to the best; then the
    earliest such candidate wins. A difference the validation queries cannot tell from noise therefore never moves
    the scorer away from the preferred one (Breiman et al., *Classification and Regression Trees*, 1984, the 1-SE
    rule). With fewer than two queries the best mean wins (ties: the earlier candidate). None when there is no
    query.
    """
    if values.numel() == 0 or values.shape[1] == 0:
        return None, {}
    values = values.double()
    means = values.mean(dim=1)
    best = int(torch.argmax(means))  # the first maximum: ties go to the earlier candidate
    n = values.shape[1]
    se = [0.0] * values.shape[0]
    if n >= 2:
        diffs = values[best] - values
        se = [float(d.std(unbiased=True) / math.sqrt(n)) for d in diffs]
    chosen = next(i for i in range(values.shape[0]) if float(means[best] - means[i]) <= se[i] + 1e-12)
    return chosen, {"best_mean_index": best, "se_to_best": se}


def best_weight(grid: Sequence[float], values: torch.Tensor) -> tuple[float | None, dict[str, Any]]:
    """:func:`best_point` over a sorted grid of one weight (``values`` ``[G, n]``): the smallest weight within one
    SE of the best mean."""
    grid = [float(w) for w in grid]
    index, detail = best_point(values)
    if index is None:
        return None, detail
    return grid[index], {
        "best_mean_weight": grid[detail["best_mean_index"]],
        "se_to_best": detail["se_to_best"],
    }
