"""``data.train_image_size``: raw-shard training batches at a lower resolution, evaluation at the tower's."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from clipita.factory import build

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("train_size", [None, 32])
def test_training_batches_take_the_training_size_and_evaluation_the_towers(tmp_path, train_size):
    extra = {"data.work_dir": str(tmp_path / "work"), "model.net.image_size": 48, "data.use_features": False}
    if train_size:
        extra["data.train_image_size"] = train_size
    built = build(["--config", str(REPO / "experiments" / "clip_ita_finetune.yaml"), *tiny_overrides(extra)])
    datamodule = built.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    train = next(iter(datamodule.train_dataloader()))["image"]
    val = next(iter(datamodule.val_dataloader()))["image"]
    assert tuple(train.shape[-2:]) == ((train_size, train_size) if train_size else (48, 48))
    assert tuple(val.shape[-2:]) == (48, 48)
