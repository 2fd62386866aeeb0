"""Leaderboard plots: metrics per setting, per-category scores, error analysis."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .run import LeaderboardRun

# (key, column label, ceiling key shown beside it)
from .spec import ERROR_KS, LABELS
from .statistics import _queries_text, settings_of


# ------------------------------------------------------------------------------------------------------ plots
def plot_metrics(
    run: LeaderboardRun, summary: dict, path: Path, metrics: Sequence[str] = ("map@10", "mrr", "r_precision")
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = settings_of(run)
    rows = run.ran
    cols = min(3, len(settings))
    nrows = math.ceil(len(settings) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.8 * nrows), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    width = 0.8 / max(1, len(rows))
    for ax, setting in zip(axes.flat, settings, strict=False):
        x = np.arange(len(metrics))
        for i, row in enumerate(rows):
            cells = [summary[row][setting][m] for m in metrics]
            means = [c["mean"] for c in cells]
            stds = [c["std"] for c in cells]
            ax.bar(
                x + (i - (len(rows) - 1) / 2) * width,
                means,
                width,
                yerr=stds,
                capsize=2,
                color=colors(i % 10),
                label=row,
            )
        queries = _queries_text(summary[rows[0]][setting]["map@10"])
        ax.set_title(f"{setting} ({queries} queries)")
        ax.set_xticks(x, [LABELS[m] for m in metrics])
        ax.set_ylim(0, 1.08)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(settings) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("mean over split seeds (± std)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(rows), 7), frameon=False)
    fig.suptitle(f"{run.spec.name}: retrieval metrics per setting ({len(run.spec.split_seeds)} split seeds)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_category(run: LeaderboardRun, path: Path, metric: str = "map@10") -> None:
    """Heatmap of per-category AP@10 (mean over the seeds where the category has test products) for every leaf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from clipita_core.paths import format_path

    rows = run.ran
    first = run.contexts[run.spec.split_seeds[0]]
    leaves = [
        q for q in range(len(first.paths)) if first.groups.get("specific", np.ones(len(first.paths), bool))[q]
    ]
    matrix = np.full((len(leaves), len(rows)), np.nan)
    for j, row in enumerate(rows):
        stacked = np.stack([run.results[row][s].per_query[metric][leaves] for s in run.spec.split_seeds])
        with np.errstate(all="ignore"):
            finite = np.isfinite(stacked)
            matrix[:, j] = np.where(
                finite.any(0), np.nansum(stacked, 0) / np.maximum(finite.sum(0), 1), np.nan
            )
    keep = np.isfinite(matrix).any(axis=1)
    unseen_in = np.zeros(len(leaves), int)
    for s in run.spec.split_seeds:
        unseen = run.contexts[s].groups.get("specific_unseen")
        if unseen is not None:
            unseen_in += unseen[leaves].astype(int)
    ref = rows.index(run.spec.reference) if run.spec.reference in rows else len(rows) - 1
    order = [i for i in np.argsort(-np.nan_to_num(matrix[:, ref], nan=-1.0), kind="stable") if keep[i]]
    labels = [
        format_path(first.paths[leaves[i]][-2:])
        + (f"  [unseen {unseen_in[i]}/{len(run.spec.split_seeds)}]" if unseen_in[i] else "")
        for i in order
    ]
    height = max(3.0, 0.17 * len(order) + 1.5)
    fig, ax = plt.subplots(figsize=(2.0 + 1.1 * len(rows) + 3.2, height))
    image = ax.imshow(matrix[order], aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(rows)), rows, rotation=30, ha="left", rotation_mode="anchor")
    ax.set_yticks(range(len(order)), labels, fontsize=7)
    ax.xaxis.tick_top()
    fig.colorbar(
        image, ax=ax, fraction=0.04, pad=0.02, label=f"{LABELS.get(metric, metric)} (mean over seeds)"
    )
    ax.set_title(
        f"{run.spec.name}: {LABELS.get(metric, metric)} per leaf category (sorted by {rows[ref]}; blank = no test product)",
        fontsize=9,
        pad=40,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_errors(run: LeaderboardRun, errors: dict, path: Path, setting: str = "all") -> None:
    """Stacked bars: share of judged top-1 / top-10 items that are wrong within the query's tree or in another tree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in run.ran if errors[r].get(setting)]
    fig, axes = plt.subplots(
        1, len(ERROR_KS), figsize=(5.5 * len(ERROR_KS), 0.45 * len(rows) + 1.8), squeeze=False
    )
    for ax, k in zip(axes[0], ERROR_KS, strict=True):
        prefix = "rank1" if k == 1 else f"top{k}"
        same, other = [], []
        for r in rows:
            c = errors[r][setting]
            judged = max(1, c.get(f"{prefix}/judged", 0))
            same.append(c.get(f"{prefix}/wrong_same_tree", 0) / judged)
            other.append(c.get(f"{prefix}/wrong_different_tree", 0) / judged)
        y = np.arange(len(rows))
        ax.barh(y, same, color="tab:orange", label="wrong, same tree")
        ax.barh(y, other, left=same, color="tab:red", label="wrong, different tree")
        ax.set_yticks(y, rows)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of retrieved items")
        ax.set_title(f"{'top-1' if k == 1 else f'top-{k}'} errors ({setting} queries, all seeds)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
