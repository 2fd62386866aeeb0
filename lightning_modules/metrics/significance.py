"""Paired significance tests between two retrieval systems, query by query, with multiple-comparison correction.

Two systems evaluated on the same queries give two per-query vectors (``CategoryRetrievalMetrics.
compute_per_query``). The question "is system A better than B?" is a *paired* question: a hard category is hard
for both, so compare the differences ``d_q = a_q - b_q``, not the two means.

Which test, and why the default is the permutation test:

* ``"permutation"`` (default) -- the paired sign-flip randomisation test. Under the null hypothesis "A and B are
  exchangeable on each query", the sign of each ``d_q`` is a coin flip; the p-value is the fraction of the
  ``2^n`` sign assignments (or ``n_resamples`` random ones) whose mean difference is at least as extreme as the
  observed one. It assumes nothing about the distribution of ``d``, which matters here: per-query P@1 is 0/1,
  AP is bounded with a spike at 0, and many queries tie. Smucker, Allan and Carterette (CIKM 2007) recommend it
  for IR evaluation; it agrees with the t-test when the latter's assumptions hold.
* ``"ttest"`` -- the paired t-test (``scipy.stats.ttest_rel``): assumes the mean difference is ~normal; fine for
  hundreds of queries, and the classic choice in IR papers.
* ``"wilcoxon"`` -- the signed-rank test (``scipy.stats.wilcoxon``): tests the median of ``d`` and drops zero
  differences, which for 0/1 metrics is most queries; it answers a different question than "is the mean better".

Testing many metrics or groups at once inflates false positives: adjust the p-values with Holm (uniformly more
powerful than Bonferroni, same guarantee on the family-wise error rate) via :func:`adjust_p_values`.

References:
    Smucker, Allan, Carterette. *A Comparison of Statistical Significance Tests for Information Retrieval
    Evaluation.* CIKM 2007. Holm. *A Simple Sequentially Rejective Multiple Test Procedure.* Scand. J. Stat. 1979.

Example:
    >>> a = [0.9, 0.8, 0.7, 0.95, 0.85, 0.9, 0.75, 0.8]
    >>> b = [0.5, 0.6, 0.4, 0.55, 0.65, 0.5, 0.45, 0.6]
    >>> stat, p = paired_test(a, b)  # 2^8 = 256 <= n_resamples: exact
    >>> round(stat, 4), round(p, 4)
    (0.3, 0.0078)
    >>> adjust_p_values([0.01, 0.04, 0.03], method="holm").round(2).tolist()
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import scipy.stats

TestMethod = Literal["wilcoxon", "permutation", "ttest"]
Alternative = Literal["two-sided", "greater", "less"]
Correction = Literal["holm", "bonferroni"]


def _paired_finite(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 arrays, keeping the queries where both values are finite (NaN = query not evaluated)."""
    a = np.asarray(getattr(a, "cpu", lambda: a)(), dtype=np.float64).reshape(-1)
    b = np.asarray(getattr(b, "cpu", lambda: b)(), dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same queries, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    method: TestMethod = "permutation",
    n_resamples: int = 10000,
    seed: int = 0,
    alternative: Alternative = "two-sided",
) -> tuple[float, float]:
    """Paired test of system A vs system B on per-query values.

    Pairs where either value is NaN (queries with no relevant product) are dropped first.

    Args:
        a: per-query values of system A (array, list or tensor).
        b: per-query values of system B, same queries in the same order.
        method: ``"permutation"`` (paired sign-flip randomisation test, statistic = mean of ``a - b``),
            ``"ttest"`` (paired t-test, statistic = t) or ``"wilcoxon"`` (signed-rank, statistic as scipy reports
            it: the smaller rank sum for two-sided). See the module docstring for the choice.
        n_resamples: random sign assignments for ``"permutation"``; when ``2^n <= n_resamples`` all are enumerated
            and the p-value is exact.
        seed: seed of the random sign assignments (the p-value is reproducible).
        alternative: ``"two-sided"``, ``"greater"`` (A > B) or ``"less"``.

    Returns:
        ``(statistic, p_value)`` as floats. Identical systems (every difference 0) give ``(0.0, 1.0)``.

    Example:
        >>> paired_test([1, 0, 1, 1], [1, 0, 1, 1])
        (0.0, 1.0)
    """
    a, b = _paired_finite(a, b)
    if a.size == 0:
        raise ValueError("no query has a finite value in both systems")
    d = a - b
    if np.all(d == 0):
        return 0.0, 1.0
    if method == "permutation":
        res = scipy.stats.permutation_test(
            (a, b),
            _mean_difference,
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            alternative=alternative,
            rng=np.random.default_rng(seed),
        )
    elif method == "ttest":
        res = scipy.stats.ttest_rel(a, b, alternative=alternative)
    elif method == "wilcoxon":
        res = scipy.stats.wilcoxon(a, b, alternative=alternative)
    else:
        raise ValueError(f"unknown test {method!r}; expected 'permutation', 'ttest' or 'wilcoxon'")
    return float(res.statistic), float(res.pvalue)


def adjust_p_values(
    p_values: Sequence[float] | np.ndarray | Mapping[str, float], method: Correction = "holm"
) -> np.ndarray | dict[str, float]:
    """Family-wise error correction of several p-values (one per metric, group or system pair).

    * ``"bonferroni"``: ``min(1, m * p)``.
    * ``"holm"``: step-down Bonferroni. Sort ascending; the ``i``-th smallest (from 1) gets
      ``(m - i + 1) * p_(i)``, made non-decreasing along the sorted order and capped at 1. Rejects everything
      Bonferroni rejects, and sometimes more.

    Args:
        p_values: a sequence of p-values, or ``{name: p}``.
        method: ``"holm"`` or ``"bonferroni"``.

    Returns:
        The adjusted p-values in the input order (a dict when a dict was given). Compare them with alpha directly.

    Example:
        >>> adjust_p_values({"p@1": 0.01, "map@10": 0.02}, method="bonferroni")
        {'p@1': 0.02, 'map@10': 0.04}
    """
    if isinstance(p_values, Mapping):
        names = list(p_values)
        adjusted = adjust_p_values(np.array([p_values[n] for n in names], dtype=np.float64), method)
        return {n: float(v) for n, v in zip(names, adjusted, strict=True)}
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    m = p.size
    if method == "bonferroni":
        return np.minimum(1.0, p * m)
    if method != "holm":
        raise ValueError(f"unknown correction {method!r}; expected 'holm' or 'bonferroni'")
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty_like(p)
    out[order] = np.minimum(1.0, scaled)
    return out


def compare_per_query(
    a: Mapping[str, Sequence[float] | np.ndarray],
    b: Mapping[str, Sequence[float] | np.ndarray],
    names: Sequence[str] | None = None,
    method: TestMethod = "permutation",
    correction: Correction = "holm",
    n_resamples: int = 10000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Test every metric two systems share and correct the p-values as one family.

    Args:
        a: ``{metric: per-query values}`` of system A (``compute_per_query`` output).
        b: the same for system B.
        names: metrics to test (default: every name in both, except ``num_relevant``).
        method: the paired test (:func:`paired_test`).
        correction: ``"holm"`` or ``"bonferroni"`` across the tested metrics.
        n_resamples: for the permutation test.
        seed: for the permutation test.

    Returns:
        ``{metric: {"mean_a", "mean_b", "statistic", "p_value", "p_adjusted", "num_queries"}}``.
    """
    if names is None:
        names = [n for n in a if n in b and n != "num_relevant"]
    rows: dict[str, dict[str, float]] = {}
    for name in names:
        x, y = _paired_finite(a[name], b[name])
        stat, p = paired_test(x, y, method=method, n_resamples=n_resamples, seed=seed)
        rows[name] = {
            "mean_a": float(x.mean()),
            "mean_b": float(y.mean()),
            "statistic": stat,
            "p_value": p,
            "num_queries": float(x.size),
        }
    adjusted = adjust_p_values({n: r["p_value"] for n, r in rows.items()}, method=correction)
    for name, p in adjusted.items():
        rows[name]["p_adjusted"] = p
    return rows
