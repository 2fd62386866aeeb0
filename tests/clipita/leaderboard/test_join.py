"""``--join``: runs made on disjoint split seeds (one job per seed) give the report of one run on all of them."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from test_leaderboard import synthetic_run  # noqa: F401 - the fixture

from clipita.leaderboard import leaderboard, load_run, save_run, write_report
from clipita.leaderboard.join import join_runs


def on_seeds(run, seeds: list[int]):
    """``run`` as a job on ``seeds`` alone would have kept it."""
    part = copy.deepcopy(run)
    part.spec = dataclasses.replace(part.spec, split_seeds=list(seeds))
    part.contexts = {s: part.contexts[s] for s in seeds}
    part.results = {row: {s: r[s] for s in seeds} for row, r in part.results.items()}

    def levels(v: float) -> dict:
        gallery = {
            "size": 9,
            "per_split": {"val": 4, "test": 5},
            "excluded_trained": 0,
            "trained_products": 20,
        }
        cells = {"all": {"p@1": v, "p@10": v / 2, "mrr@10": v, "queries": 3}}
        return {"checkpoint": "a.ckpt", "trained_from": [], "gallery": gallery, "levels": cells}

    part.public = {
        **{k: k for k in ("protocol", "queries", "gallery", "relevance", "metrics")},
        "split_seeds": list(seeds),
        "rows": {"A": {"per_seed": {str(s): levels(0.2 + 0.4 * s) for s in seeds}}},
    }
    return part


def test_joining_one_seed_runs_gives_the_report_of_the_run_on_both(synthetic_run, tmp_path):  # noqa: F811
    joined = join_runs([on_seeds(synthetic_run, [1]), on_seeds(synthetic_run, [0])], synthetic_run.spec)
    assert joined.spec.split_seeds == [0, 1] and set(joined.contexts) == {0, 1}
    assert [r.name for r in joined.spec.rows] == [r.name for r in synthetic_run.spec.rows]
    assert joined.not_run == synthetic_run.not_run
    assert joined.public["split_seeds"] == [0, 1]
    assert joined.public["rows"]["A"]["summary"]["all"]["p@1"]["mean"] == pytest.approx(0.4)
    write_report(synthetic_run, tmp_path / "whole")
    write_report(joined, tmp_path / "joined")
    # every table and statistic (significance over both seeds included) is the whole run's
    assert (tmp_path / "joined" / "leaderboard.csv").read_text() == (
        tmp_path / "whole" / "leaderboard.csv"
    ).read_text()
    assert joined.report["rows"] == synthetic_run.report["rows"]


def test_runs_that_are_not_one_leaderboard_are_refused_in_one_line(synthetic_run):  # noqa: F811
    zero, one = on_seeds(synthetic_run, [0]), on_seeds(synthetic_run, [1])
    with pytest.raises(ValueError, match="split seed 0 is in both"):
        join_runs([zero, on_seeds(synthetic_run, [0, 1])], synthetic_run.spec)
    fewer = copy.deepcopy(one)
    del fewer.results["D"]
    with pytest.raises(ValueError, match=r"not have the same rows \(\['D'\]\)"):
        join_runs([zero, fewer], synthetic_run.spec)
    partial = copy.deepcopy(one)
    partial.partial = "Partial: split seeds [1] of [1, 2] done"
    with pytest.raises(ValueError, match="partial"):
        join_runs([zero, partial], synthetic_run.spec)
    with pytest.raises(ValueError, match="at least two"):
        join_runs([zero], synthetic_run.spec)


def test_the_command_joins_kept_runs_into_the_output_folder(synthetic_run, tmp_path):  # noqa: F811
    config = tmp_path / "lb.yaml"
    config.write_text(
        "name: synthetic\nsplit_seeds: [0, 1]\nreference: A\nrows:\n"
        + "".join(f"  - {{name: {r.name}, baseline: random}}\n" for r in synthetic_run.spec.rows)
    )
    for seed in (0, 1):
        (tmp_path / f"s{seed}").mkdir()
        save_run(on_seeds(synthetic_run, [seed]), tmp_path / f"s{seed}" / "leaderboard_run.json")
    leaderboard(
        str(config), output_dir=str(tmp_path / "out"), join=[str(tmp_path / "s0"), str(tmp_path / "s1")]
    )
    joined = load_run(tmp_path / "out" / "leaderboard_run.json")
    assert joined.spec.split_seeds == [0, 1] and "joined with" in joined.command
    assert "| D" in (tmp_path / "out" / "leaderboard.md").read_text()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        leaderboard(
            str(config), output_dir=str(tmp_path / "o2"), join=[str(tmp_path / "s0"), str(tmp_path / "x")]
        )
