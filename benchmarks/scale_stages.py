"""The stages of the scale benchmark (``benchmarks/bench_scale.py``), and the generated catalogue and towers they
run on.

Catalogue: a CSV of N products (3-level categories, a title, 3 attributes) pointing at 256 distinct tiny 24 px
JPEGs. Image tower: timm ``test_efficientnet`` at 32 px, random weights. Text tower: ``minilm`` (the real offline
MiniLM) or ``hash`` (a tiny deterministic text tower: a hashed bag of words, 64-d, no network, for sizes where MiniLM
CPU time is out of reach). Every stage runs in its own process(es), which report their own peak RSS:

- encode: ``datamodules.feature_encoding.encode_features`` (the code ``clipita encode`` and the DataModule run),
  1 rank, then 2 ranks (gloo, file rendezvous) into a fresh folder; 1 decoding worker per rank, 1 torch thread.
- train: one epoch over the train split's ``FeatureSplit`` (positional reads, ``EpochSeededSampler``), batch 256,
  a linear image/text projection trained with in-batch InfoNCE (the data path at scale, not the full ClipIta).
- eval: the test split streamed in chunks (``FeatureSplit.iter_chunks``), product embeddings scored against the
  category table (top-10 per category kept, chunk by chunk).
- index: ``clipita index``'s predict job (``clipita.retrieval.index_job.IndexJob``) over every split's feature rows, 1 rank
  then 2 ranks (Lightning DDP, gloo, launched like torchrun), writing one float32 + float16 index shard per input
  shard with its product metadata (read from the shard's tar headers in the rank's ``--workers`` loader workers),
  then rank 0 assembling the index
  (``clipita.retrieval.index.finish_index``); the "network" is a fixed random projection of the image features (64-d).
- search / search16: ``SearchIndex`` over the memory-mapped index shards: 64 category queries, top 10, the exact
  float32 chunked scan, then the float16 scan of the shards' float16 arrays with float32 re-ranking.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path


# ------------------------------------------------------------------------------------------------ towers
class HashText:
    """A tiny text tower: words hashed into 64 buckets, L2-normalised (deterministic, CPU-cheap)."""

    output_dim = 64

    def cache_key(self) -> dict:
        return {"kind": "text", "model_name": "bench-hash-64"}

    def eval(self):
        return self

    def __call__(self, texts, batch_size: int = 256):
        import torch

        out = torch.zeros(len(texts), self.output_dim)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest()[:6], 16) % self.output_dim] += 1.0
        return torch.nn.functional.normalize(out, dim=-1)


def towers(text: str):
    import torch

    torch.set_num_threads(1)
    from lightning_modules.components import ImageEncoder, TextEncoder

    image = ImageEncoder(image_model="test_efficientnet", image_weights="none", image_size=32).eval()
    return image, (TextEncoder() if text == "minilm" else HashText())


# ------------------------------------------------------------------------------------------------ stages
def make_catalogue(folder: Path, n: int) -> Path:
    import csv

    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for k in range(256):
        Image.new("RGB", (24, 24), (k, (k * 7) % 256, (k * 13) % 256)).save(images / f"{k}.jpg", quality=80)
    colours, materials, genders = (
        ["Red", "Blue", "Black", "White", "Green"],
        ["Cotton", "Wool", "Silk"],
        ["Men", "Women"],
    )
    with open(folder / "products.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "colour", "material", "gender", "l1", "l2", "l3", "image"])
        for i in range(n):
            a, b, c = i % 5, (i // 5) % 8, (i // 40) % 6
            writer.writerow([
                f"p{i}", f"{colours[a]} {materials[i % 3]} item {i % 997}", colours[a], materials[i % 3],
                genders[i % 2], f"Dept{a}", f"Group{a}-{b}", f"Type{a}-{b}-{c}", f"{i % 256}.jpg",
            ])  # fmt: skip
    schema = {
        "table": "products.csv", "image_root": "images", "id_column": "id", "title_column": "title",
        "attribute_columns": ["colour", "material", "gender"], "category_columns": ["l1", "l2", "l3"],
        "image_column": "image",
    }  # fmt: skip
    import yaml

    (folder / "catalogue.yaml").write_text(yaml.safe_dump(schema))
    return folder / "catalogue.yaml"


def stage_shard(args) -> dict:
    from datamodules.sharding import shard_catalogue

    catalog = make_catalogue(Path(args.work), args.n)
    start = time.perf_counter()
    manifest = shard_catalogue(str(catalog), str(Path(args.work) / "shards"), shard_size=args.shard_size,
                               progress=False)  # fmt: skip
    return {"seconds": time.perf_counter() - start, "products": manifest.sharded}


def stage_encode(args) -> dict:
    from datamodules.feature_encoding import encode_features
    from datamodules.sharding import load_manifest

    barrier = None
    if args.world > 1:
        import datetime

        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"file://{args.work}/rdv-{args.tag}", rank=args.rank,
                                world_size=args.world, timeout=datetime.timedelta(hours=3))  # fmt: skip
        barrier = dist.barrier
    image, text = towers(args.text)
    shard_dir = str(Path(args.work) / "shards")
    manifest = load_manifest(shard_dir, check_hashes=False)
    if barrier:
        barrier()
    start = time.perf_counter()
    encode_features(shard_dir, manifest, Path(args.work) / f"features-{args.tag}", image, text, batch_size=128,
                    num_workers=args.workers, rank=args.rank, world_size=args.world, barrier=barrier,
                    progress=False)  # fmt: skip
    return {"seconds": time.perf_counter() - start, "products": manifest.sharded}


def _split(args, split: str):
    import json as _json

    from clipita_core.tree import CategoryTree
    from datamodules.feature_split import FeatureSplit
    from datamodules.features import FeatureStore, manifest_shards
    from datamodules.sharding import load_manifest

    shard_dir = str(Path(args.work) / "shards")
    manifest = load_manifest(shard_dir, check_hashes=False)
    stores = []
    for folder in sorted((Path(args.work) / "features-1").iterdir()):
        store = FeatureStore(
            folder, _json.loads((folder / "meta.json").read_text()), manifest_shards(manifest)
        )
        store.require_complete()
        stores.append(store)
    info = manifest.split(split)
    tree = CategoryTree.from_json(manifest.tree_paths)
    return (
        FeatureSplit(stores, [(n, info.shard_files[n].count) for n in info.shards], tree),
        tree,
        info,
    )


def stage_train(args) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from datamodules.epoch_sampler import EpochSeededSampler

    torch.set_num_threads(1)
    dataset, _, _ = _split(args, "train")
    first = dataset[0]
    img = torch.nn.Linear(first["image_features"].shape[-1], 64)
    txt = torch.nn.Linear(first["title_features"].shape[-1], 64)
    optim = torch.optim.AdamW([*img.parameters(), *txt.parameters()], lr=1e-3)
    sampler = EpochSeededSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=256, sampler=sampler, drop_last=True, num_workers=0)
    start = time.perf_counter()
    for batch in loader:
        a = torch.nn.functional.normalize(img(batch["image_features"]), dim=-1)
        b = torch.nn.functional.normalize(txt(batch["title_features"]), dim=-1)
        loss = torch.nn.functional.cross_entropy(a @ b.T / 0.07, torch.arange(len(a)))
        optim.zero_grad()
        loss.backward()
        optim.step()
    return {"seconds": time.perf_counter() - start, "products": len(dataset)}


def _embed(batch, dim: int = 64):
    import torch

    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(batch["image_features"].shape[-1], dim, generator=gen)
    return torch.nn.functional.normalize(batch["image_features"] @ proj, dim=-1)


def stage_eval(args) -> dict:
    import torch

    torch.set_num_threads(1)
    dataset, tree, _ = _split(args, "test")
    queries = torch.nn.functional.normalize(
        torch.randn(len(tree), 64, generator=torch.Generator().manual_seed(1))
    )
    best = torch.full((len(tree), 10), -2.0)
    start = time.perf_counter()
    for chunk in dataset.iter_chunks(8192):
        scores = queries @ _embed(chunk).T
        best = torch.cat([best, scores], dim=1).topk(10, dim=1).values
    return {"seconds": time.perf_counter() - start, "products": len(dataset)}


def stage_index(args) -> dict:
    """``clipita index``'s job (``IndexJob`` over ``IndexShardBatches``, Lightning predict, DDP gloo for 2 ranks)
    on every split's feature rows, with a fixed random projection of the image features as the "network"."""
    import lightning as L
    import torch

    from clipita.retrieval.index import finish_index
    from clipita.retrieval.index_job import IndexJob, IndexShardBatches, plan
    from clipita.retrieval.index_shards import IndexShards, manifest_index_shards
    from clipita_core.index_info import IndexInfo
    from datamodules.shard_jobs import shard_loader
    from datamodules.sharding import load_manifest

    torch.set_num_threads(1)
    if args.world > 1:  # launched like torchrun: Lightning sees the ranks and does not spawn
        os.environ.update(LOCAL_RANK=str(args.rank), NODE_RANK="0", WORLD_SIZE=str(args.world),
                          RANK=str(args.rank), MASTER_ADDR="127.0.0.1")  # fmt: skip
    shard_dir = str(Path(args.work) / "shards")
    manifest = load_manifest(shard_dir, check_hashes=False)
    splits = ("train", "val", "test")
    features = {split: _split(args, split)[0] for split in splits}
    out = Path(args.work) / f"index-{args.tag}"
    shards = IndexShards(out, manifest_index_shards(manifest, splits))

    class Data(L.LightningDataModule):
        def setup(self, stage: str) -> None:
            self.index_shards, self.shard_dir = shards, shard_dir
            if self.trainer.global_rank == 0:
                shards.prepare({"bench": args.n})
            self.trainer.strategy.barrier()

        def predict_dataloader(self):
            jobs = plan(shards, self.trainer.global_rank, self.trainer.world_size)
            return shard_loader(IndexShardBatches(jobs, 256, features, shard_dir), args.workers)

    class Net(torch.nn.Module):
        def encode_product_for_retrieval(self, batch):
            return _embed(batch)

    trainer = L.Trainer(accelerator="cpu", devices=args.world, strategy="ddp" if args.world > 1 else "auto",
                        logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, use_distributed_sampler=False)  # fmt: skip
    start = time.perf_counter()
    trainer.predict(IndexJob(Net()), datamodule=Data(), return_predictions=False)
    trainer.strategy.barrier()
    predicted = time.perf_counter()
    if trainer.is_global_zero:
        finish_index(out, shards, IndexInfo(checkpoint="none", splits=list(splits)))
    end = time.perf_counter()
    return {"seconds": end - start, "products": len(shards.rows("embedding")), "predict_seconds": predicted - start,
            "finish_seconds": end - predicted}  # fmt: skip


def stage_search(args, scan: str = "float32") -> dict:
    """``SearchIndex`` over the memory-mapped shards: 64 category queries, top 10 (chunked scan), their hits'
    metadata (read from the hits' shard tables)."""
    import torch

    from clipita.retrieval.search_index import SearchIndex

    torch.set_num_threads(1)
    index = SearchIndex.load(Path(args.work) / "index-1")
    queries = torch.nn.functional.normalize(
        torch.randn(64, 64, generator=torch.Generator().manual_seed(2)), dim=1
    )
    start = time.perf_counter()
    hits = index.hits(*index.topk(queries, k=10, scan=scan))
    assert sum(map(len, hits)) == 640
    return {"seconds": time.perf_counter() - start, "products": len(index)}


def stage_search16(args) -> dict:
    return stage_search(args, scan="float16")


STAGES = {"shard": stage_shard, "encode": stage_encode, "train": stage_train, "eval": stage_eval,
          "index": stage_index, "search": stage_search, "search16": stage_search16}  # fmt: skip
