"""``clipita index`` and ``clipita search``: the prediction writer, the index folder, exact and FAISS top-k.

Fast tests use synthetic embeddings and shards; the end-to-end ones (``slow``) train a tiny model on the sample
catalogue once per session (``train_tiny_model``, cached on disk so test_gallery.py reuses it) and index it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
from conftest import tiny_overrides

from clipita.cli import main as clipita
from clipita.retrieval.faiss_index import build_faiss_index, faiss_depth
from clipita.retrieval.index import checkpoint_data_options, config_data_options, datamodule_kwargs
from clipita.retrieval.index_shards import IndexShards, merge_products
from clipita.retrieval.search import is_relevant, query_text, resolve_category
from clipita.retrieval.search_index import SearchIndex
from clipita.retrieval.shard_metadata import read_shard_metadata
from clipita_core.index_info import INDEX_JSON, INDEX_VERSION, IndexFormatError, IndexShard
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


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "tiny_clip_ita"


@pytest.fixture(scope="session")
def tiny_index(tiny_base) -> Path:
    return build_tiny_index(tiny_base)


# ------------------------------------------------------------------------------------------------ fast tests
def test_query_text_and_category_resolution():
    tree = [("Footwear",), ("Footwear", "Shoes"), ("Footwear", "Shoes", "Sports Shoes"), ("Apparel", "Shoes")]
    assert query_text("Footwear > Shoes > Sports Shoes") == "Sports Shoes"
    assert query_text("Footwear>Shoes", "path") == "Footwear > Shoes"
    assert resolve_category("footwear >shoes", tree) == ("Footwear", "Shoes")
    assert resolve_category("Sports Shoes", tree) == ("Footwear", "Shoes", "Sports Shoes")
    assert resolve_category("Shoes", tree) is None  # two nodes are called Shoes
    assert resolve_category("moon boots", tree) is None
    assert is_relevant(("Footwear", "Shoes", "Sports Shoes"), ("Footwear",))
    assert not is_relevant(("Footwear",), ("Footwear", "Shoes"))


def test_shard_metadata_records_jpeg_byte_ranges(tmp_path):
    shard = tmp_path / "test-000000.tar"
    images = {f"p{i}": bytes([0xFF, 0xD8]) + os.urandom(100 + 37 * i) for i in range(3)}
    with wds.TarWriter(str(shard), encoder=False) as sink:
        for key, jpg in images.items():
            meta = {
                "id": key,
                "title": f"title {key}",
                "category": ["A", "B"],
                "split": "test",
                "attributes": {},
            }
            sink.write({"__key__": key, "jpg": jpg, "json": json.dumps(meta).encode()})
    rows = read_shard_metadata(shard)
    assert [r["id"] for r in rows] == list(images)
    with open(shard, "rb") as handle:
        for row in rows:
            handle.seek(row["jpg_offset"])
            assert handle.read(row["jpg_size"]) == images[row["id"]]
            assert row["category"] == "A > B" and row["shard"] == shard.name
            assert json.loads(row["category_path"]) == ["A", "B"]


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


def test_an_index_of_an_older_format_is_refused_with_one_line(tmp_path, capsys):
    folder = tmp_path / "v1"
    folder.mkdir()
    np.save(folder / "embeddings.npy", np.zeros((3, 4), dtype=np.float32))  # format 1: one embeddings.npy
    pd.DataFrame({"id": ["a", "b", "c"], "title": "", "category": "A", "split": "test"}).to_parquet(
        folder / "products.parquet"
    )
    (folder / INDEX_JSON).write_text(json.dumps({"version": 1, "checkpoint": "none", "tree": [["A"]]}))
    with pytest.raises(
        IndexFormatError, match=r"older clipita index \(index format 1.*rebuild it with clipita index"
    ):
        SearchIndex.load(folder)
    with pytest.raises(SystemExit) as exit_info:
        clipita(["search", "--index", str(folder), "A"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "index format 1" in err and "Traceback" not in err
    assert synthetic_index(tmp_path / "v2", n=20).info.version == INDEX_VERSION  # the current one loads


def test_exact_topk_matches_a_full_sort(tmp_path):
    index = synthetic_index(tmp_path / "idx")
    queries = torch.nn.functional.normalize(
        torch.randn(4, 32, generator=torch.Generator().manual_seed(1)), dim=1
    )
    scores, rows = index.topk(queries, k=7, chunk_size=64)  # several chunks
    full = queries @ torch.from_numpy(np.asarray(index.embeddings)).T
    expected = full.argsort(dim=1, descending=True)[:, :7]
    assert torch.equal(rows, expected)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    half_scores, half_rows = index.topk(queries, k=7, chunk_size=64, scan="float16")
    assert torch.equal(half_rows, rows)
    torch.testing.assert_close(half_scores, scores)
    hits = index.hits(scores, rows)
    assert [h["rank"] for h in hits[0]] == list(range(1, 8)) and hits[0][0]["id"] == f"p{expected[0, 0]}"


@pytest.mark.skipif(not has_faiss(), reason="faiss-cpu is not installed (pip install 'clipita[faiss]')")
@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_agrees_with_exact_on_a_small_set(tmp_path, kind):
    index = synthetic_index(tmp_path / "idx")
    faiss_index, params = build_faiss_index(np.asarray(index.embeddings), kind=kind, nprobe=None)
    if kind == "ivf":
        faiss_index.nprobe = params["nlist"]  # scan every list: exact
    queries = torch.nn.functional.normalize(
        torch.randn(8, 32, generator=torch.Generator().manual_seed(2)), dim=1
    )
    exact_scores, exact_rows = index.topk(queries, k=10)
    scores, rows = faiss_index.search(queries.numpy(), 10)
    assert np.array_equal(rows, exact_rows.numpy())
    np.testing.assert_allclose(scores, exact_scores.numpy(), atol=1e-5)


def ranks_alike(
    scores: torch.Tensor, rows: torch.Tensor, other_scores, other_rows, atol: float = 1e-5
) -> bool:
    """Two top-k lists agree: the same scores position by position (to ``atol``), and the same rows wherever a
    score is apart from its neighbours by more than ``atol`` (rows tied to float precision may swap)."""
    if scores.shape != other_scores.shape or not torch.allclose(scores, other_scores, atol=atol):
        return False
    for s, r, o in zip(scores.tolist(), rows.tolist(), other_rows.tolist(), strict=True):
        for i in range(len(s)):
            tied = (i > 0 and s[i - 1] - s[i] <= atol) or (i + 1 < len(s) and s[i] - s[i + 1] <= atol)
            if r[i] != o[i] and not tied:
                return False
    return True


@pytest.mark.skipif(not has_faiss(), reason="faiss-cpu is not installed (pip install 'clipita[faiss]')")
def test_faiss_candidates_are_reranked_with_the_full_score(tmp_path):
    from lightning_modules.lexical import LexicalSignal, document_statistics

    index = synthetic_index(tmp_path / "idx", n=600, vocabulary=40)
    tokens = torch.as_tensor(np.asarray(index.array(LEXICAL_TOKENS)))
    signal = LexicalSignal(num_buckets=40)
    signal.set_statistics(document_statistics([row[row >= 0].numpy() for row in tokens], 40))
    lexical = (torch.arange(40), torch.rand(6, 40, generator=torch.Generator().manual_seed(3)) / 20)

    def score(queries, vectors, rows):  # dense + a BM25 term of weight 1 (as ClipIta.score)
        return queries @ vectors.T + signal.scores(lexical, rows.long())

    queries = torch.nn.functional.normalize(
        torch.randn(6, 32, generator=torch.Generator().manual_seed(4)), dim=1
    )
    exact = index.topk(queries, k=10, score=score, chunk_size=128)
    full = (
        queries @ torch.from_numpy(np.asarray(index.embeddings)).T + signal.scores(lexical, tokens)
    ).argsort(dim=1, descending=True)
    assert torch.equal(exact[1], full[:, :10])  # the exact scan ranks by the full score
    dense_only = index.topk(queries, k=10)  # what FAISS alone returned before: the dense top 10
    assert not torch.equal(dense_only[1], exact[1]), (
        "the BM25 term must change some ranking for this to test it"
    )
    # FAISS at full depth: every product a candidate, re-ranked by the full score = the exact scan
    assert ranks_alike(*index.topk(queries, k=10, use_faiss=True, score=score, depth=len(index)), *exact)
    # at the default depth (max(10 k, 200)) FAISS's dense candidates still hold this small index's exact top 10
    assert faiss_depth(10) == 200
    assert ranks_alike(*index.topk(queries, k=10, use_faiss=True, score=score, chunk_size=50), *exact)
    # a depth of k re-ranks FAISS's dense top 10 only: the full score's top 10 is not recovered
    shallow = index.topk(queries, k=10, use_faiss=True, score=score, depth=10)
    assert set(shallow[1].flatten().tolist()) == set(dense_only[1].flatten().tolist())
    assert not ranks_alike(*shallow, *exact)


# ------------------------------------------------------------------------------------ end to end (tiny model)
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


@pytest.mark.slow
def test_search_json_is_sorted_and_free_text_works(tiny_index, capsys):
    queries = ["Footwear > Shoes > Sports Shoes", "a glittery moon boot for cats"]
    clipita(["search", "--index", str(tiny_index), *queries, "-k", "5", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert payload["backend"] == "exact" and payload["k"] == 5
    known, free = payload["queries"]
    assert known["category"] == "Footwear > Shoes > Sports Shoes" and known["query_text"] == "Sports Shoes"
    assert free["category"] is None and free["query_text"] == queries[1]
    for result in payload["queries"]:
        scores = [hit["score"] for hit in result["results"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True)
        assert [hit["rank"] for hit in result["results"]] == [1, 2, 3, 4, 5]
        assert all(hit["id"] and hit["title"] and hit["category"] for hit in result["results"])
        assert all(" > ".join(hit["category_path"]) == hit["category"] for hit in result["results"])

    clipita(["search", "--index", str(tiny_index), "Footwear", "-k", "3"])
    out = capsys.readouterr().out
    assert "rank" in out and "score" in out and len([line for line in out.splitlines() if line.strip()]) == 5


@pytest.mark.slow
@pytest.mark.skipif(not has_faiss(), reason="faiss-cpu is not installed (pip install 'clipita[faiss]')")
def test_faiss_search_agrees_with_exact_on_the_tiny_index(tiny_index, capsys):
    queries = ["Footwear", "Apparel > Topwear", "Handbags", "Home decor", "red summer dress"]
    base = ["search", "--index", str(tiny_index), *queries, "-k", "10", "--json"]
    clipita(base)
    exact = json.loads(capsys.readouterr().out)["queries"]
    clipita([*base, "--faiss"])
    approx = json.loads(capsys.readouterr().out)
    assert approx["backend"] == "faiss-hnsw"
    for e, a in zip(exact, approx["queries"], strict=True):
        assert [h["id"] for h in a["results"]] == [h["id"] for h in e["results"]]
        np.testing.assert_allclose(
            [h["score"] for h in a["results"]], [h["score"] for h in e["results"]], atol=1e-5
        )


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
