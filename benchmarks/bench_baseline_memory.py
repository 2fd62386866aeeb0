"""Peak memory of the random and BM25 baselines over a generated test gallery: the streamed ``[Q, c]`` blocks the
leaderboard uses against the whole ``[Q, N]`` matrix, each above the floor of building the gallery, in one run.

    OMP_NUM_THREADS=1 python benchmarks/bench_baseline_memory.py --products 200000

Gallery: a 3-level tree of 5 x 5 x 5 categories (155 queries), titles of 2-5 words naming the leaf most of the time.
Each measurement runs in its own process and reports its peak RSS (``ru_maxrss``) minus the floor process's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("floor", "random_scores", "random_chunks", "bm25_scores", "bm25_chunks")


def make_gallery(n: int):
    import numpy as np
    import torch

    from clipita.baselines import TestGallery
    from clipita_core.tree import CategoryTree

    leaves = [
        (f"Dept {a}", f"Group {a}{b}", f"Type {a}{b}{c}")
        for a in range(5)
        for b in range(5)
        for c in range(5)
    ]
    tree = CategoryTree.from_paths(leaves)
    rng = np.random.default_rng(0)
    words = ["blue", "red", "men", "women", "cotton", "slim", "classic", "black", "gold", "sports"]
    picks = rng.integers(len(leaves), size=n)
    titles = [
        " ".join(
            [*rng.choice(words, size=rng.integers(1, 4)), leaves[k][-1] if rng.random() < 0.7 else "item"]
        )
        for k in picks
    ]
    mask = torch.zeros(len(tree), dtype=torch.bool)
    mask[tree.leaves] = True
    return TestGallery(
        tree=tree,
        query_texts=tree.texts("leaf"),
        query_text_features=torch.zeros(len(tree), 4),
        settings={"all": torch.ones(len(tree), dtype=torch.bool), "specific": mask},
        product_ids=[f"p{i}" for i in range(n)],
        titles=titles,
        category_ids=torch.from_numpy(tree.ancestor_matrix([leaves[k] for k in picks])),
        metric_kwargs={"ks": (1, 10), "max_rank": 10},
        split_seed=0,
    )


def child(mode: str, n: int) -> None:
    from clipita.baselines import bm25_chunks, bm25_scores, evaluate_scores, random_chunks, random_scores

    gallery = make_gallery(n)
    start = time.perf_counter()
    score = {"random_scores": random_scores, "random_chunks": random_chunks, "bm25_scores": bm25_scores,
             "bm25_chunks": bm25_chunks}.get(mode)  # fmt: skip
    metric = None
    if score is not None:
        metric = evaluate_scores(score(gallery), gallery).metrics["all/map@10"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"rss_mb": rss, "seconds": time.perf_counter() - start, "map": metric,
                                  "queries": gallery.num_queries}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=200_000)
    parser.add_argument("--child", choices=MODES)
    opts = parser.parse_args()
    if opts.child:
        child(opts.child, opts.products)
        return
    results = {}
    for mode in MODES:
        cmd = [sys.executable, __file__, "--child", mode, "--products", str(opts.products)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
    floor = results["floor"]["rss_mb"]
    print(
        f"{opts.products:,} products x {results['floor']['queries']} queries; floor (gallery built) {floor:.0f} MB"
    )
    for kind in ("random", "bm25"):
        dense, streamed = results[f"{kind}_scores"], results[f"{kind}_chunks"]
        print(f"{kind:<7} whole matrix +{dense['rss_mb'] - floor:.0f} MB ({dense['seconds']:.1f} s), streamed "
              f"+{streamed['rss_mb'] - floor:.0f} MB ({streamed['seconds']:.1f} s); map@10 {dense['map']:.4f} vs "
              f"{streamed['map']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
