"""The tiny retrieval fixtures shared by the retrieval tests: a tiny CLIP-ITA trained once per session on the sample
catalogue (cached on disk, so every test file reuses it) and indexed, and synthetic current-format indexes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import tiny_overrides

from clipita.cli import main as clipita
from clipita.retrieval.faiss_index import build_faiss_index
from clipita.retrieval.index_shards import IndexShards, merge_products
from clipita.retrieval.search_index import SearchIndex
from clipita_core.index_info import INDEX_JSON, INDEX_VERSION, IndexShard
from datamodules.features import LEXICAL_TOKENS

REPO = Path(__file__).resolve().parents[3]
TINY_FIT = tiny_overrides({"trainer.max_epochs": 2, "test_after_fit": False})


def run_clipita(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1"
    )
    cmd = [sys.executable, "-m", "clipita.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def train_tiny_model(base: Path) -> Path:
    """Train CLIP-ITA for 2 epochs on a 160-product sample under ``base`` (once: reused when already there).

    Returns:
        The run's ``last.ckpt`` (its ``config.yaml`` sits two folders up).
    """
    done = base / "checkpoint.txt"
    if done.is_file():
        return Path(done.read_text())
    base.mkdir(parents=True, exist_ok=True)
    result = run_clipita(
        [
            "fit",
            "--config",
            str(REPO / "experiments" / "quickstart.yaml"),
            *TINY_FIT,
            "--data.work_dir",
            str(base / "work"),
            "--trainer.logger.init_args.save_dir",
            str(base / "runs"),
        ],
        cwd=base,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = next((base / "runs").rglob("last.ckpt"))
    done.write_text(str(ckpt))
    return ckpt


def build_tiny_index(base: Path) -> Path:
    """Index every split of the tiny model's sample (with an HNSW FAISS index when faiss is installed)."""
    folder = base / "index_all"
    if (folder / INDEX_JSON).is_file():
        return folder
    ckpt = train_tiny_model(base)
    args = ["index", "--ckpt", str(ckpt), "--output_dir", str(folder), "--split", "all"]
    args += ["--accelerator", "cpu", "--progress", "false", "--faiss", str(has_faiss()).lower()]
    clipita(args)
    return folder


def synthetic_index(
    folder: Path, n: int = 500, d: int = 32, seed: int = 0, shards: int = 3, vocabulary: int = 0
) -> SearchIndex:
    """A current-format index (per-shard arrays) of ``n`` random unit vectors in ``shards`` shards; with a
    ``vocabulary``, random lexical token rows (``-1`` padded) beside them; with faiss installed, an HNSW index."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    bounds = np.linspace(0, n, shards + 1).astype(int)
    arrays = ["embedding", "embedding16"] + ([LEXICAL_TOKENS] if vocabulary else [])
    layout = IndexShards(folder, [IndexShard("test", f"test-{s:06d}.tar", int(bounds[s + 1] - bounds[s])) for s in range(shards)], arrays)  # fmt: skip
    layout.prepare({"synthetic": seed})
    tokens = rng.integers(0, vocabulary or 1, size=(n, 6))
    tokens[rng.random((n, 6)) < 0.4] = -1
    for s, shard in enumerate(layout.shards):
        rows = slice(bounds[s], bounds[s + 1])
        ids = [f"p{i}" for i in range(bounds[s], bounds[s + 1])]
        frame = pd.DataFrame(
            {
                "id": ids,
                "title": ids,
                "category": "A > B",
                "category_path": json.dumps(["A", "B"]),
                "split": "test",
            }
        )
        shard_arrays = {"embedding": emb[rows], "embedding16": emb[rows].astype(np.float16)}
        if vocabulary:
            shard_arrays[LEXICAL_TOKENS] = np.sort(tokens[rows], axis=1)[:, ::-1].astype(np.int32)
        layout.write_shard(shard.name, ids, shard_arrays, frame)
    merge_products(layout, folder / "products.parquet")
    info = {
        "version": INDEX_VERSION, "checkpoint": "none", "tree": [["A"], ["A", "B"]], "faiss": None,
        "files": {"products": "products.parquet", "arrays": {a: "" for a in arrays}},
        "shards": [{"split": x.split, "name": x.name, "count": x.count} for x in layout.shards],
    }  # fmt: skip
    if has_faiss():
        import faiss

        index, params = build_faiss_index(emb, kind="hnsw", ef_search=64)
        faiss.write_index(index, str(folder / params["file"]))
        info["faiss"] = params
    (folder / INDEX_JSON).write_text(json.dumps(info))
    return SearchIndex.load(folder)


def tiny_base_dir(tmp_path_factory) -> Path:
    """Where the session's tiny model and its index live (shared by every retrieval test file)."""
    return tmp_path_factory.getbasetemp() / "tiny_clip_ita"
