"""Numbers from a run: per-setting means over seeds, paired significance tests, error counts, the ordering verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .run import LeaderboardRun

# (key, column label, ceiling key shown beside it)
from .spec import BETTER, CEILINGS, ERROR_KS, LABELS, SETTING_ORDER, TESTED_METRICS, WORSE


# ------------------------------------------------------------------------------------------------- statistics
def settings_of(run: LeaderboardRun) -> list[str]:
    """The settings present in any seed, in reading order."""
    names: list[str] = []
    for context in run.contexts.values():
        names += [g for g in context.groups if g not in names]
    known = [s for s in SETTING_ORDER if s in names]
    return known + sorted(n for n in names if n not in known)


def _group_values(run: LeaderboardRun, row: str, seed: int, group: str, metric: str) -> np.ndarray:
    """Per-query values of one group on one seed, NaN for queries without a relevant product (or absent)."""
    context = run.contexts[seed]
    mask = context.groups.get(group)
    if mask is None:
        return np.zeros(0)
    return run.results[row][seed].per_query[metric][mask]


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def seed_summary(values: list[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of one number per split seed: NaN seeds left out of the mean and the sample std
    (ddof=1; 0 with one seed)."""
    finite = [v for v in values if not math.isnan(v)]
    return {
        "mean": float(np.mean(finite)) if finite else math.nan,
        "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else (0.0 if finite else math.nan),
        "values": values,
    }


def summarize(run: LeaderboardRun) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{row: {setting: {metric: {"mean", "std", "values", "num_queries"}}}}``; std is the sample std (ddof=1)."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    metrics = [*TESTED_METRICS, *CEILINGS]
    for row in run.ran:
        out[row] = {}
        for setting in settings_of(run):
            cells: dict[str, dict[str, Any]] = {}
            for metric in metrics:
                per_seed = [_group_values(run, row, s, setting, metric) for s in run.spec.split_seeds]
                cells[metric] = {
                    **seed_summary([_mean(v) for v in per_seed]),
                    "num_queries": [int(np.isfinite(v).sum()) for v in per_seed],
                }
            out[row][setting] = cells
    return out


def _pooled(run: LeaderboardRun, row: str, setting: str, metric: str) -> np.ndarray:
    """Per-query values pooled over split seeds (seed-major): the pairs of a paired test."""
    return np.concatenate([_group_values(run, row, s, setting, metric) for s in run.spec.split_seeds])


def _test_pairs(run: LeaderboardRun, pairs: Sequence[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    """Paired tests of ``(row_a, row_b, setting, metric)``; one Holm/Bonferroni family over all of them."""
    from lightning_modules.metrics import adjust_p_values, paired_test

    spec = run.spec
    tests: list[dict[str, Any]] = []
    for a, b, setting, metric in pairs:
        x, y = _pooled(run, a, setting, metric), _pooled(run, b, setting, metric)
        keep = np.isfinite(x) & np.isfinite(y)
        if not keep.any():
            continue
        stat, p = paired_test(x[keep], y[keep], method=spec.test, n_resamples=spec.n_resamples, seed=0)
        tests.append(
            {
                "row": a, "versus": b, "setting": setting, "metric": metric, "statistic": stat,
                "p_value": p, "mean_difference": float(np.mean(x[keep] - y[keep])), "num_pairs": int(keep.sum()),
            }
        )  # fmt: skip
    if tests:
        adjusted = adjust_p_values([t["p_value"] for t in tests], method=spec.correction)
        for t, p in zip(tests, adjusted, strict=True):
            t["p_adjusted"] = float(p)
            significant = p < spec.alpha and t["mean_difference"] != 0
            t["mark"] = (BETTER if t["mean_difference"] > 0 else WORSE) if significant else ""
    return tests


def significance(run: LeaderboardRun) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Every row that ran against the reference: ``{row: {setting: {metric: test}}}``.

    Per row, the tests over all settings x metrics are one family (Holm by default); per-query values are pooled
    over the split seeds, so a pair is (seed, category).
    """
    reference = run.spec.reference
    if reference is None or reference not in run.results:
        return {}
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for row in run.ran:
        if row == reference:
            continue
        pairs = [(row, reference, s, m) for s in settings_of(run) for m in TESTED_METRICS]
        for t in _test_pairs(run, pairs):
            out.setdefault(row, {}).setdefault(t["setting"], {})[t["metric"]] = t
    return out


def error_counts(run: LeaderboardRun) -> dict[str, dict[str, dict[str, int]]]:
    """The paper's error analysis per row and setting, counts summed over split seeds: wrong items among the top-1
    and top-10 by same tree / different tree and depth gap (:func:`lightning_modules.metrics.error_analysis`)."""
    from clipita_core.tree import CategoryTree
    from lightning_modules.metrics import error_analysis

    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in run.ran:
        out[row] = {}
        for setting in settings_of(run):
            total: dict[str, int] = {}
            for seed in run.spec.split_seeds:
                context, result = run.contexts[seed], run.results[row][seed]
                if setting not in context.groups:
                    continue
                tree = CategoryTree(context.paths)
                mask = context.groups[setting] & (result.per_query["num_relevant"] > 0)
                counts = error_analysis(
                    torch.arange(len(context.paths)),
                    torch.from_numpy(result.top),
                    torch.from_numpy(context.category_ids),
                    query_ancestors=torch.from_numpy(tree.ancestor_matrix(context.paths)),
                    ks=ERROR_KS,
                    query_mask=torch.from_numpy(mask),
                )
                for k, v in counts.items():
                    total[k] = total.get(k, 0) + int(v)
            out[row][setting] = total
    return out


def _ordering_chain(run: LeaderboardRun) -> tuple[list[str], list[str]]:
    """The ordering's rows that ran (first alternative that ran per entry) and notes on substitutions."""
    chain, notes = [], []
    for entry in run.spec.ordering_rows:
        ran = [n for n in entry if n in run.results]
        if not ran:
            notes.append(f"no row of {entry} ran ({'; '.join(run.not_run.get(n, 'not run') for n in entry)})")
            continue
        chain.append(ran[0])
        skipped = [n for n in entry[: entry.index(ran[0])]]
        if skipped:
            notes.append(
                f"{ran[0]} stands in for {', '.join(skipped)} ({'; '.join(run.not_run.get(n, '') for n in skipped)})"
            )
    return chain, notes


def ordering_verdict(run: LeaderboardRun, summary: dict) -> dict[str, Any]:
    """Check the configured ordering (e.g. the paper's CLIP-ITA > CLIP-IA > CLIP-I > zero-shot) on the means, and
    test each adjacent pair (paired, pooled over seeds, one corrected family) for whether the gap is significant."""
    chain, notes = _ordering_chain(run)
    if len(chain) < 2:
        return {"chain": chain, "notes": notes, "checks": [], "statement": "no ordering configured or run"}
    settings = [s for s in (run.spec.ordering_settings or settings_of(run)) if s in settings_of(run)]
    metrics = run.spec.ordering_metrics
    pairs = [(a, b, s, m) for s in settings for m in metrics for a, b in zip(chain, chain[1:], strict=False)]
    tests = {(t["row"], t["versus"], t["setting"], t["metric"]): t for t in _test_pairs(run, pairs)}
    checks = []
    for s in settings:
        for m in metrics:
            means = [summary[r][s][m]["mean"] for r in chain]
            if any(math.isnan(v) for v in means):
                continue
            gaps = []
            for (a, b), (va, vb) in zip(
                zip(chain, chain[1:], strict=False), zip(means, means[1:], strict=False), strict=True
            ):
                t = tests.get((a, b, s, m), {})
                gaps.append(
                    {"higher": a, "lower": b, "difference": va - vb, "holds": va > vb,
                     "p_adjusted": t.get("p_adjusted"), "significant": t.get("p_adjusted", 1.0) < run.spec.alpha}
                )  # fmt: skip
            checks.append(
                {"setting": s, "metric": m, "means": dict(zip(chain, means, strict=True)),
                 "holds": all(g["holds"] for g in gaps),
                 "holds_significantly": all(g["holds"] and g["significant"] for g in gaps), "gaps": gaps}
            )  # fmt: skip
    n_hold = sum(c["holds"] for c in checks)
    n_sig = sum(c["holds_significantly"] for c in checks)
    chain_text = " > ".join(chain)
    headline = next((c for c in checks if c["setting"] == "all" and c["metric"] == metrics[0]), None)
    lines = [
        f"Ordering checked: {chain_text}"
        + (f" ({'; '.join(notes)})" if notes else "")
        + f", on the means over {len(run.spec.split_seeds)} split seed(s)."
    ]
    if headline is not None:
        values = " vs ".join(f"{r} {v:.3f}" for r, v in headline["means"].items())
        verdict = "HOLDS" if headline["holds"] else "DOES NOT HOLD"
        lines.append(f"Headline ({headline['setting']}, {LABELS[headline['metric']]}): {verdict} ({values}).")
    lines.append(
        f"It holds in {n_hold} of {len(checks)} (setting, metric) checks"
        f" ({', '.join(LABELS[m] for m in metrics)} on {', '.join(settings)}); with every adjacent gap "
        f"significant ({run.spec.test} test, {run.spec.correction}-corrected, alpha {run.spec.alpha}) in {n_sig}."
    )
    for higher, lower in zip(chain, chain[1:], strict=False):
        gaps = [g for c in checks for g in c["gaps"] if g["higher"] == higher and g["lower"] == lower]
        lines.append(
            f"{higher} > {lower}: in {sum(g['holds'] for g in gaps)} of {len(gaps)} checks "
            f"(significantly in {sum(g['holds'] and g['significant'] for g in gaps)}; "
            f"significantly reversed in {sum(not g['holds'] and g['significant'] for g in gaps)})."
        )
    failures = [c for c in checks if not c["holds"]]
    for c in failures:
        broken = [g for g in c["gaps"] if not g["holds"]]
        detail = "; ".join(
            f"{g['lower']} {c['means'][g['lower']]:.3f} >= {g['higher']} {c['means'][g['higher']]:.3f}"
            for g in broken
        )
        lines.append(f"Fails on {c['setting']} / {LABELS[c['metric']]}: {detail}.")
    return {
        "chain": chain,
        "notes": notes,
        "checks": checks,
        "holds_everywhere": n_hold == len(checks) and bool(checks),
        "headline_holds": None if headline is None else headline["holds"],
        "statement": "\n".join(lines),
    }


def _queries_text(cell: dict[str, Any]) -> str:
    """Queries evaluated (with a relevant test product): one number, or one per seed when they differ."""
    counts = cell["num_queries"]
    return str(counts[0]) if len(set(counts)) == 1 else ", ".join(str(c) for c in counts)
