"""Hierarchy consistency in the leaderboard: computed from each row's full ranking, summarised per tree, reported
in leaderboard.md and leaderboard.json for every row that has it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_leaderboard import synthetic_run  # noqa: F401 - the fixture

from clipita.leaderboard import write_report
from clipita.leaderboard.consistency import HC_KEY, add_consistency, ancestor_table, consistency_summary


def test_add_consistency_uses_the_full_ranking() -> None:
    paths = [("A",), ("A", "x"), ("A", "y")]
    leaves = np.array([False, True, True])
    # products 0-11 under "A > x", 12-13 under "A > y": "A" has R = 14, so its cut-off (14) reaches deeper than 10
    ranking = torch.tensor([list(range(14)), list(range(14)), [12, 13] + list(range(12))])
    ranking[0] = torch.tensor([12, 13, *range(12)])  # "A" ranks 12 and 13 first, then 0-11: all within 14
    per_query = {"num_relevant": np.array([14.0, 12.0, 2.0])}
    out = add_consistency(per_query, ranking, paths, leaves)
    assert np.isnan(out[HC_KEY][0]) and out[HC_KEY][1] == 1.0 and out[HC_KEY][2] == 1.0
    assert ancestor_table(paths).tolist() == [[0, -1], [0, 1], [0, 2]]


def test_report_has_a_consistency_line_per_row_with_it(synthetic_run, tmp_path) -> None:  # noqa: F811
    for seed, context in synthetic_run.contexts.items():
        leaves = context.groups["specific"]
        for row, value in (("A", 0.5), ("C", 1.0)):
            values = np.where(leaves, value, np.nan)
            values[np.flatnonzero(leaves)[0]] = 1.0 - value if seed == 0 else value  # a seed-dependent leaf
            synthetic_run.results[row][seed].per_query[HC_KEY] = values
    summary = consistency_summary(synthetic_run)
    assert set(summary) == {"A", "C"}  # B and D were run before hc@10 existed: left out, not zero
    n_leaves = int(synthetic_run.contexts[0].groups["specific"].sum())
    assert summary["C"]["leaves"]["values"] == pytest.approx([(n_leaves - 1) / n_leaves, 1.0])
    assert {k for k in summary["A"] if k.startswith("tree:")} == {"tree:R0", "tree:R1"}
    paths = write_report(synthetic_run, tmp_path)
    text = paths["markdown"].read_text()
    assert "## Hierarchy consistency (HC@10)" in text
    section = text.split("## Hierarchy consistency (HC@10)")[1].split("\n## ")[0]
    assert "| A | 0.5" in section and "| C | " in section and "| B |" not in section
    document = json.loads(paths["json"].read_text())
    rows = {r["name"]: r for r in document["rows"]}
    assert rows["A"]["hierarchy_consistency"]["macro_over_trees"]["mean"] == pytest.approx(
        summary["A"]["macro_over_trees"]["mean"]
    )
    assert rows["B"]["hierarchy_consistency"] is None
