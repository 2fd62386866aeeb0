"""``--keep_rows``: rows run now are added to the finished run kept in the output folder (same seeds and galleries),
replacing only their own earlier results."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_leaderboard import synthetic_result, synthetic_run  # noqa: F401 - the fixture

from clipita.leaderboard import RowSpec, leaderboard, load_run, save_run
from clipita.leaderboard.merge import merge_into_kept


def new_run(kept, rows: list[str], shift: float = 0.1):
    """A run of ``rows`` only, on the kept run's seeds and galleries, each row's values moved by ``shift``."""
    spec = dataclasses.replace(kept.spec, rows=[r for r in kept.spec.rows if r.name in rows])
    run = dataclasses.replace(
        kept, spec=spec, results={}, not_run={}, command="clipita leaderboard synthetic --rows", wall_s=2.0
    )
    run.contexts = copy.deepcopy(kept.contexts)
    for name in rows:
        for seed, result in kept.results[name].items():
            run.results.setdefault(name, {})[seed] = synthetic_result(
                result.per_query["map@10"] + shift, seed
            )
    return run


def test_rows_run_now_replace_theirs_and_the_others_are_kept(synthetic_run, tmp_path):  # noqa: F811
    save_run(synthetic_run, tmp_path / "leaderboard_run.json")
    merged = merge_into_kept(
        new_run(synthetic_run, ["A", "D"]), tmp_path / "leaderboard_run.json", synthetic_run.spec
    )
    assert [r.name for r in merged.spec.rows] == ["A", "B", "C", "D", "E"]
    assert merged.not_run == {"E": synthetic_run.not_run["E"]}
    for name in ("B", "C"):  # kept as they were
        for seed in (0, 1):
            kept = synthetic_run.results[name][seed].per_query["map@10"]
            np.testing.assert_array_equal(merged.results[name][seed].per_query["map@10"], kept)
    for name in ("A", "D"):  # replaced
        moved = synthetic_run.results[name][0].per_query["map@10"] + 0.1
        np.testing.assert_allclose(merged.results[name][0].per_query["map@10"], moved)
    assert merged.wall_s == pytest.approx(synthetic_run.wall_s + 2.0) and "--rows" in merged.command


def test_another_evaluation_is_refused_in_one_line(synthetic_run, tmp_path):  # noqa: F811
    save_run(synthetic_run, tmp_path / "leaderboard_run.json")
    other_seeds = new_run(synthetic_run, ["A"])
    other_seeds.spec = dataclasses.replace(other_seeds.spec, split_seeds=[0, 2])
    with pytest.raises(ValueError, match=r"split seeds \[0, 1\].*\[0, 2\]"):
        merge_into_kept(other_seeds, tmp_path / "leaderboard_run.json", synthetic_run.spec)
    other_gallery = new_run(synthetic_run, ["A"])
    other_gallery.contexts[1].product_ids = list(reversed(other_gallery.contexts[1].product_ids))
    with pytest.raises(ValueError, match="split seed 1 .*test galleries differ"):
        merge_into_kept(other_gallery, tmp_path / "leaderboard_run.json", synthetic_run.spec)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        merge_into_kept(new_run(synthetic_run, ["A"]), tmp_path / "none.json", synthetic_run.spec)


def test_the_command_merges_and_writes_no_partial_over_the_kept_run(synthetic_run, tmp_path, monkeypatch):  # noqa: F811
    """End to end through ``leaderboard(..., keep_rows=True)`` with a runner that replays a run (no training)."""
    import clipita.leaderboard.command as command

    config = tmp_path / "lb.yaml"
    config.write_text(
        "name: synthetic\nsplit_seeds: [0, 1]\nreference: A\nrows:\n"
        + "".join(f"  - {{name: {r.name}, baseline: random}}\n" for r in synthetic_run.spec.rows)
    )
    synthetic_run.spec = dataclasses.replace(
        synthetic_run.spec, rows=[RowSpec(r.name, baseline="random") for r in synthetic_run.spec.rows]
    )
    save_run(synthetic_run, tmp_path / "leaderboard_run.json")
    fresh = new_run(synthetic_run, ["C"], shift=0.2)

    class Replay:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def run(self, rows, on_seed):
            assert [r.name for r in rows] == ["C"]  # the reference row A comes from the kept run
            on_seed(fresh, [0])  # the partial report is merged, and the kept run file stays whole
            assert load_run(tmp_path / "leaderboard_run.json").spec.split_seeds == [0, 1]
            partial = (tmp_path / "leaderboard.md").read_text()
            assert "Partial: split seeds [0]" in partial and "| B" in partial
            return fresh

    monkeypatch.setattr(command, "_Runner", Replay)
    paths = leaderboard(
        str(config), output_dir=str(tmp_path), rows=["C"], keep_rows=True, runs_dir=str(tmp_path)
    )
    merged = load_run(tmp_path / "leaderboard_run.json")
    assert merged.ran == ["A", "B", "C", "D"] and not merged.partial
    kept_a = synthetic_run.results["A"][1].per_query["map@10"]
    np.testing.assert_array_equal(merged.results["A"][1].per_query["map@10"], kept_a)
    np.testing.assert_allclose(
        merged.results["C"][1].per_query["map@10"], synthetic_run.results["C"][1].per_query["map@10"] + 0.2
    )
    table = Path(paths["markdown"]).read_text()
    assert all(f"| {name}" in table for name in ("B", "C", "D"))
    with pytest.raises(ValueError, match="split seeds"):
        leaderboard(str(config), output_dir=str(tmp_path), rows=["C"], keep_rows=True, split_seeds=[0, 7])


def test_a_run_on_some_of_the_kept_seeds_reports_every_row_on_those(synthetic_run, tmp_path):  # noqa: F811
    levels = {"levels": {"all": {"p@1": 0.5, "p@10": 0.25, "mrr@10": 0.5, "queries": 3}}}
    synthetic_run.public = {"split_seeds": [0, 1], "rows": {"A": {"per_seed": {"0": levels, "1": levels}}}}
    save_run(synthetic_run, tmp_path / "leaderboard_run.json")
    one_seed = new_run(synthetic_run, ["D"])
    one_seed.spec = dataclasses.replace(one_seed.spec, split_seeds=[1])
    one_seed.contexts = {1: one_seed.contexts[1]}
    one_seed.results = {"D": {1: one_seed.results["D"][1]}}
    one_seed.public = {"split_seeds": [1], "rows": {"D": {"per_seed": {"1": levels}}}}
    merged = merge_into_kept(one_seed, tmp_path / "leaderboard_run.json", synthetic_run.spec)
    assert merged.spec.split_seeds == [1] and set(merged.contexts) == {1}
    assert list(merged.public["rows"]) == ["A", "D"] and list(merged.public["rows"]["A"]["per_seed"]) == ["1"]
    assert all(set(per_seed) == {1} for per_seed in merged.results.values())
    np.testing.assert_array_equal(
        merged.results["B"][1].per_query["map@10"], synthetic_run.results["B"][1].per_query["map@10"]
    )


def test_the_public_block_is_restricted_to_the_seeds_and_its_summary_recomputed():
    from clipita.leaderboard.merge import _public_on

    levels = lambda v: {"all": {"p@1": v, "p@10": v / 2, "mrr@10": v, "queries": 3}}  # noqa: E731
    block = {
        "split_seeds": [0, 1],
        "rows": {
            "A": {"per_seed": {"0": {"levels": levels(0.2)}, "1": {"levels": levels(0.6)}}, "summary": {}}
        },
    }
    restricted = _public_on(block, [1])
    assert restricted["split_seeds"] == [1] and list(restricted["rows"]["A"]["per_seed"]) == ["1"]
    assert restricted["rows"]["A"]["summary"]["all"]["p@1"]["mean"] == pytest.approx(0.6)
