"""Feature extraction (`clipita encode`'s image path) vs the encoder's forward-only floor, measured in one run.

Ours: read the shards, decode + pad + resize + normalise every JPEG in a loader worker, batch, run the frozen image
tower, write the float16 cache (``datamodules.feature_encoding.encode_features``, image tower only). Floor: the same tower's
forward pass alone over the same images already decoded into tensors in memory. Goal: ours >= 0.85x the floor.

    python benchmarks/bench_feature_extraction.py --limit 512 --threads 1
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
import yaml

from datamodules.feature_encoding import encode_features
from datamodules.sharding import SPLITS, load_manifest, shard_catalogue
from lightning_modules.components import ImageEncoder

REPO = Path(__file__).resolve().parents[1]
FASHION = REPO.parent / "shared" / "datasets" / "fashion-product-images"


def build_shards(folder: Path, limit: int) -> tuple[str, dict]:
    import pandas as pd

    rows = pd.read_csv(FASHION / "styles.csv").head(limit)
    rows.to_csv(folder / "styles.csv", index=False)
    schema = {
        "table": str(folder / "styles.csv"),
        "image_root": str(FASHION / "images"),
        "id_column": "id",
        "title_column": "productDisplayName",
        "attribute_columns": ["gender", "baseColour"],
        "category_columns": ["masterCategory", "subCategory", "articleType"],
    }
    (folder / "catalogue.yaml").write_text(yaml.safe_dump(schema))
    shard_catalogue(str(folder / "catalogue.yaml"), str(folder / "shards"), shard_size=128, progress=False)
    return str(folder / "shards"), load_manifest(str(folder / "shards"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=512, help="catalogue images to encode")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 leaves the other core to decoding)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="decoding workers")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = ImageEncoder().eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shard_dir, manifest = build_shards(folder, args.limit)
        n = manifest.sharded
        # the floor's input: every image decoded and transformed once, outside the timing
        import io

        from PIL import Image

        from datamodules.shard_io import iter_shard_samples

        images = [
            encoder.transform(Image.open(io.BytesIO(s["jpg"])).convert("RGB"))
            for s in iter_shard_samples(
                [u for split in SPLITS for u in manifest.shard_urls(shard_dir, split)]
            )
        ]
        batches = [torch.stack(images[i : i + args.batch_size]) for i in range(0, n, args.batch_size)]
        floor_s, ours_s = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with torch.no_grad():
                for b in batches:
                    encoder(b)
            floor_s.append(time.perf_counter() - start)
            shutil.rmtree(folder / "features", ignore_errors=True)
            start = time.perf_counter()
            encode_features(
                shard_dir,
                manifest,
                folder / "features",
                encoder,
                None,
                args.batch_size,
                args.workers,
                progress=False,
            )
            ours_s.append(time.perf_counter() - start)
    floor, ours = min(floor_s), min(ours_s)
    print(f"images: {n}, batch {args.batch_size}, torch threads {args.threads}, best of {args.repeats}")
    print(f"floor (forward only, pre-decoded): {n / floor:7.1f} img/s  ({floor:.1f} s)")
    print(f"ours  (shards -> decode -> encode -> cache): {n / ours:7.1f} img/s  ({ours:.1f} s)")
    print(f"ratio ours/floor: {floor / ours:.2f}x  (goal >= 0.85x)")


if __name__ == "__main__":
    main()
