"""Plain-text tables of logged retrieval metrics."""

from __future__ import annotations


def format_metrics_table(values: dict[str, float], stage: str, metrics: list[str]) -> str:
    """``{"val/specific/map@10": 0.7, ...}`` -> an aligned table with one row per setting."""
    groups: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == stage:
            groups.setdefault(parts[1], {})[parts[2]] = value
    order = ["all", "general"] + sorted(g for g in groups if g.startswith("level-")) + ["specific"]
    order += sorted(g for g in groups if g not in order)
    rows = [g for g in order if g in groups]
    width = max([len(g) for g in rows] + [5])
    lines = [" ".join([f"{'group':<{width}}"] + [f"{m:>11}" for m in metrics] + [f"{'queries':>8}"])]
    for g in rows:
        cells = [f"{groups[g][m]:>11.4f}" if m in groups[g] else f"{'-':>11}" for m in metrics]
        n = groups[g].get("num_queries")
        lines.append(" ".join([f"{g:<{width}}"] + cells + [f"{int(n) if n is not None else '-':>8}"]))
    return "\n".join(lines)
