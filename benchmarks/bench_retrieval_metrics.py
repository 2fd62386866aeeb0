"""Catalogue-scale retrieval evaluation: CategoryRetrievalMetrics vs a bare dense matmul of the same sizes.

What is measured (one process, same chunks for both, product generation *not* timed):

* ``metric``: ``CategoryRetrievalMetrics.update`` per chunk of products -- score ``[Q, chunk]`` (matmul into a
  reused buffer), exact top-``max_rank`` per query, relevance flags of the kept items, merge with the running
  ranking, ``R`` counts -- plus one final ``compute()``.
* ``dense``: only ``queries @ chunk.T`` into a reused ``[Q, chunk]`` buffer: the floor any exact evaluation pays.

The ratio ``metric / dense`` is the overhead of ranking + metric bookkeeping on top of scoring (goal <= 1.5).
Both are timed per chunk, interleaved, in wall-clock and in process CPU time; the load average is printed because
on a shared 2-core machine other processes inflate short multi-threaded ops (OpenMP barriers wait for descheduled
threads) far more than the long matmuls, so ``ratio`` is only meaningful on a quiet machine (or ``--threads 1``).

Memory is the peak resident set size of the process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), which counts
everything: the Python + torch runtime (~0.3 GB), one product chunk, the ``[Q, chunk]`` score block and the
metric state. ``tracemalloc`` is not used: it only sees Python-heap allocations, not torch's tensor memory. Products
are generated chunk by chunk (random unit vectors, seeded per chunk), so the gallery itself is never held.

The synthetic taxonomy has 3 levels (``Q // 250`` top, ``Q // 25`` middle, the rest leaves); every product gets a
random leaf and its ancestors, so hierarchical relevance has realistic ``R`` at every depth. ``max_rank`` defaults
to 100 here (the leaderboard needs k <= 10 for P/mAP/nDCG; R-precision and MRR are capped at ``max_rank``, see
``CategoryRetrievalMetrics``); the library default is 1000.

Example:
    python benchmarks/bench_retrieval_metrics.py                       # 5,000 x 1,000,000, d=256, max_rank=100
    python benchmarks/bench_retrieval_metrics.py --products 100000     # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_modules.metrics import CategoryRetrievalMetrics  # noqa: E402


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, GB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def synthetic_tree(num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(leaf_ancestors [num_leaves, 3], depth [num_nodes])`` of a 3-level tree with ``num_nodes`` nodes."""
    top = max(1, num_nodes // 250)
    mid = max(1, num_nodes // 25)
    leaves = num_nodes - top - mid
    if leaves < 1:
        raise ValueError(f"--queries must be at least 3, got {num_nodes}")
    mid_parent = torch.arange(mid) % top
    leaf_parent = torch.arange(leaves) % mid
    leaf_ids = top + mid + torch.arange(leaves)
    ancestors = torch.stack([mid_parent[leaf_parent], top + leaf_parent, leaf_ids], dim=1)
    depth = torch.cat([torch.full((top,), 1), torch.full((mid,), 2), torch.full((leaves,), 3)])
    return ancestors, depth


def product_chunk(i: int, size: int, dim: int, leaf_ancestors: torch.Tensor, seed: int):
    """Chunk ``i`` of the gallery: unit vectors ``[size, dim]`` and ``category_ids [size, 3]`` (deterministic)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + i)
    emb = torch.nn.functional.normalize(torch.randn(size, dim, generator=g), dim=1)
    leaf = torch.randint(len(leaf_ancestors), (size,), generator=g)
    return emb, leaf_ancestors[leaf]


def chunk_sizes(total: int, chunk: int) -> list[int]:
    return [min(chunk, total - s) for s in range(0, total, chunk)]


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    rss_start = peak_rss_gb()
    leaf_ancestors, depth = synthetic_tree(args.queries)
    g = torch.Generator().manual_seed(args.seed)
    queries = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=g), dim=1)
    groups = {"general": depth == 1, "level-2": depth == 2, "specific": depth == 3}
    sizes = chunk_sizes(args.products, args.chunk_size)
    q_step = min(args.queries, args.query_chunk_size or args.queries)
    metric = CategoryRetrievalMetrics(
        ks=(1, 5, 10),
        max_rank=args.max_rank,
        chunk_size=args.chunk_size,
        query_chunk_size=args.query_chunk_size,
    )

    # warm-up (untimed): one small chunk through both paths
    warm, warm_ids = product_chunk(-1, min(4096, args.products), args.dim, leaf_ancestors, args.seed)
    metric.set_queries(queries, groups)
    metric.update(warm, warm_ids)
    _ = queries[:q_step] @ warm.T
    metric.set_queries(queries, groups)  # resets the state
    del warm, warm_ids, _

    # Interleaved per chunk, so both sides see the same machine load (the 2 cores are shared):
    #   metric: CategoryRetrievalMetrics.update (scores, top-k, relevance, merge, R counts)
    #   dense:  the same matmuls (same query blocks) into the same [q_step, chunk] buffer, nothing else
    gen_s = 0.0
    wall = {"metric": 0.0, "dense": 0.0}
    cpu = {"metric": 0.0, "dense": 0.0}
    for i, size in enumerate(sizes):
        t = time.perf_counter()
        emb, cats = product_chunk(i, size, args.dim, leaf_ancestors, args.seed)
        gen_s += time.perf_counter() - t

        t, c = time.perf_counter(), time.process_time()
        metric.update(emb, cats)
        wall["metric"] += time.perf_counter() - t
        cpu["metric"] += time.process_time() - c

        buffer = metric._scratch  # the metric's own reused score buffer: the baseline adds no memory
        t, c = time.perf_counter(), time.process_time()
        for q0 in range(0, args.queries, q_step):
            block = queries[q0 : q0 + q_step]
            torch.matmul(block, emb.T, out=buffer[: block.shape[0] * size].view(block.shape[0], size))
        wall["dense"] += time.perf_counter() - t
        cpu["dense"] += time.process_time() - c
        del emb, cats

    t, c = time.perf_counter(), time.process_time()
    values = metric.compute()
    compute_wall, compute_cpu = time.perf_counter() - t, time.process_time() - c
    state_mb = sum(v.numel() * v.element_size() for v in metric.metric_state.values()) / 1024**2
    metric_wall, metric_cpu = wall["metric"] + compute_wall, cpu["metric"] + compute_cpu
    return {
        "queries": args.queries,
        "products": args.products,
        "dim": args.dim,
        "max_rank": args.max_rank,
        "chunk_size": args.chunk_size,
        "query_chunk_size": q_step,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "metric_update_wall_s": round(wall["metric"], 2),
        "metric_compute_wall_s": round(compute_wall, 3),
        "metric_wall_s": round(metric_wall, 2),
        "dense_matmul_wall_s": round(wall["dense"], 2),
        "ratio_wall": round(metric_wall / wall["dense"], 3),
        "metric_cpu_s": round(metric_cpu, 2),
        "dense_matmul_cpu_s": round(cpu["dense"], 2),
        "ratio_cpu": round(metric_cpu / cpu["dense"], 3),
        "generation_wall_s_untimed": round(gen_s, 2),
        "cpus": os.cpu_count(),
        "loadavg_1min_start_end": f"{load_start:.1f} / {os.getloadavg()[0]:.1f}",
        "peak_rss_gb_after_imports": round(rss_start, 3),
        "peak_rss_gb": round(peak_rss_gb(), 3),
        "score_block_gb": round(4 * q_step * max(sizes) / 1024**3, 3),
        "metric_state_mb": round(state_mb, 1),
        "all/p@10": round(float(values["all/p@10"]), 5),
        "all/map@10": round(float(values["all/map@10"]), 5),
        "all/num_queries": int(values["all/num_queries"]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--max-rank", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=65536, help="products scored at once")
    parser.add_argument("--query-chunk-size", type=int, default=1250, help="queries scored at once (0 = all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.query_chunk_size = args.query_chunk_size or None
    result = run(args)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
