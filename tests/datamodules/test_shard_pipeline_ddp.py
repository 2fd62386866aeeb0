"""Two CPU processes (gloo DDP) stream deliberately uneven shards: both must take the same number of training
steps (a per-step all_reduce would hang or fail otherwise), and evaluation must read every sample once."""

from __future__ import annotations

import io
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import webdataset as wds
from PIL import Image
from torchvision import transforms

from clipita_core.tree import CategoryTree
from datamodules.shard_pipeline import build_shard_pipeline

WORLD_SIZE = 2
SIZES = [5, 17, 40]  # uneven on purpose: split by rank, rank 0 would get 45 samples and rank 1 only 17
BATCH_SIZE = 4
EPOCHS = 2
COLLECTIVE_TIMEOUT_S = 120  # a collective stuck waiting for the other rank fails after this
TEST_TIMEOUT_S = 300  # and the whole test fails (processes killed) after this
PATHS = [("Apparel", "Topwear", "Shirts"), ("Footwear", "Shoes", "Sports Shoes"), ("Home", "Candles")]
TRANSFORM = transforms.Compose([transforms.Resize((8, 8)), transforms.ToTensor()])


def _write_shards(folder: Path) -> list[str]:
    urls = []
    for shard, size in enumerate(SIZES):
        url = str(folder / f"train-{shard:06d}.tar")
        with wds.TarWriter(url) as sink:
            for i in range(size):
                buffer = io.BytesIO()
                Image.new("RGB", (10, 10), (i * 5 % 256, 90, 30)).save(buffer, format="JPEG")
                key = f"s{shard}-{i:03d}"
                record = {
                    "id": key,
                    "title": key,
                    "attributes": {},
                    "category": list(PATHS[i % 3]),
                    "split": "train",
                }
                sink.write({"__key__": key, "jpg": buffer.getvalue(), "json": json.dumps(record).encode()})
        urls.append(url)
    return urls


def _rank_main(rank: int, folder: str, resampled: bool, num_workers: int) -> None:
    # Spawned ranks inherit the "spawn" start method; fork the DataLoader workers as torchrun-launched ranks
    # do, instead of paying a fresh interpreter + torch import per worker on a small CI machine.
    mp.set_start_method("fork", force=True)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{folder}/rendezvous",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    try:
        urls = sorted(str(p) for p in Path(folder).glob("train-*.tar"))
        tree = CategoryTree.from_paths(PATHS)
        train = build_shard_pipeline(  # rank and world size come from torch.distributed
            urls, TRANSFORM, tree, BATCH_SIZE, training=True, epoch_samples=sum(SIZES), resampled=resampled,
            num_workers=num_workers, shuffle_buffer=16,
        )  # fmt: skip
        steps = []
        for _ in range(EPOCHS):
            count = 0
            for batch in train:
                assert batch["image"].shape[0] == BATCH_SIZE
                total = torch.ones(1)
                dist.all_reduce(total)  # what DDP does every step: hangs if the other rank has stopped
                assert total.item() == WORLD_SIZE
                count += 1
            steps.append(count)
        evaluate = build_shard_pipeline(
            urls, TRANSFORM, tree, BATCH_SIZE, training=False, num_workers=num_workers
        )  # no collective per step here: ranks may get different batch counts
        seen = [pid for batch in evaluate for pid in batch["product_id"]]
        gathered: list[list[str] | None] = [None] * WORLD_SIZE
        dist.all_gather_object(gathered, seen)
        result = {"rank": rank, "world_size": train.world_size, "len": len(train), "steps": steps}
        result["eval_ids"] = sorted(pid for part in gathered for pid in part or [])
        Path(folder, f"result-{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize(("resampled", "num_workers"), [(True, 2), (False, 0)])
def test_two_cpu_ranks_take_equal_steps_over_uneven_shards(
    tmp_path: Path, resampled: bool, num_workers: int
) -> None:
    _write_shards(tmp_path)
    os.environ.pop("RANK", None)
    os.environ.pop("WORLD_SIZE", None)
    context = mp.spawn(
        _rank_main, args=(str(tmp_path), resampled, num_workers), nprocs=WORLD_SIZE, join=False
    )
    deadline = time.monotonic() + TEST_TIMEOUT_S
    try:
        while not context.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"DDP ranks did not finish within {TEST_TIMEOUT_S}s (hang)")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    results = [json.loads((tmp_path / f"result-{r}.json").read_text()) for r in range(WORLD_SIZE)]
    expected_steps = -(-sum(SIZES) // (WORLD_SIZE * BATCH_SIZE))  # ceil(62 / 8) = 8
    for result in results:
        assert result["world_size"] == WORLD_SIZE
        assert result["len"] == expected_steps
        assert result["steps"] == [expected_steps] * EPOCHS
    all_ids = sorted(f"s{shard}-{i:03d}" for shard, size in enumerate(SIZES) for i in range(size))
    assert results[0]["eval_ids"] == all_ids  # every sample exactly once over both ranks
