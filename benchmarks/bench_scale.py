"""Scale benchmark: wall time per product and peak RSS per rank for shard, encode (1 and 2 CPU gloo ranks), one
training epoch, evaluation and index build, on generated catalogues; ratios between sizes and rank counts.

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --sizes 10000 100000 --text hash
    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --sizes 10000 --text minilm

The catalogue, the towers and what each stage measures: ``benchmarks/scale_stages.py``; this script runs each stage
in fresh processes (``--child``), collects their times and peak RSS and prints the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scale_stages import STAGES  # noqa: E402 - after the repository is on the path

STAGE_PLAN = (("shard", 1, "1"), ("encode", 1, "1"), ("encode", 2, "2"), ("train", 1, "1"), ("eval", 1, "1"),
              ("index", 1, "1"), ("index", 2, "2"), ("search", 1, "1"), ("search16", 1, "1"))  # fmt: skip


def child(args) -> None:
    result = STAGES[args.stage](args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_stage(stage: str, work: Path, n: int, opts, ranks: int = 1, tag: str = "1") -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false", MASTER_PORT=str(_free_port()))  # fmt: skip
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                stage,
                "--work",
                str(work),
                "--n",
                str(n),
                "--text",
                opts.text,
                "--rank",
                str(r),
                "--world",
                str(ranks),
                "--tag",
                tag,
                "--workers",
                str(opts.workers),
                "--shard_size",
                str(opts.shard_size),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(ranks)
    ]
    wall = time.perf_counter()
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"stage {stage} failed:\n{err[-3000:]}")
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    wall = time.perf_counter() - wall
    products = results[0]["products"]
    seconds = max(r["seconds"] for r in results)
    return {"stage": stage if ranks == 1 else f"{stage} x{ranks}", "n": n, "products": products,
            "seconds": seconds, "us_per_product": 1e6 * seconds / max(products, 1),
            "rss_mb": [round(r["peak_rss_mb"]) for r in results], "wall_incl_start": wall}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--text", choices=["minilm", "hash"], default="hash")
    parser.add_argument("--workers", type=int, default=1, help="decoding workers per rank")
    parser.add_argument("--shard_size", type=int, default=1000)
    parser.add_argument("--root", default="/tmp/clipita_bench_scale")
    parser.add_argument("--child", choices=list(STAGES))
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES),
                        help="run only these stages (each needs the ones before it: encode needs shard, ...)")  # fmt: skip
    (
        parser.add_argument("--work"),
        parser.add_argument("--n", type=int),
        parser.add_argument("--tag", default="1"),
    )
    parser.add_argument("--rank", type=int, default=0), parser.add_argument("--world", type=int, default=1)
    opts = parser.parse_args()
    if opts.child:
        opts.stage = opts.child
        child(opts)
        return
    plan = [step for step in STAGE_PLAN if step[0] in opts.stages]
    rows = []
    for n in opts.sizes:
        work = Path(opts.root) / f"n{n}"
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for stage, ranks, tag in plan:
            row = run_stage(stage, work, n, opts, ranks, tag)
            rows.append(row)
            print(f"{n:>9} {row['stage']:<10} {row['seconds']:9.1f} s {row['us_per_product']:9.1f} us/product "
                  f"peak RSS/rank {row['rss_mb']} MB", flush=True)  # fmt: skip
        shutil.rmtree(work / "images", ignore_errors=True)
    by = {(r["n"], r["stage"]): r for r in rows}
    sizes = sorted(opts.sizes)
    print(f"\ntext tower: {opts.text}; decoding workers per rank: {opts.workers}")
    for n in sizes if "encode" in opts.stages else []:
        one, two = by[(n, "encode")], by[(n, "encode x2")]
        print(f"n={n}: encode products/s 1 rank {one['products'] / one['seconds']:.0f}, 2 ranks "
              f"{two['products'] / two['seconds']:.0f}: ratio {one['seconds'] / two['seconds']:.2f}x")  # fmt: skip
    if len(sizes) >= 2:
        small, big = sizes[-2], sizes[-1]
        for stage in [s if r == 1 else f"{s} x{r}" for s, r, _ in plan]:
            a, b = by[(small, stage)], by[(big, stage)]
            print(f"{stage:<10} RSS {big} vs {small}: {max(b['rss_mb']) / max(a['rss_mb']):.2f}x; "
                  f"time/product: {b['us_per_product'] / a['us_per_product']:.2f}x")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
