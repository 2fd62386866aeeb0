"""Seed roles (issue 19.6): a leaderboard names its report seeds and its design seeds, and warns in bold when the
numbers it reports are on seeds decisions were tuned on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_leaderboard import synthetic_run  # noqa: F401  (the fixture)

from clipita.leaderboard import leaderboard, load_run, load_spec, save_run, write_report

REPO = Path(__file__).resolve().parents[3]
WARNING = "are design seeds: these numbers are design-seed numbers"


@pytest.mark.parametrize("name", ["fashion", "fashion_ablations"])
def test_the_fashion_leaderboards_report_on_seeds_no_decision_used(name):
    spec = load_spec(str(REPO / "experiments" / "leaderboards" / f"{name}.yaml"))
    assert spec.split_seeds == [3, 4, 5] and spec.design_seeds == [0, 1, 2]
    assert spec.seed_roles() == {"report": [3, 4, 5], "design": [0, 1, 2], "tuned": []}


def test_report_names_report_and_design_seeds_without_a_warning_when_disjoint(synthetic_run, tmp_path):  # noqa: F811
    synthetic_run.spec.split_seeds, synthetic_run.spec.design_seeds = [0, 1], [7, 8]
    paths = write_report(synthetic_run, tmp_path)
    text = Path(paths["markdown"]).read_text()
    assert "reported on **report seeds [0, 1]**: split seeds no decision used" in text
    assert "design seeds: [7, 8]" in text
    assert WARNING not in text
    document = json.loads(Path(paths["json"]).read_text())
    assert document["design_seeds"] == [7, 8]
    assert document["seed_roles"] == {"report": [0, 1], "design": [7, 8], "tuned": []}


def test_report_warns_in_bold_when_reported_seeds_are_design_seeds(synthetic_run, tmp_path):  # noqa: F811
    synthetic_run.spec.split_seeds, synthetic_run.spec.design_seeds = [0, 1], [1, 2]
    text = Path(write_report(synthetic_run, tmp_path)["markdown"]).read_text()
    assert f"**Warning: split seeds [1] {WARNING}" in text and "not a held-out estimate.**" in text
    assert "reported on **report seeds [0]**" in text
    # all seeds tuned: no report-seed claim at all
    synthetic_run.spec.design_seeds = [0, 1]
    text = Path(write_report(synthetic_run, tmp_path)["markdown"]).read_text()
    assert f"**Warning: split seeds [0, 1] {WARNING}" in text and "report seeds" not in text


def test_undeclared_design_seeds_are_said_to_be_undeclared(synthetic_run, tmp_path):  # noqa: F811
    text = Path(write_report(synthetic_run, tmp_path)["markdown"]).read_text()
    assert "seed roles: not declared" in text and WARNING not in text


def test_seed_roles_survive_the_run_file_and_report_only(synthetic_run, tmp_path):  # noqa: F811
    synthetic_run.spec.split_seeds, synthetic_run.spec.design_seeds = [0, 1], [0]
    save_run(synthetic_run, tmp_path / "leaderboard_run.json")
    assert load_run(tmp_path / "leaderboard_run.json").spec.design_seeds == [0]
    paths = leaderboard("sample", output_dir=str(tmp_path), report_only=True)  # sample.yaml declares none
    assert f"**Warning: split seeds [0] {WARNING}" in Path(paths["markdown"]).read_text()
    assert json.loads(Path(paths["json"]).read_text())["design_seeds"] == [0]


@pytest.mark.parametrize(
    ("body", "needle"),
    [("design_seeds: [0, 0]\nrows: [{name: x, baseline: bm25}]", "design_seeds must be a list of distinct")],
)
def test_bad_design_seeds_fail_naming_the_key(tmp_path, body, needle):
    path = tmp_path / "lb.yaml"
    path.write_text(body)
    with pytest.raises(ValueError, match=needle):
        load_spec(str(path))
