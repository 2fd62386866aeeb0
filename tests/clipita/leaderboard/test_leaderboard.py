"""The leaderboard: config parsing, the report files, significance marks, the ordering verdict, and (slow) the
whole command on the tiny sample catalogue."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipita.cli import main
from clipita.leaderboard import (
    BETTER,
    CEILINGS,
    TESTED_METRICS,
    WORSE,
    LeaderboardRun,
    LeaderboardSpec,
    RowSeedResult,
    RowSpec,
    SeedContext,
    leaderboard,
    load_run,
    load_spec,
    markdown_table,
    ordering_verdict,
    save_run,
    significance,
    summarize,
    write_report,
)
from clipita_core.tree import CategoryTree
from lightning_modules.metrics import adjust_p_values, paired_test

REPO = Path(__file__).resolve().parents[3]
SETTINGS = ["all", "general", "level-2", "specific", "specific_seen", "specific_unseen"]
PATHS = [(r, m, f"{m}-leaf{k}") for r in ("R0", "R1") for m in (f"{r}a", f"{r}b") for k in range(4)]


def synthetic_context(seed: int) -> SeedContext:
    """A 3-level tree (2 + 4 + 16 nodes), 32 test products, 4 unseen leaves chosen by the seed."""
    tree = CategoryTree.from_paths(PATHS)
    depth = tree.depth
    leaves = np.zeros(len(tree), bool)
    leaves[tree.leaves] = True
    unseen = np.zeros(len(tree), bool)
    unseen[np.random.default_rng(seed).choice(np.flatnonzero(leaves), 4, replace=False)] = True
    products = [PATHS[i % len(PATHS)] for i in range(32)]
    return SeedContext(
        seed=seed,
        paths=list(tree.paths),
        groups={
            "all": np.ones(len(tree), bool),
            "general": depth == 1,
            "level-2": depth == 2,
            "specific": leaves,
            "specific_seen": leaves & ~unseen,
            "specific_unseen": leaves & unseen,
        },
        category_ids=tree.ancestor_matrix(products),
        product_ids=[f"p{i}" for i in range(32)],
    )


def synthetic_result(values: np.ndarray, seed: int, missing: tuple[int, ...] = ()) -> RowSeedResult:
    """Every metric = ``values`` (queries in ``missing`` have no relevant product: NaN), random top-10."""
    q = len(values)
    per_query = {m: values.astype(float).copy() for m in TESTED_METRICS}
    per_query.update({c: np.ones(q) for c in CEILINGS})
    per_query["num_relevant"] = np.full(q, 3.0)
    for i in missing:
        for name in per_query:
            per_query[name][i] = 0.0 if name == "num_relevant" else math.nan
    top = np.random.default_rng(seed).integers(0, 32, size=(q, 10))
    return RowSeedResult(per_query=per_query, top=top, logged={}, wall_s=1.0)


@pytest.fixture
def synthetic_run() -> LeaderboardRun:
    """ref = A; B identical to A; C much worse everywhere; D better on only two queries per seed; E not run."""
    spec = LeaderboardSpec(
        name="synthetic",
        rows=[
            RowSpec("A", fit="experiments/clip_ita.yaml"),
            RowSpec("B", baseline="title_zero_shot"),
            RowSpec("C", baseline="random"),
            RowSpec("D", baseline="bm25"),
            RowSpec("E", baseline="image_zero_shot"),
        ],
        split_seeds=[0, 1],
        reference="A",
        n_resamples=20000,
        ordering_rows=[["A"], ["D"], ["E", "C"]],
        ordering_metrics=["map@10", "mrr"],
    )
    run = LeaderboardRun(spec=spec, command="clipita leaderboard synthetic", started="now", wall_s=3.0)
    for seed in spec.split_seeds:
        run.contexts[seed] = synthetic_context(seed)
        rng = np.random.default_rng(100 + seed)
        base = rng.uniform(0.4, 0.9, size=len(run.contexts[seed].paths))
        bumped = base.copy()
        bumped[[0, 5]] += 0.05
        for name, values in {"A": base, "B": base, "C": base - 0.35, "D": bumped}.items():
            run.results.setdefault(name, {})[seed] = synthetic_result(values, seed, missing=(7,))
    run.not_run["E"] = "not run: no image-text model offline"
    return run


def test_report_writes_every_file_with_the_expected_rows_and_columns(synthetic_run, tmp_path):
    paths = write_report(synthetic_run, tmp_path)
    for kind in (
        "markdown",
        "json",
        "csv",
        "per_category",
        "plot_metrics",
        "plot_per_category",
        "plot_errors",
    ):
        assert paths[kind].is_file() and paths[kind].stat().st_size > 0, kind
    table = pd.read_csv(paths["csv"])
    assert set(table["model"]) == {"A", "B", "C", "D", "E"}
    assert list(table[table["model"] == "A"]["setting"]) == SETTINGS
    for column in (
        "p@1",
        "p@1_ceiling",
        "p@5_ceiling",
        "p@10_ceiling",
        "map@5",
        "map@10",
        "r_precision",
        "mrr",
    ):
        assert column in table.columns, column
    assert {"ndcg@10", "recall@10", "map@10_std", "map@10_p_adjusted", "map@10_mark", "status"} <= set(
        table.columns
    )
    assert (table[table["model"] == "E"]["status"] == "not run: no image-text model offline").all()
    a_all = table[(table["model"] == "A") & (table["setting"] == "all")].iloc[0]
    expected = np.mean([np.nanmean(synthetic_run.results["A"][s].per_query["map@10"]) for s in (0, 1)])
    assert a_all["map@10"] == pytest.approx(expected, rel=1e-5)
    per_category = pd.read_csv(paths["per_category"])
    assert len(per_category) == 4 * 2 * len(PATHS_TABLE())  # ran rows x seeds x queries
    assert {"category", "depth", "leaf", "seen", "num_relevant", "map@10", "mrr", "r_precision"} <= set(
        per_category.columns
    )
    assert set(per_category["seen"].dropna()) == {"seen", "unseen"}
    markdown = paths["markdown"].read_text()
    for setting in SETTINGS:
        assert f"### {setting}" in markdown
    assert "| E | not run: no image-text model offline" in markdown
    assert "Does the paper's ordering hold?" in markdown and "clipita leaderboard synthetic" in markdown
    assert "wall time" in markdown and "Error analysis" in markdown
    document = json.loads(paths["json"].read_text())
    assert [r["name"] for r in document["rows"]] == ["A", "B", "C", "D", "E"]
    assert document["rows"][2]["error_analysis"]["all"]["top10/judged"] > 0


def PATHS_TABLE() -> list[tuple[str, ...]]:  # noqa: N802 - the category table of PATHS
    return CategoryTree.from_paths(PATHS).paths


def test_significance_marks_appear_only_where_the_corrected_test_says_so(synthetic_run):
    tests = significance(synthetic_run)
    assert set(tests) == {"B", "C", "D"}  # every row that ran but the reference
    # identical to the reference: p = 1, never marked
    assert all(t["p_value"] == 1.0 and t["mark"] == "" for s in tests["B"].values() for t in s.values())
    # much worse on every query: marked worse where the pooled test can reach significance, and not on the small
    # groups (4 or 8 pairs: 2^8 sign flips cannot give a p-value below alpha / 54)
    for setting in ("all", "specific", "specific_seen"):
        assert all(tests["C"][setting][m]["mark"] == WORSE for m in TESTED_METRICS), setting
    for setting in ("general", "level-2", "specific_unseen"):
        assert all(t["mark"] == "" and t["mean_difference"] < 0 for t in tests["C"][setting].values()), (
            setting
        )
    # higher mean on two queries only: not significant, so no mark although its mean is higher
    d_all = tests["D"]["all"]["map@10"]
    assert d_all["mean_difference"] > 0 and d_all["mark"] == ""
    # marks are exactly "corrected p < alpha" of the paired test on pooled per-query values, Holm over the row
    raw = []
    for setting in SETTINGS:
        for metric in TESTED_METRICS:
            x = np.concatenate([synthetic_run.results["C"][s].per_query[metric] for s in (0, 1)])
            mask = np.concatenate([synthetic_run.contexts[s].groups[setting] for s in (0, 1)])
            y = np.concatenate([synthetic_run.results["A"][s].per_query[metric] for s in (0, 1)])
            keep = mask & np.isfinite(x)
            raw.append(paired_test(x[keep], y[keep], n_resamples=20000, seed=0)[1])
    adjusted = adjust_p_values(raw, method="holm")
    flat = [tests["C"][s][m] for s in SETTINGS for m in TESTED_METRICS]
    assert [t["p_adjusted"] for t in flat] == pytest.approx(list(adjusted))
    assert [t["mark"] == WORSE for t in flat] == [p < 0.05 for p in adjusted]
    # and the tables show exactly these marks
    table = markdown_table(synthetic_run, summarize(synthetic_run), tests, "all")
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert WORSE in lines["C"] and BETTER not in lines["C"]
    assert WORSE not in lines["B"] and BETTER not in lines["B"] and BETTER not in lines["D"]
    assert WORSE not in lines["A (ref)"]


def test_ordering_verdict_is_computed_from_the_numbers(synthetic_run):
    verdict = ordering_verdict(synthetic_run, summarize(synthetic_run))
    assert verdict["chain"] == ["A", "D", "C"]  # C stands in for E, which did not run
    assert "C stands in for E" in verdict["notes"][0]
    assert verdict["headline_holds"] is False  # D > A on the means
    assert "DOES NOT HOLD" in verdict["statement"] and "Fails on all / mAP@10: D" in verdict["statement"]
    assert "D > C: in 12 of 12 checks" in verdict["statement"]  # per adjacent pair, counted
    synthetic_run.spec.ordering_rows = [["A"], ["C"]]
    verdict = ordering_verdict(synthetic_run, summarize(synthetic_run))
    assert verdict["holds_everywhere"] and "HOLDS" in verdict["statement"]


def test_report_only_re_renders_a_saved_run(synthetic_run, tmp_path):
    save_run(synthetic_run, tmp_path / "leaderboard_run.json")
    assert load_run(tmp_path / "leaderboard_run.json").results["C"][1].per_query["mrr"].shape == (22,)
    paths = leaderboard("sample", output_dir=str(tmp_path), report_only=True)
    assert "# Leaderboard: synthetic" in Path(paths["markdown"]).read_text()
    assert set(pd.read_csv(paths["csv"])["model"]) == {"A", "B", "C", "D", "E"}


def test_load_spec_reads_the_shipped_configs():
    spec = load_spec("fashion")
    assert spec.split_seeds == [3, 4, 5] and spec.design_seeds == [0, 1, 2] and spec.reference == "CLIP-ITA"
    names = [r.name for r in spec.rows]
    for name in ("random", "BM25", "title zero-shot", "CLIP-I", "CLIP-IA", "CLIP-ITA"):
        assert name in names
    assert spec.row("CLIP-ITA").fit == "experiments/clip_ita.yaml" and not spec.row("CLIP-ITA").overrides
    sample = load_spec(str(REPO / "experiments" / "leaderboards" / "sample.yaml"))
    assert sample.base_config == "experiments/quickstart.yaml" and len(sample.split_seeds) >= 2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("rows: [{name: x, baseline: bm25, fit: a.yaml}]", "exactly one of"),
        ("rows: [{name: x, baseline: tfidf}]", "unknown baseline"),
        ("rows: [{name: x, baseline: bm25}]\ncolour: red", "unknown keys"),
        ("split_seeds: [0, 1]\nrows: [{name: x, fit: a.yaml, checkpoint: m.ckpt}]", "{seed}"),
        ("reference: y\nrows: [{name: x, baseline: bm25}]", "no row named 'y'"),
        ("rows: [{name: x, baseline: bm25}, {name: x, baseline: random}]", "unique"),
    ],
)
def test_bad_leaderboard_configs_fail_naming_the_problem(tmp_path, body, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises((ValueError, KeyError), match=needle.replace("{", r"\{").replace("}", r"\}")):
        load_spec(str(path))


def test_leaderboard_help_comes_from_the_docstring(capsys):
    with pytest.raises(SystemExit):
        main(["leaderboard", "--help"])
    out = capsys.readouterr().out
    assert "leaderboard_config" in out and "--split_seeds" in out and "--output_dir" in out


@pytest.mark.slow
def test_leaderboard_on_the_tiny_sample(tmp_path):
    paths = leaderboard(
        str(REPO / "experiments" / "leaderboards" / "sample.yaml"),
        output_dir=str(tmp_path / "out"),
        rows=["random", "BM25", "title zero-shot", "image zero-shot", "CLIP-ITA"],
        overrides=["--data.work_dir", str(tmp_path / "work")],
        runs_dir=str(tmp_path / "runs"),
    )
    for kind in (
        "markdown",
        "json",
        "csv",
        "per_category",
        "plot_metrics",
        "plot_per_category",
        "plot_errors",
    ):
        assert Path(paths[kind]).is_file(), kind
    table = pd.read_csv(paths["csv"])
    assert set(table["model"]) == {"random", "BM25", "title zero-shot", "image zero-shot", "CLIP-ITA"}
    assert set(SETTINGS) <= set(table["setting"])
    document = json.loads(Path(paths["json"]).read_text())
    rows = {r["name"]: r for r in document["rows"]}
    assert rows["image zero-shot"]["status"] == "not run: no image-text model offline"
    # the leaderboard's numbers are the module's own test metrics (and the baselines' harness means), seed by seed
    for name in ("random", "BM25", "title zero-shot", "CLIP-ITA"):
        for seed, run in rows[name]["per_seed"].items():
            for setting in ("all", "specific_unseen"):
                logged = run["logged_test_metrics"][f"{setting}/map@10"]
                ours = rows[name]["summary"][setting]["map@10"]["values"][int(seed)]
                assert ours == pytest.approx(logged, abs=1e-5), (name, seed, setting)
    assert "Does the paper's ordering hold?" in Path(paths["markdown"]).read_text()
    for name in (
        "random",
        "BM25",
        "title zero-shot",
        "CLIP-ITA",
    ):  # hierarchy consistency for every row that ran
        assert 0.0 <= rows[name]["hierarchy_consistency"]["leaves"]["mean"] <= 1.0, name


def test_rows_that_differ_by_a_plus_get_their_own_run_folders(tmp_path):
    from clipita.leaderboard import load_spec

    config = tmp_path / "lb.yaml"
    config.write_text(
        "name: t\nbase_config: experiments/quickstart.yaml\nreference: A\nrows:\n"
        "  - {name: A, baseline: random}\n  - {name: CLIP-ITA, baseline: random}\n  - {name: CLIP-ITA+, baseline: random}\n"
    )
    spec = load_spec(str(config))
    assert len({row.slug for row in spec.rows}) == 3
    config.write_text(
        "name: t\nbase_config: experiments/quickstart.yaml\nreference: a b\nrows:\n"
        "  - {name: a b, baseline: random}\n  - {name: a-b, baseline: random}\n"
    )
    with pytest.raises(ValueError, match="clashing run folders"):
        load_spec(str(config))


def test_leakage_warning_above_the_rows_that_read_leaked_text(synthetic_run, tmp_path):
    synthetic_run.row_text = {"A": ["title", "attributes"], "B": ["title"], "C": [], "D": ["title"]}
    clean = write_report(synthetic_run, tmp_path / "clean")
    assert "label leakage" not in clean["markdown"].read_text()
    synthetic_run.leakage = {
        "flagged_fields": ["title"],
        "fields": {"title": {"share": 0.97, "leaves_leaking": 30, "leaves": 31}},
    }
    save_run(synthetic_run, tmp_path / "leaderboard_run.json")  # the report survives a save and re-render
    paths = write_report(load_run(tmp_path / "leaderboard_run.json"), tmp_path / "leaky")
    text = paths["markdown"].read_text()
    warning = text.index("**Warning: label leakage.**")
    assert warning < text.index("### ") and "title: 97% of products, 30 of 31 leaves" in text
    assert "(A, B, D; marked" in text and "| C |" in text and "| A (ref) ⚠ |" in text


def tiny_module(**net):
    """A real ClipItaModule over a tiny network (timm's random test tower): what a trained row's runner holds."""
    from lightning_modules.clip_ita_module import ClipItaModule
    from lightning_modules.model import ClipIta

    tiny = {"image_model": "test_efficientnet", "image_weights": "none", "image_size": 32, "embed_dim": 384}
    return ClipItaModule(ClipIta(**tiny, **net))


def test_trained_rows_name_the_text_they_read_and_the_leakage_warning_names_them(synthetic_run, tmp_path):
    from clipita.leaderboard.runner import _model_text

    plus = {"category_head": "residual", "zero_shot_weight": 0.5}
    assert _model_text(tiny_module(modalities=["image"])) == []  # CLIP-I
    assert _model_text(tiny_module(modalities=["image", "attributes"])) == ["attributes"]  # CLIP-IA
    assert _model_text(tiny_module()) == ["title", "attributes"]  # CLIP-ITA
    assert _model_text(tiny_module(modalities=["image", "attributes"], **plus)) == ["title", "attributes"]
    lexical = tiny_module(modalities=["image"], image_evidence=True, lexical_signal=True)
    assert _model_text(lexical) == ["title", "attributes"]  # its BM25 reads both

    synthetic_run.row_text = {"A": _model_text(tiny_module()), "C": [], "D": ["title"]}  # A: a trained row
    synthetic_run.leakage = {
        "flagged_fields": ["attributes"],
        "fields": {"attributes": {"share": 0.9, "leaves_leaking": 12, "leaves": 16}},
    }
    text = write_report(synthetic_run, tmp_path / "leaky")["markdown"].read_text()
    assert "(A; marked" in text and "| A (ref) ⚠ |" in text  # the trained row, not the title-reading baseline


def test_a_run_stopped_after_a_seed_keeps_a_run_file_the_report_re_renders_from(
    synthetic_run, tmp_path, monkeypatch
):
    """The partial report written after each split seed comes with its run file, so ``--report_only`` (and
    ``--public_only``) work on a run that was stopped before its last seed, and say it is partial."""
    import clipita.leaderboard.command as command

    class StoppedRunner:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def run(self, rows, on_seed):
            on_seed(synthetic_run, [0])
            raise KeyboardInterrupt  # killed during the second seed

    monkeypatch.setattr(command, "_Runner", StoppedRunner)
    with pytest.raises(KeyboardInterrupt):
        leaderboard("sample", output_dir=str(tmp_path), runs_dir=str(tmp_path / "runs"))
    kept = load_run(tmp_path / "leaderboard_run.json")
    assert kept.spec.split_seeds == [0] and kept.partial.startswith("Partial: split seeds [0]")
    paths = leaderboard("sample", output_dir=str(tmp_path), report_only=True)
    assert "**Partial: split seeds [0]" in Path(paths["markdown"]).read_text()
