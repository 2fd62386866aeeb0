"""Shard streaming throughput vs the JPEG-decode floor, on the same image files in the same run.

What is timed (images per second, best of ``--repeats`` passes, every pass over the same ``--limit`` images):

- ``shards``: our pipeline (``datamodules.shard_pipeline.build_shard_pipeline``) with ``--workers`` workers:
  read the tar shards, decode the JPEG, resize to 224 + normalise, collate the batch dict. Evaluation mode
  (every shard once) and training mode (resampled shards + sample shuffle buffer + ``with_epoch``).
- ``floor, loop``: a plain single-process loop over the files: open + decode + the same transform.
- ``floor, DataLoader``: the same per-file work in a map-style dataset read by a ``torch.utils.data.DataLoader``
  with ``--workers`` workers and the default collate (the comparable floor for ``shards``).

The shards are built from the files into a temporary folder before timing, and every file and shard is read
once beforehand so all methods start from a warm page cache.

Example:
    python benchmarks/bench_shard_streaming.py --images ../shared/datasets/fashion-product-images/images --limit 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

from datamodules.category_tree import CategoryTree  # noqa: E402
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
        with wds.TarWriter(url) as sink:
            for path in files[start : start + shard_size]:
                product_id = path.stem.replace(".", "_")
                record = {"id": product_id, "title": product_id, "attributes": {}, "category": list(CATEGORY)}
                record["split"] = "train"
                sink.write(
                    {"__key__": product_id, "jpg": path.read_bytes(), "json": json.dumps(record).encode()}
                )
        urls.append(url)
    return urls


def _count(batches: Iterable[object], key: str | None) -> int:
    total = 0
    for batch in batches:
        total += len(batch[key]) if key is not None else len(batch)  # type: ignore[index,arg-type]
    return total


def time_passes(run: Callable[[], int], repeats: int, expected: int) -> tuple[float, list[float]]:
    """Run ``run`` (one pass, returns images seen) ``repeats`` times; best images/s and every pass's."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        seen = run()
        elapsed = time.perf_counter() - start
        if seen != expected:
            raise RuntimeError(f"a pass saw {seen} images, expected {expected}")
        rates.append(seen / elapsed)
    return max(rates), rates


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
    parser.add_argument("--repeats", type=int, default=3)
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
            f"batch {args.batch_size}, {args.image_size}px, {args.workers} workers, best of {args.repeats}; "
            f"{os.cpu_count()} CPUs, torch {torch.__version__}, webdataset {wds.__version__}, "
            f"Python {platform.python_version()}"
        )

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

        expected_train = -(-n // args.batch_size) * args.batch_size  # with_epoch: full batches, rounded up
        # Each method's loader (and its persistent workers) is dropped before the next method runs.
        results: dict[str, tuple[float, list[float]]] = {
            "floor, loop (1 process)": time_passes(loop, args.repeats, n),
            f"floor, DataLoader ({args.workers} workers)": time_passes(floor_dataloader(), args.repeats, n),
            f"shards, eval stream ({args.workers} workers)": time_passes(shards(False), args.repeats, n),
            f"shards, train stream, resampled ({args.workers} workers)": time_passes(
                shards(True), args.repeats, expected_train
            ),
        }

    width = max(len(k) for k in results)
    for name, (best, rates) in results.items():
        print(f"{name:<{width}}  {best:8.1f} images/s   (passes: {', '.join(f'{r:.0f}' for r in rates)})")
    best = {name: value[0] for name, value in results.items()}
    names = list(best)
    loop_rate, floor_rate = best[names[0]], best[names[1]]
    for name in names[2:]:
        print(
            f"{name}: {best[name] / floor_rate:.2f}x the DataLoader floor, {best[name] / loop_rate:.2f}x the loop"
        )
    return best


if __name__ == "__main__":
    main()
