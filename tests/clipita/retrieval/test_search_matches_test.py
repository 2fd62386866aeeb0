"""The contract between training and serving: a checkpoint loaded afresh (``clipita index`` + ``clipita search``)
ranks every category -- seen in training and held out of it (*unseen*, so *novel* to the model) -- exactly as the
test evaluation of that checkpoint ranked it (the leaderboard's numbers come from that evaluation), with every term
its retrieval record can carry: the title match, the BM25 (lexical) term, the image-only block and the tree terms,
in the exact scan and in the re-ranking of FAISS's candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_overrides
from PIL import Image
from ranking_agreement import agrees

from clipita.experiment import fit_and_test
from clipita.retrieval.index import index
from clipita.retrieval.search import CategoryEncoder, Searcher
from clipita_core.paths import format_path
from clipita_core.weights import (
    DESCENDANT_WEIGHT,
    NOVEL_IMAGE_WEIGHT,
    NOVEL_LEXICAL_WEIGHT,
    NOVEL_PARENT_WEIGHT,
    NOVEL_TITLE_WEIGHT,
    SEEN_IMAGE_WEIGHT,
    SEEN_LEXICAL_WEIGHT,
    SEEN_TITLE_WEIGHT,
)
from lightning_modules.checkpointing import KEY

REPO = Path(__file__).resolve().parents[3]
TOP = 10
# the weights the test forces wherever the choice on a tiny catalogue picked 0 (every term must be live for the test
# to mean anything: a search that dropped a term whose weight is 0 would still rank as the test)
FORCED = {
    "title": {SEEN_TITLE_WEIGHT: 0.25, NOVEL_TITLE_WEIGHT: 0.75},
    "lexical": {SEEN_LEXICAL_WEIGHT: 0.5, NOVEL_LEXICAL_WEIGHT: 1.0},
    "image": {SEEN_IMAGE_WEIGHT: 0.5, NOVEL_IMAGE_WEIGHT: 0.25},
    "tree": {NOVEL_PARENT_WEIGHT: 0.5, DESCENDANT_WEIGHT: 0.25},
}


def rewrite_retrieval(ckpt: Path, out: Path, weights: dict[str, float]) -> Path:
    """A copy of a checkpoint whose retrieval record has ``weights`` set (read as plain values and tensors)."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint[KEY]["retrieval"] = {**checkpoint[KEY]["retrieval"], **weights}
    torch.save(checkpoint, out)
    return out


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory) -> tuple[Any, Path, dict[str, float]]:
    """A tiny adaptive fit (no test yet) and a copy of its best checkpoint with every scorer term forced live:
    ``(fit result, forced checkpoint, forced weights)``."""
    tmp_path = tmp_path_factory.mktemp("adaptive")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(tmp_path)
        result = fit_and_test(
            str(REPO / "experiments" / "clip_ita_adaptive.yaml"),  # title, BM25, image-only and tree terms
            tiny_overrides(
                {
                    "data.work_dir": str(tmp_path / "work"),
                    "data.sample_products": 240,
                    "trainer.max_epochs": 3,
                    "trainer.logger.init_args.save_dir": str(tmp_path / "runs"),
                    "trainer.enable_model_summary": False,
                    "refit_after_choice": False,  # the refit keeps the record; here the record is forced anyway
                }
            ),
            test=False,
        )
    assert result.best_checkpoint and Path(result.best_checkpoint).is_file()
    chosen = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)[KEY]["retrieval"]
    # the choice on 240 products often picks 0 for some term: force those non-zero (the choice is not under test)
    forced = {k: chosen.get(k) or v for group in FORCED.values() for k, v in group.items()}
    assert all(w > 0 for w in forced.values())
    return result, rewrite_retrieval(Path(result.best_checkpoint), tmp_path / "forced.ckpt", forced), forced


@pytest.mark.slow
def test_search_returns_the_test_ranking_under_every_scorer_term(adaptive_run, tmp_path):
    result, ckpt, forced = adaptive_run
    # the test evaluation of that checkpoint (the leaderboard's numbers)
    result.trainer.test(result.module, datamodule=result.datamodule, ckpt_path=str(ckpt), verbose=False)
    assert {k: result.module.net.retrieval[k] for k in forced} == forced  # test scored with the forced record
    test_scores, test_rows, _ = result.module.metrics["test"].ranking()
    test_ids = list(result.datamodule.datasets["test"].product_id)
    paths = result.query_paths
    expected = [
        [(test_ids[r], s) for r, s in zip(rows[:TOP].tolist(), scores[:TOP].tolist(), strict=True) if r >= 0]
        for rows, scores in zip(test_rows, test_scores, strict=True)
    ]
    assert all(len(e) == min(TOP, len(test_ids)) for e in expected)
    unseen = set(result.datamodule.manifest.unseen_categories)
    assert unseen, "the sample must hold leaves out of training for this test to mean anything"

    index(ckpt=str(ckpt), output_dir=str(tmp_path / "index"), faiss=True, accelerator="cpu", progress=False)
    searcher = Searcher.load(tmp_path / "index")  # the checkpoint is loaded afresh, from its file
    net = searcher.encoder.net
    assert {k: net.retrieval[k] for k in forced} == forced and net.trained_categories
    queries = [format_path(p) for p in paths]

    def ranked(found: list[dict]) -> list[list[tuple[str, float]]]:
        return [[(hit["id"], hit["score"]) for hit in f["results"]] for f in found]

    exact = searcher.search(queries, k=TOP)
    assert [f["category"] for f in exact] == queries
    full_depth = searcher.search(queries, k=TOP, use_faiss=True, faiss_depth=len(searcher.index))
    for name, found in (("exact", exact), ("faiss at full depth", full_depth)):
        for path, want, got in zip(paths, expected, ranked(found), strict=True):
            assert got, (name, format_path(path))  # an empty list never passes
            assert agrees(want, got), (name, format_path(path), want, got)
    novel = net.novel_mask([p[-1] for p in paths], paths)
    assert all(novel[q] for q, p in enumerate(paths) if p in unseen)  # unseen leaves are answered as novel

    # the comparison can fail: a search that ignored any one term of the record ranks otherwise
    for group, weights in FORCED.items():
        ignored = rewrite_retrieval(ckpt, tmp_path / f"no_{group}.ckpt", dict.fromkeys(weights, 0.0))
        found = Searcher(searcher.index, CategoryEncoder(ignored)).search(queries, k=TOP)
        differ = [
            format_path(p) for p, w, g in zip(paths, expected, ranked(found), strict=True) if not agrees(w, g)
        ]
        assert differ, f"dropping the {group} term changed no ranking: the test could not see it dropped"


def readme_example() -> str:
    """The code block of the README's "Use a trained model from Python" section."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Use a trained model from Python") :]
    return section[section.index("```python\n") + len("```python\n") : section.index("```\n", 10)]


@pytest.mark.slow
def test_the_readme_python_example_runs_and_ranks_with_the_full_score(adaptive_run, tmp_path, monkeypatch):
    _, ckpt, forced = adaptive_run
    code = readme_example()
    named = "runs/clip_ita_adaptive/version_0_refit/checkpoints/last.ckpt"
    assert named in code and "net.score(" in code and "@ vectors.T" not in code
    monkeypatch.chdir(tmp_path)
    for name, color in (("shoe.jpg", (200, 40, 40)), ("watch.jpg", (30, 30, 30))):
        Image.new("RGB", (80, 80), color).save(name)
    scope: dict[str, Any] = {}
    exec(compile(code.replace(named, str(ckpt)), "README.md", "exec"), scope)  # noqa: S102 - our own README
    net, scores, ranking = scope["net"], scope["scores"], scope["ranking"]
    assert net.retrieval[SEEN_LEXICAL_WEIGHT] == forced[SEEN_LEXICAL_WEIGHT] and scope["lexical"] is not None
    assert scores.shape == (1, 2) and sorted(ranking[0].tolist()) == [0, 1]
    assert torch.equal(ranking, scores.argsort(dim=1, descending=True))
    # the BM25 term is in the example's score: "Sports Shoes" meets the shoe's title ("shoe"), not the watch's
    lexical_term = scores - scope["queries"] @ scope["vectors"].T
    assert lexical_term[0, 0] > 0.01 and abs(float(lexical_term[0, 1])) < 1e-6
