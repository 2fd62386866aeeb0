"""The small generated catalogue sharded under two split seeds: what the feature-store reuse tests share."""

from __future__ import annotations

from pathlib import Path

from datamodules.sample_catalogue import generate_sample_catalogue
from datamodules.sharding import shard_catalogue


def shard_two_seeds(folder: Path, num_products: int = 90) -> Path:
    """``folder/catalogue`` (the built-in sample, seed 0) sharded into ``folder/shards/seed0`` and ``seed1``."""
    catalog = generate_sample_catalogue(str(folder / "catalogue"), num_products=num_products, seed=0)
    for seed in (0, 1):
        shard_catalogue(
            str(catalog), str(folder / "shards" / f"seed{seed}"), shard_size=20, seed=seed, progress=False
        )
    return folder
