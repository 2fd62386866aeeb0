"""The contract between training and serving: a checkpoint loaded afresh (``clipita index`` + ``clipita search``)
ranks every category -- seen in training and held out of it (*unseen*, so *novel* to the model) -- exactly as the
test evaluation of that checkpoint ranked it (the leaderboard's numbers come from that evaluation)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from clipita.experiment import fit_and_test
from clipita.index import index
from clipita.search import Searcher
from clipita_core.paths import format_path

REPO = Path(__file__).resolve().parents[2]
TOP = 10


@pytest.mark.slow
def test_search_returns_the_test_ranking_for_seen_and_unseen_categories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fit_and_test(
        str(REPO / "experiments" / "clip_ita_plus.yaml"),  # novel-category routing on: the risky path
        tiny_overrides(
            {
                "data.work_dir": str(tmp_path / "work"),
                "data.sample_products": 240,
                "trainer.max_epochs": 3,
                "trainer.logger.init_args.save_dir": str(tmp_path / "runs"),
                "trainer.enable_model_summary": False,
            }
        ),
    )
    ckpt = result.best_checkpoint
    assert ckpt and Path(ckpt).is_file()
    paths = result.query_paths
    test_ids = list(result.datamodule.datasets["test"].product_id)
    ranking = result.module.rankings["test"]  # [Q, max_rank] rows of the test split, best first
    unseen = set(map(tuple, result.datamodule.manifest["unseen_categories"]))
    assert unseen, "the sample must hold leaves out of training for this test to mean anything"

    index(ckpt=ckpt, output_dir=str(tmp_path / "index"), split="test", accelerator="cpu", progress=False)
    searcher = Searcher.load(tmp_path / "index")  # the checkpoint is loaded afresh, from its file
    assert searcher.encoder.net.trained_categories, "the trained set must survive the checkpoint"
    results = searcher.search([format_path(p) for p in paths], k=TOP)

    checked_unseen = 0
    for q, (path, found) in enumerate(zip(paths, results, strict=True)):
        assert found["category"] == format_path(path)
        expected = [test_ids[i] for i in ranking[q, :TOP].tolist() if i >= 0]
        got = [hit["id"] for hit in found["results"]]
        scores = [hit["score"] for hit in found["results"]]
        for a, b, s0, s1 in zip(expected, got, scores, scores[1:] + [float("-inf")], strict=False):
            # a swap is only allowed between products whose scores tie to float precision
            assert a == b or abs(s0 - s1) < 1e-5, (format_path(path), expected, got)
        assert sorted(expected) == sorted(got) or len(got) < TOP, (format_path(path), expected, got)
        checked_unseen += path in unseen
    assert checked_unseen == len(unseen)
    novel = searcher.encoder.net.novel_mask([p[-1] for p in paths], paths)
    assert all(novel[q] for q, p in enumerate(paths) if p in unseen)  # unseen leaves are answered as novel
