"""The raw-image path (``data.use_features: false``, what fine-tuning trains and tests on) scores with the BM25
(lexical) term as the cached-feature path does: with the towers frozen, one checkpoint tested on raw shards ranks
every category as it ranks it tested on the feature cache, lexical term included, and ``clipita index`` of raw
shards keeps the products' token rows as an index built from features does.

The feature cache stores the towers' outputs as float16, the raw path computes them in float32: the towers' outputs
are rounded to float16 on both paths here (a forward hook), so the dense parts agree and the comparison sees the
lexical term (without the rounding, the top scores differ by the cache's float16 rounding: up to 1e-5 on this
tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_overrides
from ranking_agreement import agrees

from clipita.experiment import fit_and_test
from clipita.retrieval.index import index
from clipita_core.weights import NOVEL_LEXICAL_WEIGHT, SEEN_LEXICAL_WEIGHT
from datamodules.features import LEXICAL_TOKENS
from lightning_modules.checkpointing import KEY, data_options

REPO = Path(__file__).resolve().parents[2]
TOP = 10
LEXICAL = {SEEN_LEXICAL_WEIGHT: 0.5, NOVEL_LEXICAL_WEIGHT: 1.0}


def _half(module, args, output):
    return output.half().float()


def ranked(result, datamodule, ckpt: Path) -> tuple[list[list[tuple[str, float]]], dict[str, float]]:
    """Each category's top products ``(id, score)`` and the test metrics of ``ckpt`` tested on ``datamodule``."""
    metrics = result.trainer.test(result.module, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False)[0]
    scores, rows, _ = result.module.metrics["test"].ranking()
    if datamodule.hparams.use_features:
        ids = list(datamodule.datasets["test"].product_id)
    else:  # the evaluation stream's order (one process, no workers: the shards in order)
        ids = [pid for batch in datamodule.test_dataloader() for pid in batch["product_id"]]
    top = [
        [(ids[r], s) for r, s in zip(r_[:TOP].tolist(), s_[:TOP].tolist(), strict=True) if r >= 0]
        for r_, s_ in zip(rows, scores, strict=True)
    ]
    return top, metrics


@pytest.mark.slow
def test_the_raw_path_ranks_with_the_lexical_term_as_the_feature_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fit_and_test(
        str(REPO / "experiments" / "clip_ita_adaptive.yaml"),  # the recipe fine-tuning is built on: BM25 term
        tiny_overrides(
            {
                "data.work_dir": str(tmp_path / "work"),
                "trainer.max_epochs": 1,
                "trainer.logger.init_args.save_dir": str(tmp_path / "runs"),
                "trainer.enable_model_summary": False,
                "refit_after_choice": False,
            }
        ),
        test=False,
    )
    checkpoint = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    checkpoint[KEY]["retrieval"] = {**checkpoint[KEY]["retrieval"], **LEXICAL}  # a live lexical term
    ckpt = tmp_path / "lexical.ckpt"
    torch.save(checkpoint, ckpt)
    net = result.module.net
    assert net.lexical is not None and not net.image_encoder.trainable and not net.text_encoder.trainable
    for tower in (net.image_encoder, net.text_encoder):
        tower.register_forward_hook(_half)  # the feature cache's float16, on both paths

    features, feature_metrics = ranked(result, result.datamodule, ckpt)
    assert result.module.lexical_query is not None  # the feature path scored with BM25
    hparams = {k: v for k, v in result.datamodule.hparams.items() if not k.startswith("_")}
    raw_dm = type(result.datamodule)(**{**hparams, "use_features": False}, encoders=net)
    raw, raw_metrics = ranked(result, raw_dm, ckpt)
    assert result.module.lexical_query is not None and {k: net.retrieval[k] for k in LEXICAL} == LEXICAL
    assert len(raw) == len(features) and all(features)
    for path, want, got in zip(result.query_paths, features, raw, strict=True):
        assert agrees(want, got), (path, want, got)
    assert raw_metrics == pytest.approx(feature_metrics, abs=1e-6)
    # the raw path counted its BM25 statistics from the training shards' records: the token store's counts
    want, got = result.datamodule.lexical_statistics, raw_dm.lexical_statistics
    np.testing.assert_array_equal(got["doc_freq"], want["doc_freq"])
    assert (got["num_docs"], got["avg_len"]) == (want["num_docs"], want["avg_len"])

    # the comparison can fail: raw batches without tokens (as before) rank without the BM25 term
    monkeypatch.setattr(raw_dm, "lexical_tokenizer", lambda: None)
    dense_only, _ = ranked(result, raw_dm, ckpt)
    assert any(not agrees(w, g) for w, g in zip(features, dense_only, strict=True))

    # clipita index of raw shards keeps the token rows, as an index built from the feature cache does
    raw_config = tmp_path / "raw.yaml"
    raw_config.write_text(yaml.safe_dump({"data": {**data_options(ckpt), "use_features": False}}))
    rows = {}
    for name, fit_config in (("features", None), ("raw", raw_config)):
        out = tmp_path / f"index-{name}"
        index(ckpt=str(ckpt), output_dir=str(out), fit_config=fit_config, accelerator="cpu", progress=False)
        shards = sorted(out.glob(f"shards/*.{LEXICAL_TOKENS}.npy"))
        assert shards, name
        rows[name] = [np.load(s) for s in shards]
    assert json.loads((tmp_path / "index-raw" / "index.json").read_text()).get("use_features") in (
        False,
        None,
    )
    assert len(rows["raw"]) == len(rows["features"])
    for a, b in zip(rows["features"], rows["raw"], strict=True):
        np.testing.assert_array_equal(a, b)
