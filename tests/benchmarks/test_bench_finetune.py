"""bench_finetune's pieces: the step timer's arithmetic, the floor's in-memory loader, and both measurements (loop
on raw shards through the CLI's DataModule + Trainer, floor on one in-memory batch) on a tiny config."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.bench_finetune import InMemoryBatches, StepTimer, fit_config, measure, prepare


def test_the_timer_leaves_out_the_warmup_steps() -> None:
    timer = StepTimer(warmup=2)
    timer.ends = [0.0, 5.0, 10.0, 11.0, 12.0, 13.0]  # two slow warm-up steps, then 1 s per step
    assert timer.images_per_second(batch_size=32) == pytest.approx(32.0)
    timer.ends = timer.ends[:3]
    with pytest.raises(ValueError, match="more than 3 steps"):
        timer.images_per_second(32)


def test_the_floor_loader_repeats_one_batch() -> None:
    batch = {"image": object()}
    loader = InMemoryBatches(batch, steps=4)
    assert len(loader) == 4 and all(b is batch for b in loader) and len(list(loader)) == 4


@pytest.mark.slow
def test_loop_and_floor_run_the_same_fine_tune_step(tmp_path: Path) -> None:
    config = fit_config(
        str(tmp_path / "work"), 160, batch_size=8, image_size=32, workers=1, steps=4,
        image_model="test_efficientnet", image_weights="none",
    )  # fmt: skip
    assert config["data"]["use_features"] is False and config["model"]["net"]["train_image_encoder"] is True
    assert prepare(config) > 8  # the train split holds more than one batch
    for mode in ("loop", "floor"):
        result = measure(config, mode, warmup=1)
        assert result["mode"] == mode and result["steps"] == 4
        assert result["images_per_second"] > 0 and all(math.isfinite(x) for x in result["losses"])
        assert result["peak_rss_mb"] > 100
