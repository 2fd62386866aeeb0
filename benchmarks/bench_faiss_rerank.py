"""FAISS as a candidate generator: recall of the exact top 10 (the model's full score) per candidate depth.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_faiss_rerank.py --out /tmp/faiss_rerank [--products 3000]

Fits the adaptive recipe (``experiments/clip_ita_adaptive.yaml``: title, BM25, image-only and tree terms) on the
built-in generated sample catalogue (small images, a few epochs, no refit), indexes every split with an HNSW FAISS
index, and ranks every category of the tree (seen and unseen) four ways:

* exact: every product scored with the model's full score (``clipita search``);
* FAISS re-ranked, dense candidates only: FAISS's best ``depth`` products by the dense dot product, re-ranked with
  the full score (what ``clipita search --faiss --faiss_depth depth`` did before lexical candidates), for several
  depths;
* FAISS re-ranked with lexical candidates (``clipita search --faiss --faiss_depth depth``): where a query's BM25
  weight is non-zero, its best ``depth`` products by the BM25 term alone join the dense candidates;
* FAISS alone (the dense top 10, what ``clipita search --faiss`` returned before the re-ranking).

Reported per depth: the recall of the exact top 10 (mean share of its products found) and the share of identical top
10 lists (same products, same order; rows tied in score may swap), and the time per query (query encoding
included; with lexical candidates, how many there were per query), under the checkpoint's chosen record and with its
BM25 weights forced to 1.0 (a catalogue whose choice leans on BM25, as the fashion checkpoint's novel weight of 1.0
did).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from clipita.experiment import fit_and_test
from clipita.retrieval.faiss_index import lexical_candidates
from clipita.retrieval.index import index
from clipita.retrieval.search import CategoryEncoder, rank_queries, resolve_category
from clipita.retrieval.search_index import SearchIndex
from clipita_core.paths import format_path
from clipita_core.weights import NOVEL_LEXICAL_WEIGHT, SEEN_LEXICAL_WEIGHT
from datamodules.features import LEXICAL_TOKENS
from lightning_modules.checkpointing import KEY

REPO = Path(__file__).resolve().parents[1]
K = 10


def fit(out: Path, products: int, epochs: int) -> str:
    overrides = {
        "data.catalogue": "sample",
        "data.sample_products": products,
        "data.batch_size": 64,
        "data.work_dir": str(out / "work"),
        "model.net.image_size": 64,
        "trainer.max_epochs": epochs,
        "trainer.accelerator": "cpu",
        "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False,
        "trainer.logger.init_args.save_dir": str(out / "runs"),
        "refit_after_choice": False,
    }
    args = [token for key, value in overrides.items() for token in (f"--{key}", str(value).lower() if isinstance(value, bool) else str(value))]  # fmt: skip
    result = fit_and_test(str(REPO / "experiments" / "clip_ita_adaptive.yaml"), args, test=False)
    assert result.best_checkpoint, "the fit wrote no checkpoint"
    return result.best_checkpoint


def with_lexical(ckpt: str, out: Path, weight: float) -> Path:
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint[KEY]["retrieval"].update({SEEN_LEXICAL_WEIGHT: weight, NOVEL_LEXICAL_WEIGHT: weight})
    torch.save(checkpoint, out)
    return out


def measure(folder: Path, ckpt: str | Path, depths: list[int]) -> dict:
    idx = SearchIndex.load(folder)
    encoder = CategoryEncoder(ckpt)
    queries = [format_path(p) for p in idx.tree]
    started = time.perf_counter()
    _, _, exact = rank_queries(idx, encoder, queries, K)
    exact_ms = round(1000 * (time.perf_counter() - started) / len(queries), 2)
    exact_sets = [set(r.tolist()) for r in exact]

    def compare(rows: torch.Tensor) -> dict:
        recall = sum(len(e & set(r.tolist())) / len(e) for e, r in zip(exact_sets, rows, strict=True))
        same = sum(torch.equal(r, e) for r, e in zip(rows, exact, strict=True))
        return {"recall@10": round(recall / len(queries), 4), "identical": f"{same}/{len(queries)}"}

    paths = [resolve_category(q, idx.tree) for q in queries]  # as rank_queries resolves them
    alone = idx.faiss_index().search(encoder.encode(queries, paths).numpy(), K)[1]
    out = {
        "lexical_weights": encoder.net.scorer.weights.pair("lexical"),
        "exact_ms_per_query": exact_ms,
        "faiss_alone": compare(torch.from_numpy(alone)),
        "dense candidates": {},
        "with lexical candidates": {},
    }
    for depth in depths:
        started = (
            time.perf_counter()
        )  # the ranking before lexical candidates: rank_queries without its BM25 term
        score, lexical = encoder.scorer(queries, paths)
        _, rows = idx.topk(encoder.encode(queries, paths), K, use_faiss=True, depth=depth, score=score)
        seconds = time.perf_counter() - started
        out["dense candidates"][depth] = {
            **compare(rows),
            "ms_per_query": round(1000 * seconds / len(queries), 2),
        }
        started = time.perf_counter()
        _, _, rows = rank_queries(idx, encoder, queries, K, use_faiss=True, depth=depth)
        seconds = time.perf_counter() - started
        added = 0.0
        if lexical is not None:  # mean lexical candidates per query (before the union with the dense ones)
            found = lexical_candidates(lexical, idx.array(LEXICAL_TOKENS), min(depth, len(idx)))
            added = float((found >= 0).sum()) / len(queries)
        out["with lexical candidates"][depth] = {
            **compare(rows),
            "ms_per_query": round(1000 * seconds / len(queries), 2),
            "lexical_candidates_per_query": round(added, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="work folder")
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--depths", default="10,20,50,100,200,500,1000")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ckpt = fit(out, args.products, args.epochs)
    folder = out / "index"
    index(ckpt=ckpt, output_dir=str(folder), split="all", faiss=True, accelerator="cpu", progress=False)
    depths = [int(d) for d in args.depths.split(",")]
    report = {
        "products": len(SearchIndex.load(folder)),
        "queries": len(SearchIndex.load(folder).tree),
        "chosen record": measure(folder, ckpt, depths),
        "BM25 weights 1.0": measure(folder, with_lexical(ckpt, out / "bm25.ckpt", 1.0), depths),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=1))
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
