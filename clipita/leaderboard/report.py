"""The leaderboard report: markdown tables, JSON, CSV, per-category numbers (plots in :mod:`.plots`)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from .consistency import consistency_section, consistency_summary
from .plots import plot_errors, plot_metrics, plot_per_category
from .public import PUBLIC_FILE, public_section
from .run import LeaderboardRun
from .seed_roles import seed_roles_lines, tuned_seeds_warning

# (key, column label, ceiling key shown beside it)
from .spec import BETTER, CEILINGS, COLUMNS, ERROR_KS, TESTED_METRICS, WORSE, LeaderboardSpec
from .statistics import _queries_text, error_counts, ordering_verdict, settings_of, significance, summarize


# ------------------------------------------------------------------------------------------------- formatting
def _fmt(cell: dict[str, Any], seeds: int, mark: str = "") -> str:
    if cell is None or math.isnan(cell["mean"]):
        return "–"
    text = f"{cell['mean']:.3f}"
    if seeds > 1:
        text += f" ± {cell['std']:.3f}"
    return text + mark


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def significance_floor(spec: LeaderboardSpec, family_size: int) -> float | None:
    """The smallest corrected p-value a permutation test with ``spec.n_resamples`` can reach in a family of
    ``family_size`` tests (two-sided: ``2 / (n + 1)`` times the family size); None for the other tests."""
    if spec.test != "permutation":
        return None
    return min(1.0, 2.0 / (spec.n_resamples + 1) * max(1, family_size))


def leaked_rows(run: LeaderboardRun) -> list[str]:
    """Rows that read a product text field the shard manifest's leakage guard flagged."""
    flagged = set(run.leakage.get("flagged_fields") or [])
    return [r.name for r in run.spec.rows if flagged & set(run.row_text.get(r.name, []))]


def leakage_warning(run: LeaderboardRun) -> list[str]:
    """The warning printed above the result tables when rows read text that names the products' own category."""
    rows = leaked_rows(run)
    if not rows:
        return []
    fields = run.leakage.get("fields", {})
    measured = "; ".join(
        f"{f}: {fields[f]['share']:.0%} of products, {fields[f]['leaves_leaking']} of {fields[f]['leaves']} leaves"
        for f in run.leakage.get("flagged_fields", [])
        if f in fields
    )
    return [
        f"**Warning: label leakage.** The product text names the product's own leaf category ({measured}). "
        f"Rows reading that text ({', '.join(rows)}; marked {LEAK_MARK}) are scored partly on the leaked label.",
        "",
    ]


LEAK_MARK = "⚠"


def markdown_table(run: LeaderboardRun, summary: dict, tests: dict, setting: str) -> str:
    seeds = len(run.spec.split_seeds)
    header = ["Model"]
    for _, label, ceiling in COLUMNS:
        header.append(label)
        if ceiling:
            header.append("ceil")
    header.append("queries")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    leaked = set(leaked_rows(run))
    for row in run.spec.rows:
        name = row.name + (" (ref)" if row.name == run.spec.reference else "")
        if row.name in leaked:
            name += f" {LEAK_MARK}"
        if row.name in run.not_run:
            lines.append("| " + " | ".join([name, run.not_run[row.name]] + [""] * (len(header) - 2)) + " |")
            continue
        if row.name not in summary:
            continue
        cells = summary[row.name][setting]
        out = [name]
        for key, _, ceiling in COLUMNS:
            mark = tests.get(row.name, {}).get(setting, {}).get(key, {}).get("mark", "")
            out.append(_fmt(cells[key], seeds, mark))
            if ceiling:
                out.append("–" if math.isnan(cells[ceiling]["mean"]) else f"{cells[ceiling]['mean']:.3f}")
        out.append(_queries_text(cells["map@10"]))
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def _error_rows(run: LeaderboardRun, errors: dict, setting: str) -> list[str]:
    depth = max(len(p) for c in run.contexts.values() for p in c.paths)
    header = ["Model"]
    for k in ERROR_KS:
        p = "top-1" if k == 1 else f"top-{k}"
        header += [f"{p} wrong", "same tree", "diff. tree"] + [f"gap {g}" for g in range(1, depth + 1)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in run.ran:
        counts = errors[row].get(setting, {})
        if not counts:
            continue
        out = [row]
        for k in ERROR_KS:
            prefix = "rank1" if k == 1 else f"top{k}"
            judged, wrong = counts.get(f"{prefix}/judged", 0), counts.get(f"{prefix}/wrong", 0)
            share = lambda n, w=wrong: f"{n} ({100 * n / w:.0f}%)" if w else "–"  # noqa: E731
            out.append(f"{wrong}/{judged} ({100 * wrong / judged:.0f}%)" if judged else "–")
            out += [
                share(counts.get(f"{prefix}/wrong_same_tree", 0)),
                share(counts.get(f"{prefix}/wrong_different_tree", 0)),
            ]
            out += [share(counts.get(f"{prefix}/wrong_depth_gap={g}", 0)) for g in range(1, depth + 1)]
        lines.append("| " + " | ".join(out) + " |")
    return lines


def write_markdown(
    run: LeaderboardRun,
    summary: dict,
    tests: dict,
    errors: dict,
    ordering: dict,
    plots: list[str],
    path: Path,
    consistency: dict | None = None,
) -> None:
    spec = run.spec
    seeds = spec.split_seeds
    lines = [f"# Leaderboard: {spec.name}", ""]
    if run.partial:
        lines += [f"**{run.partial}**", ""]
    lines += tuned_seeds_warning(spec)
    if spec.description:
        lines += [spec.description.strip(), ""]
    gallery = ", ".join(f"seed {s}: {len(c.product_ids)}" for s, c in sorted(run.contexts.items()))
    lines += [
        f"- command: `{run.command}`",
        f"- config: `{spec.source}`",
        f"- started {run.started}; wall time {run.wall_s:.0f} s ({run.wall_s / 60:.1f} min)"
        + (f" on {run.environment.get('device', '')}" if run.environment else ""),
        f"- split seeds: {seeds} (mean ± sample std over seeds; each seed re-draws the test split and the unseen leaves)",
        *seed_roles_lines(spec),
        f"- test gallery (products): {gallery}",
        f"- reference for significance: **{spec.reference}**",
        "",
        "## Does the paper's ordering hold?",
        "",
        *[f"{line}  " for line in ordering.get("statement", "").splitlines()],
        "",
        "## Results per setting",
        "",
        f"{BETTER}/{WORSE}: significantly higher/lower than {spec.reference} ({spec.test} paired test on per-query values "
        f"pooled over the {len(seeds)} split seed(s), {spec.correction}-corrected over all settings x metrics of the row, "
        f"alpha {spec.alpha}"
        + (f", {spec.n_resamples} resamples" if spec.test == "permutation" else "")
        + "). `ceil` is the best P@k any ranking can reach (min(R, k)/k averaged over the queries). "
        "Queries with no relevant test product are left out (`queries`; per seed when it differs).",
        "",
    ]
    family = len(settings_of(run)) * len(TESTED_METRICS)
    floor = significance_floor(spec, family)
    if floor is not None and floor >= spec.alpha:
        lines += [
            f"**Warning:** with {spec.n_resamples} resamples and {family} tests per row the smallest reachable "
            f"corrected p-value is {floor:.3f} >= alpha: no difference can be marked; raise "
            "`significance.n_resamples`.",
            "",
        ]
    lines += leakage_warning(run)
    for setting in settings_of(run):
        lines += [f"### {setting}", "", markdown_table(run, summary, tests, setting), ""]
    if run.not_run:
        lines += ["## Rows not run", ""] + [f"- **{n}**: {why}" for n, why in run.not_run.items()] + [""]
    lines += [
        "## Error analysis (the paper's)",
        "",
        "Wrong items among each query's top-1 / top-10, counted over all split seeds: what share stays in the query's "
        "tree (same top-level category) or jumps to another, and the depth gap (query depth minus the depth of the "
        "lowest common ancestor; a gap equal to the query's depth is another tree).",
        "",
    ]
    for setting in [s for s in ("all", "specific_seen", "specific_unseen") if s in settings_of(run)]:
        lines += [f"### {setting}", "", *_error_rows(run, errors, setting), ""]
    lines += consistency_section(run, consistency or {})
    lines += public_section(run.public)
    lines += [
        "## Per category",
        "",
        "`per_category.csv`: one line per row x split seed x category (path, depth, leaf, seen/unseen, R, every metric).",
        "",
        "## Plots",
        "",
        *[f"![{Path(p).stem}]({Path(p).name})" for p in plots],
        "",
        "## Run time per row",
        "",
        "| Model | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for row in run.ran:
        lines.append(f"| {row} | " + " | ".join(f"{run.results[row][s].wall_s:.0f} s" for s in seeds) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_csv(run: LeaderboardRun, summary: dict, tests: dict, path: Path) -> None:
    import pandas as pd

    records = []
    for row in run.spec.rows:
        for setting in settings_of(run):
            rec: dict[str, Any] = {"model": row.name, "kind": row.kind, "setting": setting}
            if row.name in run.not_run:
                rec["status"] = run.not_run[row.name]
                records.append(rec)
                continue
            if row.name not in summary:
                continue
            cells = summary[row.name][setting]
            rec["status"] = "ok"
            rec["seeds"] = len(run.spec.split_seeds)
            rec["num_queries"] = float(np.mean(cells["map@10"]["num_queries"]))
            for key, _, ceiling in COLUMNS:
                rec[key] = cells[key]["mean"]
                rec[f"{key}_std"] = cells[key]["std"]
                t = tests.get(row.name, {}).get(setting, {}).get(key)
                rec[f"{key}_p_adjusted"] = None if t is None else t["p_adjusted"]
                rec[f"{key}_mark"] = "" if t is None else t["mark"]
                if ceiling:
                    rec[ceiling] = cells[ceiling]["mean"]
            records.append(rec)
    pd.DataFrame.from_records(records).to_csv(path, index=False, float_format="%.6g")


def write_per_category(run: LeaderboardRun, path: Path) -> None:
    import pandas as pd

    from clipita_core.paths import format_path

    records = []
    metrics = [*TESTED_METRICS, *CEILINGS]
    for row in run.ran:
        for seed in run.spec.split_seeds:
            context, result = run.contexts[seed], run.results[row][seed]
            leaves = context.groups.get("specific", np.zeros(len(context.paths), bool))
            unseen = context.groups.get("specific_unseen", np.zeros(len(context.paths), bool))
            for q, category in enumerate(context.paths):
                rec = {
                    "model": row,
                    "split_seed": seed,
                    "query": q,
                    "category": format_path(category),
                    "depth": len(category),
                    "leaf": bool(leaves[q]),
                    "seen": ("unseen" if unseen[q] else "seen") if leaves[q] else "",
                    "num_relevant": int(result.per_query["num_relevant"][q]),
                }
                rec.update({m: result.per_query[m][q] for m in metrics})
                records.append(rec)
    pd.DataFrame.from_records(records).to_csv(path, index=False, float_format="%.6g")


# ------------------------------------------------------------------------------------------------------ report
def write_report(
    run: LeaderboardRun, output_dir: str | Path, started: float | None = None
) -> dict[str, Path]:
    """Write every leaderboard file for a finished run; returns ``{kind: path}`` (the JSON document is kept in
    ``run.report``).

    Args:
        run: the finished run.
        output_dir: the report folder (created).
        started: ``time.perf_counter()`` at the start of the run; when given, ``run.wall_s`` is set after the
            statistics and plots, so the reported wall time covers all but writing the text files.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(run)
    tests = significance(run)
    errors = error_counts(run)
    ordering = ordering_verdict(run, summary)
    consistency = consistency_summary(run)
    paths = {
        "markdown": out / "leaderboard.md",
        "json": out / "leaderboard.json",
        "csv": out / "leaderboard.csv",
        "per_category": out / "per_category.csv",
    }
    plots: list[str] = []
    if run.ran:
        paths["plot_metrics"] = out / "leaderboard_metrics.png"
        plot_metrics(run, summary, paths["plot_metrics"])
        paths["plot_per_category"] = out / "leaderboard_per_category.png"
        plot_per_category(run, paths["plot_per_category"])
        paths["plot_errors"] = out / "leaderboard_errors.png"
        plot_errors(run, errors, paths["plot_errors"])
        plots = [str(paths[k]) for k in ("plot_metrics", "plot_per_category", "plot_errors")]
    if started is not None:
        run.wall_s = time.perf_counter() - started
    write_markdown(run, summary, tests, errors, ordering, plots, paths["markdown"], consistency)
    write_csv(run, summary, tests, paths["csv"])
    write_per_category(run, paths["per_category"])
    spec = run.spec
    document = {
        "name": spec.name,
        "partial": run.partial or None,
        "command": run.command,
        "config": spec.source,
        "started": run.started,
        "wall_time_s": run.wall_s,
        "environment": run.environment,
        "split_seeds": spec.split_seeds,
        "design_seeds": spec.design_seeds,
        "seed_roles": spec.seed_roles(),
        "reference": spec.reference,
        "significance": {
            "test": spec.test,
            "correction": spec.correction,
            "alpha": spec.alpha,
            "n_resamples": spec.n_resamples,
            "family": "per row: every setting x metric against the reference; per-query values pooled over seeds",
        },  # fmt: skip
        "settings": settings_of(run),
        "rows": [
            {
                "name": row.name,
                "kind": row.kind,
                "spec": {k: v for k, v in vars(row).items() if v not in (None, [], {})},
                "status": run.not_run.get(row.name, "ok" if row.name in run.results else "missing"),
                "summary": summary.get(row.name),
                "significance": tests.get(row.name),
                "error_analysis": errors.get(row.name),
                "hierarchy_consistency": consistency.get(row.name),
                "per_seed": {
                    str(s): {"wall_time_s": r.wall_s, "logged_test_metrics": r.logged}
                    for s, r in run.results.get(row.name, {}).items()
                },
            }
            for row in spec.rows
        ],
        "paper_ordering": ordering,
        "test_gallery_size": {str(s): len(c.product_ids) for s, c in run.contexts.items()},
    }
    if run.public:
        document["public_protocol"] = PUBLIC_FILE
        paths["public"] = out / PUBLIC_FILE
        paths["public"].write_text(json.dumps(_json_safe(run.public), indent=2, ensure_ascii=False))
    run.report = _json_safe(document)
    paths["json"].write_text(json.dumps(run.report, indent=2, ensure_ascii=False, allow_nan=False))
    return paths
