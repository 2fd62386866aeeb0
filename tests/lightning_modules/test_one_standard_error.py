"""The one-standard-error rule: the best mean wins only by more than one standard error of the paired difference."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.one_standard_error import best_weight, check_grid


def test_one_standard_error_rule_and_fallbacks() -> None:
    grid = [0.0, 0.5, 1.0]
    clear = torch.tensor([[0.1, 0.2, 0.1, 0.2], [0.3, 0.4, 0.3, 0.4], [0.8, 0.9, 0.8, 0.9]])
    assert best_weight(grid, clear)[0] == 1.0  # the title match wins on every query
    noisy = torch.tensor([[0.0, 0.3, 0.0, 0.1], [0.0, 0.0, 0.2, 0.0], [0.1, 0.0, 0.0, 0.4]])
    weight, detail = best_weight(grid, noisy)
    assert detail["best_mean_weight"] == 1.0 and weight == 0.0  # best by a margin below one SE: the towers
    assert (
        best_weight(grid, torch.tensor([[0.2], [0.4], [0.4]]))[0] == 0.5
    )  # one query: best, ties to smaller
    assert best_weight(grid, torch.zeros(3, 0))[0] is None


@pytest.mark.parametrize("grid", [[], [0.5, 0.5], [0.0, 1.5]])
def test_a_grid_must_be_distinct_weights_in_the_unit_interval(grid: list[float]) -> None:
    with pytest.raises(ValueError, match="distinct weights in \\[0, 1\\]"):
        check_grid(grid)
