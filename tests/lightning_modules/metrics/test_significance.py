"""Paired significance tests and p-value corrections against brute force and scipy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats
import torch

from lightning_modules.metrics.significance import adjust_p_values, compare_per_query, paired_test


def exact_sign_flip_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of the mean difference over all 2^n sign flips, as scipy defines two-sided (2 * min tail)."""
    d = a - b
    observed = d.mean()
    flips = np.array([np.mean(d * np.array(s)) for s in itertools.product([1, -1], repeat=len(d))])
    eps = 1e-12
    greater, less = np.mean(flips >= observed - eps), np.mean(flips <= observed + eps)
    return min(1.0, 2 * min(greater, less))


@pytest.mark.parametrize("seed", range(3))
def test_permutation_is_exact_sign_flip_for_small_n(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.random(9), rng.random(9)
    stat, p = paired_test(a, b, method="permutation", n_resamples=10000)
    assert stat == pytest.approx(np.mean(a - b))
    assert p == pytest.approx(exact_sign_flip_p(a, b))


def test_permutation_random_resampling_is_seeded_and_close_to_exact() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(40)
    b = a - 0.05 + rng.normal(0, 0.2, 40)
    p1 = paired_test(a, b, n_resamples=2000, seed=1)[1]
    assert p1 == paired_test(a, b, n_resamples=2000, seed=1)[1]
    t_p = scipy.stats.ttest_rel(a, b).pvalue  # n = 40: the t approximation is close to the randomisation test
    assert abs(p1 - t_p) < 0.05


def test_ttest_and_wilcoxon_are_scipys() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(30), rng.random(30)
    ref_t = scipy.stats.ttest_rel(a, b)
    assert paired_test(a, b, method="ttest") == pytest.approx((ref_t.statistic, ref_t.pvalue))
    ref_w = scipy.stats.wilcoxon(a, b)
    assert paired_test(a, b, method="wilcoxon") == pytest.approx((ref_w.statistic, ref_w.pvalue))
    greater = paired_test(a + 0.5, b, method="ttest", alternative="greater")[1]
    assert greater < 1e-3


def test_nan_queries_are_dropped_and_tensors_accepted() -> None:
    a = torch.tensor([1.0, 0.0, float("nan"), 1.0, 1.0, 1.0, 1.0])
    b = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0, float("nan")])
    stat, p = paired_test(a, b)
    assert stat == pytest.approx(4 / 5)
    assert p == pytest.approx(exact_sign_flip_p(np.array([1, 0, 1, 1, 1.0]), np.zeros(5)))


def test_identical_systems_and_errors() -> None:
    assert paired_test([0.5, 0.2], [0.5, 0.2], method="wilcoxon") == (0.0, 1.0)
    with pytest.raises(ValueError, match="same queries"):
        paired_test([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        paired_test([float("nan")], [1.0])
    with pytest.raises(ValueError, match="unknown test"):
        paired_test([1.0, 0.0], [0.0, 1.0], method="sign")  # type: ignore[arg-type]


def test_holm_and_bonferroni() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(adjust_p_values(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(adjust_p_values(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    assert (adjust_p_values(p, "holm") <= adjust_p_values(p, "bonferroni")).all()
    assert adjust_p_values([0.9, 0.8], "holm").max() == 1.0
    assert adjust_p_values({"x": 0.2}, "holm") == {"x": 0.2}


def test_compare_per_query() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(50)
    a = {"p@1": base + 0.3, "map@10": base, "num_relevant": np.ones(50)}
    b = {"p@1": base, "map@10": base + rng.normal(0, 0.01, 50)}
    rows = compare_per_query(a, b, n_resamples=500)
    assert set(rows) == {"p@1", "map@10"}
    assert rows["p@1"]["p_adjusted"] < 0.05 and rows["p@1"]["mean_a"] > rows["p@1"]["mean_b"]
    expected = adjust_p_values({n: r["p_value"] for n, r in rows.items()}, "holm")
    assert {n: r["p_adjusted"] for n, r in rows.items()} == expected
    assert rows["map@10"]["num_queries"] == 50
