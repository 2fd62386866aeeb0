"""A fine-tuned checkpoint carries what was trained: loaded afresh, its image tower is the trained one (not the
pretrained weights it is named after), and ``clipita index`` + ``clipita search`` rank every category exactly as the
test of that checkpoint did (WiSE-FT mix applied on both sides)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from conftest import tiny_overrides

from clipita.experiment import fit_and_test
from clipita.retrieval.index import index
from clipita.retrieval.search import Searcher
from clipita_core.paths import format_path
from clipita_core.weights import WISE_FT_ALPHA
from lightning_modules import load_model

REPO = Path(__file__).resolve().parents[2]
TOP = 10


@pytest.mark.slow
def test_fine_tuned_checkpoint_restores_its_towers_and_search_ranks_as_its_test(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    weights = (
        tmp_path / "pretrained.pth"
    )  # the "pretrained" tower, by name (a file), as the offline packages are
    torch.save(timm.create_model("test_efficientnet", num_classes=0).state_dict(), weights)
    result = fit_and_test(
        str(REPO / "experiments" / "clip_ita_finetune.yaml"),
        tiny_overrides(
            {
                "data.work_dir": str(tmp_path / "work"),
                "data.sample_products": 240,
                "data.num_workers": 0,
                "model.net.image_model": "test_efficientnet",
                "model.net.image_weights": str(weights),
                "model.net.train_image_blocks": 1,
                "model.encoder_lr": 0.01,
                "model.warmup_steps": 0,
                "model.wise_ft_grid": [0.0, 1.0],
                "trainer.max_epochs": 2,
                "trainer.accumulate_grad_batches": 1,
                "trainer.logger.init_args.save_dir": str(tmp_path / "runs"),
                "trainer.enable_model_summary": False,
                "refit_after_choice": False,
            }
        ),
    )
    ckpt = result.best_checkpoint
    assert ckpt and Path(ckpt).is_file()
    trained = result.module.net
    assert WISE_FT_ALPHA in trained.retrieval, "WiSE-FT chose no mix"

    # the checkpoint holds the fine-tuned tower; load_model serves it (mixed by the chosen alpha)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("net.image_encoder.") for k in state)
    assert not any(k.startswith("net.text_encoder.") for k in state)  # the frozen text tower: rebuilt by name
    pretrained = torch.load(weights, weights_only=True)
    top = [k for k, p in trained.image_encoder.backbone.named_parameters() if p.requires_grad]
    assert top
    loaded = load_model(ckpt)
    alpha = loaded.retrieval[WISE_FT_ALPHA]
    for key in top:
        fine_tuned = state[f"net.image_encoder.backbone.{key}"]
        assert not torch.equal(fine_tuned, pretrained[key]), f"{key} did not train"
        served = loaded.image_encoder.backbone.state_dict()[key]
        assert torch.allclose(served, torch.lerp(pretrained[key], fine_tuned, alpha), atol=1e-6), key
    frozen_key = next(k for k, p in trained.image_encoder.backbone.named_parameters() if not p.requires_grad)
    assert torch.equal(loaded.image_encoder.backbone.state_dict()[frozen_key], pretrained[frozen_key])

    # index + search of the checkpoint loaded afresh rank as its test did (seen and unseen categories)
    paths = result.query_paths
    test_ids = [
        pid for batch in result.datamodule.test_dataloader() for pid in batch["product_id"]
    ]  # raw order
    ranking = result.module.rankings["test"]
    index(ckpt=ckpt, output_dir=str(tmp_path / "index"), split="test", accelerator="cpu", progress=False)
    searcher = Searcher.load(tmp_path / "index")
    results = searcher.search([format_path(p) for p in paths], k=TOP)
    for q, (path, found) in enumerate(zip(paths, results, strict=True)):
        expected = [test_ids[i] for i in ranking[q, :TOP].tolist() if i >= 0]
        got = [hit["id"] for hit in found["results"]]
        scores = [hit["score"] for hit in found["results"]]
        for a, b, s0, s1 in zip(expected, got, scores, scores[1:] + [float("-inf")], strict=False):
            assert a == b or abs(s0 - s1) < 1e-5, (format_path(path), expected, got)
