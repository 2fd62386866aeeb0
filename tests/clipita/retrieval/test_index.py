"""``clipita index``: its data options, the checkpoint read that unpickles nothing, the index folder of the tiny model
and a two-process DDP index that equals the single-process one and resumes (``clipita.retrieval.index``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_retrieval import build_tiny_index, has_faiss, run_clipita, tiny_base_dir, train_tiny_model

from clipita.cli import main as clipita
from clipita.retrieval.index import checkpoint_data_options, config_data_options, datamodule_kwargs
from clipita.retrieval.search_index import SearchIndex
from clipita_core.index_info import INDEX_JSON


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return tiny_base_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_index(tiny_base) -> Path:
    return build_tiny_index(tiny_base)


def test_datamodule_kwargs_drop_unknown_keys(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  catalogue: sample\n  work_dir: w\n  option_from_the_future: 3\n")
    with pytest.warns(UserWarning, match="option_from_the_future"):
        kwargs = datamodule_kwargs(
            config_data_options(config), str(config), work_dir="other", eval_batch_size=None
        )
    assert kwargs == {"catalogue": "sample", "work_dir": "other"}


class RunsCode:
    """Pickled, it would touch ``flag`` when unpickled: what a hostile checkpoint could carry."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __reduce__(self):
        return (Path.touch, (self.flag,))


def test_no_checkpoint_read_unpickles_code(tmp_path, capsys):
    from lightning_modules import CheckpointFormatError, load_model
    from lightning_modules.checkpointing import VERSION

    flag = tmp_path / "code-ran"
    ckpt = tmp_path / "hostile.ckpt"
    record = {"version": VERSION, "net_config": {}, "data": {"catalogue": "sample"}}
    torch.save({"state_dict": {}, "clipita": record, "datamodule_hyper_parameters": RunsCode(flag)}, ckpt)
    for read in (load_model, checkpoint_data_options):
        with pytest.raises(CheckpointFormatError, match="pickled object was refused"):
            read(ckpt)
    with pytest.raises(SystemExit) as exit_info:
        clipita(
            ["index", "--ckpt", str(ckpt), "--output_dir", str(tmp_path / "index"), "--progress", "false"]
        )
    assert exit_info.value.code == 1 and "pickled object was refused" in capsys.readouterr().err
    assert not flag.exists()  # nothing ran
    torch.load(ckpt, weights_only=False)  # the payload is real: an unpickling read runs it
    assert flag.exists()


@pytest.mark.slow
def test_index_folder_is_complete_and_aligned(tiny_index):
    info = json.loads((tiny_index / INDEX_JSON).read_text())
    emb = np.asarray(SearchIndex.load(tiny_index).embeddings)
    products = pd.read_parquet(tiny_index / "products.parquet")
    assert emb.dtype == np.float32 and emb.shape == (160, info["embed_dim"]) == (info["num_products"], 256)
    # one float32 + float16 array pair per input shard, rows in products.parquet order
    assert info["layout"] == "shards-v1" and sum(s["count"] for s in info["shards"]) == 160
    assert info["files"]["arrays"] == {"embedding": "float32", "embedding16": "float16"}
    first = info["shards"][0]["name"].removesuffix(".tar")
    shard_ids = np.load(tiny_index / "shards" / f"{first}.ids.npy").tolist()
    assert products["id"].tolist()[: len(shard_ids)] == shard_ids
    half = np.load(tiny_index / "shards" / f"{first}.embedding16.npy")
    np.testing.assert_allclose(half, emb[: len(shard_ids)], atol=1e-3)
    assert not info["normalized"]  # the retrieval vectors as the model returns them (here: one unit block)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert products["id"].tolist() == json.loads((tiny_index / "product_ids.json").read_text())
    assert products["id"].is_unique and set(products["split"]) == {"train", "val", "test"}
    assert {"title", "category", "category_path", "shard", "key", "jpg_offset", "jpg_size"} <= set(
        products.columns
    )
    assert all(
        " > ".join(json.loads(p)) == c
        for p, c in zip(products["category_path"], products["category"], strict=True)
    )
    assert Path(info["checkpoint"]).is_file() and info["splits"] == ["train", "val", "test"]
    # the catalogue came from the checkpoint's own record (no --fit_config; read with weights_only=True)
    assert (
        checkpoint_data_options(info["checkpoint"])["sample_products"]
        == 160
        == info["data"]["sample_products"]
    )
    assert info["hparams"]["modalities"] == ["image", "title", "attributes"] and info["unseen_categories"]
    # every JPEG byte range points at a JPEG in its shard
    row = products.iloc[0]
    with open(Path(info["shard_dir"]) / row["shard"], "rb") as handle:
        handle.seek(row["jpg_offset"])
        assert handle.read(2) == b"\xff\xd8"
    assert (tiny_index / "faiss.index").is_file() == has_faiss()


def ddp_index(ckpt: Path, fit_config: Path, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    result = run_clipita(
        ["index", "--ckpt", str(ckpt), "--fit_config", str(fit_config), "--output_dir", str(out)]
        + ["--split", "all", "--accelerator", "cpu"]
        + ["--devices", "2", "--strategy", "ddp", "--progress", "false", "--batch_size", "24"],
        cwd=cwd,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stderr + result.stdout
    return result


@pytest.mark.slow
def test_two_process_ddp_index_equals_single_process_and_resumes(tiny_base, tiny_index, tmp_path):
    ckpt = train_tiny_model(tiny_base)
    out = tmp_path / "ddp_index"
    # the data options from the run's config instead of the checkpoint
    fit_config = next((tiny_base / "runs").rglob("config.yaml"))
    ddp_index(ckpt, fit_config, out, tmp_path)
    single, ddp = SearchIndex.load(tiny_index), SearchIndex.load(out)
    assert ddp.products["id"].tolist() == single.products["id"].tolist()  # same ids, same order after merge
    pd.testing.assert_frame_equal(ddp.products, single.products)
    np.testing.assert_allclose(np.asarray(ddp.embeddings), np.asarray(single.embeddings), atol=1e-5)
    np.testing.assert_allclose(  # the float16 arrays agree to float16 rounding
        np.asarray(ddp._half_rows, dtype=np.float32),
        np.asarray(single._half_rows, dtype=np.float32),
        atol=2e-3,
    )
    info = json.loads((out / INDEX_JSON).read_text())
    assert info["world_size"] == 2 and len(info["shards"]) >= 2

    # a killed run: one shard unfinished (no ids file) and no index.json; with 2 ranks again, only that shard is
    # embedded (its rank works, the other has nothing left to do) and the index is complete once more
    shards = out / "shards"
    redo = info["shards"][1]["name"].removesuffix(".tar")
    (shards / f"{redo}.ids.npy").unlink()
    (out / INDEX_JSON).unlink()
    with pytest.raises(FileNotFoundError, match="unfinished"):
        SearchIndex.load(out)
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.embedding.npy")}
    ddp_index(ckpt, fit_config, out, tmp_path)
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.embedding.npy")}
    assert [n for n in before if before[n] != after[n]] == [f"{redo}.embedding.npy"]
    again = SearchIndex.load(out)
    np.testing.assert_array_equal(np.asarray(again.embeddings), np.asarray(ddp.embeddings))
    assert again.products["id"].tolist() == single.products["id"].tolist()
