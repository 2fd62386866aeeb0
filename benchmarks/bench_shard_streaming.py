"""Shard streaming throughput vs the JPEG-decode floor, on the same image files in the same run.

Methods, each making one pass over the same ``--limit`` images:

- ``shards``: our pipeline (``datamodules.shard_pipeline.build_shard_pipeline``) with ``--workers`` workers:
  read the tar shards, decode the JPEG, resize to 224 + normalise, collate the batch dict. Evaluation mode
  (every shard once) and training mode (resampled shards + sample shuffle buffer + ``with_epoch``).
- ``floor, loop``: a plain single-process loop over the files: open + decode + the same transform.
- ``floor, DataLoader``: the same per-file work in a map-style dataset read by a
  ``torch.utils.data.DataLoader`` with ``--workers`` workers and the default collate: the comparable
  floor for ``shards``.

The methods run round-robin for ``--repeats`` rounds (so load from other processes on a shared machine hits
all of them alike); reported per method: best and median images/s over the rounds, and the median CPU time
per image summed over the process and its DataLoader workers (from /proc; the steadiest number on a busy
machine). The shards are built from the files into a temporary folder before timing, and every file and
shard is read once beforehand so all methods start from a warm page cache.

Example:
    python benchmarks/bench_shard_streaming.py --limit 2000 \\
        --images ../shared/datasets/fashion-product-images/images
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.utils.data
import webdataset as wds
from PIL import Image
from torchvision import transforms

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from clipita_core.tree import CategoryTree  # noqa: E402
from datamodules.records import ShardRecord  # noqa: E402
from datamodules.shard_io import ShardTarWriter  # noqa: E402
from datamodules.shard_pipeline import build_shard_pipeline  # noqa: E402

CATEGORY = ("Benchmark", "Images")


def make_transform(size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """Resize (shorter side) + centre crop to ``size``, to tensor, ImageNet-normalise."""
    return transforms.Compose(
        [
            transforms.Resize(size),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )


class FileImages(torch.utils.data.Dataset):
    """The floor's map-style dataset: decode one file and transform it.

    Args:
        files: JPEG paths.
        transform: The same transform the shard pipeline uses.
    """

    def __init__(self, files: list[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            return self.transform(image.convert("RGB"))


def write_shards(files: list[Path], folder: Path, shard_size: int) -> list[str]:
    """Write the files as product shards (ARCHITECTURE.md records, original JPEG bytes)."""
    urls: list[str] = []
    for start in range(0, len(files), shard_size):
        url = str(folder / f"train-{len(urls):06d}.tar")
        with ShardTarWriter(url) as sink:
            for path in files[start : start + shard_size]:
                product_id = path.stem.replace(".", "_")
                record = ShardRecord(id=product_id, category=tuple(CATEGORY), title=product_id, split="train")
                sink.write(record, path.read_bytes())
        urls.append(url)
    return urls


def _count(batches: Iterable[object], key: str | None) -> int:
    total = 0
    for batch in batches:
        total += len(batch[key]) if key is not None else len(batch)  # type: ignore[index,arg-type]
    return total


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children (DataLoader workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == me or ppid == me:
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def time_interleaved(
    methods: dict[str, tuple[Callable[[], int], int]], repeats: int
) -> dict[str, list[tuple[float, float]]]:
    """Time one pass of every method per round, ``repeats`` rounds (round-robin, so that load from other
    processes on a shared machine hits all methods alike).

    Args:
        methods: Name -> (one pass returning the images it saw, the count it must see).
        repeats: Number of rounds.

    Returns:
        Name -> (images/s, CPU milliseconds per image over this process and its workers) of each pass.
    """
    passes: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, (run, expected) in methods.items():
            cpu, start = cpu_seconds(), time.perf_counter()
            seen = run()
            elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            if seen != expected:
                raise RuntimeError(f"{name}: a pass saw {seen} images, expected {expected}")
            passes[name].append((seen / elapsed, 1000 * cpu / seen))
    return passes


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark and print images/s for every method and the ratios.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        Best images/s per method.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="../shared/datasets/fashion-product-images/images")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    images = Path(args.images)
    if not images.is_dir() and not images.is_absolute() and (REPO_ROOT / images).is_dir():
        images = REPO_ROOT / images
    files = sorted(images.glob("*.jpg"))[: args.limit]
    if not files:
        raise SystemExit(f"no .jpg files under {images}")
    n = len(files)
    transform = make_transform(args.image_size)
    tree = CategoryTree.from_paths([CATEGORY])

    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        urls = write_shards(files, Path(tmp), args.shard_size)
        for path in [*files, *map(Path, urls)]:  # warm the page cache for every method alike
            path.read_bytes()
        shard_bytes = sum(os.path.getsize(u) for u in urls)
        print(
            f"{n} images from {images} -> {len(urls)} shards ({shard_bytes / 2**20:.1f} MiB); "
            f"batch {args.batch_size}, {args.image_size}px, {args.workers} workers, {args.repeats} rounds; "
            f"{os.cpu_count()} CPUs, torch {torch.__version__}, webdataset {wds.__version__}, "
            f"Python {platform.python_version()}"
        )

        torch.set_num_threads(1)  # as in DataLoader workers; the main process of the loaders only waits

        def loop() -> int:
            count = 0
            for path in files:
                with Image.open(path) as image:
                    transform(image.convert("RGB"))
                count += 1
            return count

        def floor_dataloader() -> Callable[[], int]:
            loader = torch.utils.data.DataLoader(
                FileImages(files, transform),
                batch_size=args.batch_size,
                num_workers=args.workers,
                persistent_workers=args.workers > 0,
            )
            return lambda: _count(loader, None)

        def shards(training: bool) -> Callable[[], int]:
            loader = build_shard_pipeline(
                urls,
                transform,
                tree,
                args.batch_size,
                training=training,
                epoch_samples=n,
                num_workers=args.workers,
            )
            return lambda: _count(loader, "product_id")

        expected_train = -(-n // args.batch_size) * args.batch_size  # full batches, rounded up
        workers = f"{args.workers} workers"
        passes = time_interleaved(
            {
                "floor, loop (1 process)": (loop, n),
                f"floor, DataLoader ({workers})": (floor_dataloader(), n),
                f"shards, eval stream ({workers})": (shards(False), n),
                f"shards, train stream, resampled ({workers})": (shards(True), expected_train),
            },
            args.repeats,
        )

    width = max(len(k) for k in passes)
    best = {name: max(rate for rate, _ in values) for name, values in passes.items()}
    median = {name: statistics.median(rate for rate, _ in values) for name, values in passes.items()}
    cpu = {name: statistics.median(ms for _, ms in values) for name, values in passes.items()}
    print(f"{'method':<{width}}  best img/s  median img/s  CPU ms/img (median, incl. workers)")
    for name in passes:
        print(f"{name:<{width}}  {best[name]:10.0f}  {median[name]:12.0f}  {cpu[name]:10.2f}")
        print(f"{'':<{width}}  passes: {', '.join(f'{rate:.0f}' for rate, _ in passes[name])}")
    names = list(passes)
    for name in names[2:]:
        loop_name, floor_name = names[0], names[1]
        print(
            f"{name}: best {best[name] / best[floor_name]:.2f}x / "
            f"median {median[name] / median[floor_name]:.2f}x "
            f"the DataLoader floor ({best[name] / best[loop_name]:.2f}x / "
            f"{median[name] / median[loop_name]:.2f}x the loop); "
            f"CPU per image {cpu[name] / cpu[floor_name]:.2f}x the DataLoader floor's"
        )
    return best


if __name__ == "__main__":
    main()
