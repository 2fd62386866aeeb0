"""The GPU check's CPU-runnable parts: its judgements (loss trend, metric agreement), its no-GPU exit, and its
fine-tune and head-only checks on CPU-sized settings (``bf16-mixed`` on CPU autocast for the fine-tune)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import CheckFailed, Settings, check_losses, compare_metrics


def test_a_falling_finite_loss_passes_and_reports_its_trend() -> None:
    losses = [3.0 - 0.1 * i for i in range(20)]
    result = check_losses(losses, max_fraction=0.9)
    assert result["steps"] == 20
    assert result["first_loss"] == pytest.approx(2.95) and result["last_loss"] == pytest.approx(1.15)


@pytest.mark.parametrize(
    ("losses", "message"),
    [
        ([2.0] * 20, "did not fall"),
        ([2.0 - 0.05 * i for i in range(19)] + [math.nan], "non-finite"),
        ([2.0, 1.0, 0.5], "at least 10"),
        ([1.0 + 0.01 * i for i in range(30)], "did not fall"),
    ],
)
def test_a_flat_rising_short_or_nan_loss_fails(losses: list[float], message: str) -> None:
    with pytest.raises(CheckFailed, match=message):
        check_losses(losses, max_fraction=0.9)


def test_metrics_agree_within_the_tolerance_and_name_the_worst_gap() -> None:
    cpu = {"test/all/map@10": 0.50, "test/specific/map@10": 0.40, "test/all/mrr": 0.9}
    result = compare_metrics(cpu, {"test/all/map@10": 0.51, "test/specific/map@10": 0.395}, tolerance=0.02)
    assert result["metrics"] == 2 and result["worst"] == "test/all/map@10"
    assert result["max_abs_diff"] == pytest.approx(0.01)
    with pytest.raises(CheckFailed, match="test/specific/map@10"):
        compare_metrics(cpu, {"test/all/map@10": 0.50, "test/specific/map@10": 0.35}, tolerance=0.02)
    with pytest.raises(CheckFailed, match="lacks"):
        compare_metrics(cpu, {"test/all/map@10": 0.50}, tolerance=0.02)
    with pytest.raises(CheckFailed, match="no map@10"):
        compare_metrics({"test/all/mrr": 1.0}, {}, tolerance=0.02)


def test_without_a_gpu_it_says_so_and_exits_2(monkeypatch, capsys) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == gpu_check.NO_GPU_EXIT
    assert "no CUDA GPU" in capsys.readouterr().err


def test_a_failing_check_is_reported_and_the_others_still_run(monkeypatch, tmp_path: Path, capsys) -> None:
    def fails(*args, **kwargs):
        raise CheckFailed("the loss did not fall: 2.0 -> 2.0")

    def passes(*args, **kwargs):
        return {"metrics": 3, "max_abs_diff": 0.001, "worst": "test/all/map@10", "all_cpu": 0.5}

    monkeypatch.setattr(gpu_check, "finetune_check", fails)
    monkeypatch.setattr(gpu_check, "head_only_check", passes)
    code = gpu_check.main(
        ["--cpu-dry-run", "--checks", "finetune", "head_only", "--json", str(tmp_path / "r.json")]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED finetune: the loss did not fall" in out and "(c) head-only: 3 map@10" in out
    assert "the loss did not fall" in (tmp_path / "r.json").read_text()


@pytest.mark.slow
def test_the_bf16_fine_tune_check_runs_on_the_cpu(tmp_path: Path) -> None:
    settings = Settings.dry_run()
    settings.finetune_steps = 20
    assert settings.precision == "bf16-mixed" and settings.accelerator == "cpu"
    result = gpu_check.finetune_check(
        settings, tmp_path, max_fraction=1.0
    )  # 20 tiny steps: finite and falling
    assert result["steps"] == 20 and result["tower_tensors_changed"] > 0
    assert result["last_loss"] < result["first_loss"]


@pytest.mark.slow
def test_the_head_only_fit_is_reproducible_so_the_cpu_gpu_comparison_means_something(tmp_path: Path) -> None:
    settings = Settings.dry_run()
    first = gpu_check.head_only_metrics(settings, tmp_path / "a", "cpu")
    second = gpu_check.head_only_metrics(settings, tmp_path / "b", "cpu")  # encoded afresh in another folder
    assert compare_metrics(first, second, tolerance=0.0)["max_abs_diff"] == 0.0


@pytest.mark.gpu
def test_the_fine_tune_check_on_the_gpu(tmp_path: Path) -> None:
    settings = Settings()
    settings.finetune_steps = 60
    result = gpu_check.finetune_check(settings, tmp_path, max_fraction=1.0)
    assert result["tower_tensors_changed"] > 0


@pytest.mark.parametrize(
    ("argv", "expected"), [([], (1.0, 0.0)), (["--max-loss-fraction", "0.8"], (0.8, 0.0))]
)
def test_the_dry_run_relaxes_the_thresholds_unless_given(
    monkeypatch, argv: list[str], expected: tuple
) -> None:
    seen = {}

    def record(name):
        def check(settings, work_dir, threshold):
            seen[name] = threshold
            return {}

        return check

    monkeypatch.setattr(gpu_check, "finetune_check", record("finetune"))
    monkeypatch.setattr(gpu_check, "throughput_check", record("throughput"))
    assert gpu_check.main(["--cpu-dry-run", "--checks", "finetune", "throughput", *argv]) == 0
    assert (seen["finetune"], seen["throughput"]) == expected
