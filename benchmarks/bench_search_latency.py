"""Search latency of one category query over a catalogue-sized index: exact scan vs FAISS vs a bare matmul.

What is measured (one process, ``--threads`` torch/OpenMP threads, the index built before any timing):

* ``exact``: what ``clipita search`` runs per query -- :func:`running_topk` over the ``[N, D]`` float32
  embeddings (score a chunk into a reused buffer, exact top-``k`` of the chunk, merge), ``k = 10``.
* ``matmul``: the floor of any exact search: only ``query @ embeddings.T`` into a preallocated ``[1, N]`` buffer
  (one GEMV; it reads all ``N * D * 4`` bytes once, so it is memory-bandwidth bound). The exact/matmul ratio is the
  cost of ranking on top of scoring. The two are timed alternately, query by query, so drift hits both alike.
* ``float16_rerank``: ``clipita search --scan float16``: a float16 copy of the embeddings is scanned for a
  shortlist of ``max(4k, k + 32)`` per query, re-scored in float32; half the bytes per query. Its recall@k against
  the exact top-``k`` (and how often the whole ranking is identical) is reported.
* ``faiss``: the approximate index ``clipita index --faiss true`` builds (IVF-Flat by default here: HNSW takes
  many minutes to build over 1M vectors on 2 cores), its build time, latency and recall@k against the exact
  top-``k``.

Memory: the exact index is the embedding matrix itself (``N * D * 4`` bytes); the FAISS index's size is its
serialised size. Peak RSS covers the whole process (both indexes + the Python/torch runtime).

Data: ``random`` (default) draws i.i.d. unit vectors -- the worst case for an IVF or graph index, since there is no
cluster structure to exploit; ``clustered`` draws products around ``--clusters`` centres (like products around
their categories) with queries near centres, which is closer to real embeddings.

Example:
    python benchmarks/bench_search_latency.py                          # 1,000,000 x 256, 2 threads, IVF-Flat
    python benchmarks/bench_search_latency.py --products 100000 --queries 50 --faiss none   # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipita.retrieval.search_index import half_precision_copy, half_scan_topk  # noqa: E402
from lightning_modules.metrics.ranking import running_topk  # noqa: E402


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, GB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def make_data(
    n: int, d: int, q: int, kind: str, clusters: int, seed: int, chunk: int = 131072
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(products [n, d], queries [q, d])``, unit vectors, generated chunk by chunk (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    products = torch.empty(n, d)
    if kind == "random":
        for start in range(0, n, chunk):
            block = torch.randn(min(chunk, n - start), d, generator=gen)
            products[start : start + len(block)] = torch.nn.functional.normalize(block, dim=1)
        queries = torch.nn.functional.normalize(torch.randn(q, d, generator=gen), dim=1)
        return products, queries
    if kind != "clustered":
        raise ValueError(f"unknown --data {kind!r}")
    centres = torch.nn.functional.normalize(torch.randn(clusters, d, generator=gen), dim=1)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        owner = torch.randint(clusters, (m,), generator=gen)
        block = centres[owner] + 0.08 * torch.randn(m, d, generator=gen)  # cos ~ 0.78 to the centre
        products[start : start + m] = torch.nn.functional.normalize(block, dim=1)
    owner = torch.randint(clusters, (q,), generator=gen)
    queries = torch.nn.functional.normalize(centres[owner] + 0.05 * torch.randn(q, d, generator=gen), dim=1)
    return products, queries


def percentiles(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200, help="timed queries (one at a time)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk_size", type=int, default=262144, help="products per running_topk chunk")
    parser.add_argument("--data", choices=["random", "clustered"], default="random")
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--faiss", choices=["ivf", "hnsw", "none"], default="ivf")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--hnsw_m", type=int, default=32)
    parser.add_argument("--ef_construction", type=int, default=80)
    parser.add_argument("--ef_search", type=int, default=128)
    parser.add_argument("--no_half", action="store_true", help="skip the float16-scan + re-rank variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    products, queries = make_data(
        args.products, args.dim, args.queries + args.warmup, args.data, args.clusters, args.seed
    )
    print(
        f"data: {args.products:,} x {args.dim} {args.data} unit vectors in {time.perf_counter() - t0:.1f} s"
    )
    result: dict = {
        "products": args.products,
        "dim": args.dim,
        "k": args.k,
        "queries": args.queries,
        "threads": args.threads,
        "data": args.data,
        "chunk_size": args.chunk_size,
        "exact_index_gb": products.numel() * 4 / 1e9,
    }

    # exact vs the bare matmul, alternating query by query
    floor_out = torch.empty(1, args.products)
    exact_ms: list[float] = []
    floor_ms: list[float] = []
    exact_rows = []
    for i in range(args.warmup + args.queries):
        q = queries[i : i + 1]
        start = time.perf_counter()
        _, rows = running_topk(q, products, k=args.k, chunk_size=args.chunk_size)
        mid = time.perf_counter()
        torch.mm(q, products.T, out=floor_out)
        end = time.perf_counter()
        if i >= args.warmup:
            exact_ms.append((mid - start) * 1e3)
            floor_ms.append((end - mid) * 1e3)
            exact_rows.append(rows[0])
    result["exact"] = percentiles(exact_ms)
    result["matmul_floor"] = percentiles(floor_ms)
    result["exact_over_matmul_p50"] = result["exact"]["p50_ms"] / result["matmul_floor"]["p50_ms"]
    # the bytes the floor reads per query, over its time: the memory bandwidth it reached
    result["matmul_floor"]["gb_per_s"] = products.numel() * 4 / 1e9 / (result["matmul_floor"]["p50_ms"] / 1e3)
    exact_top = torch.stack(exact_rows).numpy()

    # float16 scan + float32 re-rank of a shortlist (clipita search --scan float16)
    if not args.no_half:
        half = half_precision_copy(products.numpy())
        half_ms, half_top = [], []
        for i in range(args.warmup + args.queries):
            q = queries[i : i + 1]
            start = time.perf_counter()
            _, rows = half_scan_topk(q, half, products, k=args.k, chunk_size=args.chunk_size)
            if i >= args.warmup:
                half_ms.append((time.perf_counter() - start) * 1e3)
                half_top.append(rows[0].numpy())
        result["float16_rerank"] = percentiles(half_ms)
        result["float16_rerank"]["extra_memory_gb"] = half.numel() * 2 / 1e9
        result["float16_rerank"][f"recall@{args.k}"] = float(
            np.mean([len(set(h) & set(e)) / args.k for h, e in zip(half_top, exact_top, strict=True)])
        )
        result["float16_rerank"]["same_ranking"] = float(
            np.mean([np.array_equal(h, e) for h, e in zip(half_top, exact_top, strict=True)])
        )
        del half

    if args.faiss != "none":
        try:
            import faiss
        except ImportError:
            print("faiss-cpu is not installed: skipping the FAISS part (pip install 'clipita[faiss]')")
            faiss = None
        if faiss is not None:
            faiss.omp_set_num_threads(args.threads)
            x = products.numpy()
            t0 = time.perf_counter()
            if args.faiss == "ivf":
                quantizer = faiss.IndexFlatIP(args.dim)
                index = faiss.IndexIVFFlat(quantizer, args.dim, args.nlist, faiss.METRIC_INNER_PRODUCT)
                sample = x[
                    np.random.default_rng(args.seed).choice(
                        len(x), min(len(x), 64 * args.nlist), replace=False
                    )
                ]
                index.train(sample)
                index.add(x)
                index.nprobe = args.nprobe
                params = {
                    "kind": "ivf_flat",
                    "nlist": args.nlist,
                    "nprobe": args.nprobe,
                    "train_points": len(sample),
                }
            else:
                index = faiss.IndexHNSWFlat(args.dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                index.hnsw.efConstruction = args.ef_construction
                index.add(x)
                index.hnsw.efSearch = args.ef_search
                params = {
                    "kind": "hnsw_flat",
                    "m": args.hnsw_m,
                    "ef_construction": args.ef_construction,
                    "ef_search": args.ef_search,
                }
            params["build_s"] = time.perf_counter() - t0
            params["index_gb"] = faiss.serialize_index(index).nbytes / 1e9
            qn = queries.numpy()
            faiss_ms = []
            faiss_top = []
            for i in range(args.warmup + args.queries):
                start = time.perf_counter()
                _, rows = index.search(qn[i : i + 1], args.k)
                if i >= args.warmup:
                    faiss_ms.append((time.perf_counter() - start) * 1e3)
                    faiss_top.append(rows[0])
            params.update(percentiles(faiss_ms))
            recall = [len(set(f) & set(e)) / args.k for f, e in zip(faiss_top, exact_top, strict=True)]
            params[f"recall@{args.k}"] = float(np.mean(recall))
            result["faiss"] = params
    result["peak_rss_gb"] = peak_rss_gb()
    result["load_average_1_5_15"] = list(os.getloadavg())  # other processes on the machine skew every latency

    e, f = result["exact"], result["matmul_floor"]
    print(
        f"exact (running_topk, chunk {args.chunk_size:,}): p50 {e['p50_ms']:.1f} ms  p99 {e['p99_ms']:.1f} ms\n"
        f"matmul floor (query @ E.T):           p50 {f['p50_ms']:.1f} ms  p99 {f['p99_ms']:.1f} ms  "
        f"({f['gb_per_s']:.1f} GB/s)\n"
        f"exact / matmul (p50): {result['exact_over_matmul_p50']:.2f}x; exact index {result['exact_index_gb']:.2f} GB"
    )
    if "float16_rerank" in result:
        h = result["float16_rerank"]
        print(
            f"float16 scan + float32 re-rank:       p50 {h['p50_ms']:.1f} ms  p99 {h['p99_ms']:.1f} ms  "
            f"recall@{args.k} {h[f'recall@{args.k}']:.4f}, identical ranking {h['same_ranking']:.3f}, "
            f"+{h['extra_memory_gb']:.2f} GB"
        )
    if "faiss" in result:
        p = result["faiss"]
        print(
            f"FAISS {p['kind']} ({', '.join(f'{k}={v}' for k, v in params.items() if k in ('nlist', 'nprobe', 'm', 'ef_search'))}):"
            f" build {p['build_s']:.1f} s, p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms, "
            f"recall@{args.k} {p[f'recall@{args.k}']:.3f}, index {p['index_gb']:.2f} GB"
        )
    print(
        f"peak RSS {result['peak_rss_gb']:.2f} GB; load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} CPUs"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
