"""``clipita shard`` with the images checked in this process vs in worker processes: wall time and ratio, measured in
one run, and the check that both write the same shards (same content hash).

    OMP_NUM_THREADS=1 python benchmarks/bench_shard_workers.py experiments/catalogues/fashion.yaml --workers 2

Each configuration runs in its own process, ``--repeats`` times alternating, into a temporary folder; the best wall
time of each is compared (the floor is the single-process run of the same catalogue, same run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(catalogue: str, out: str, workers: int) -> None:
    sys.path.insert(0, str(REPO))
    from datamodules.sharding import shard_catalogue

    start = time.perf_counter()
    manifest = shard_catalogue(catalogue, out, progress=False, num_workers=workers)
    seconds = time.perf_counter() - start
    print(
        "RESULT "
        + json.dumps({"seconds": seconds, "products": manifest.sharded, "hash": manifest.content_hash})
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalogue")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child is not None:
        child(opts.catalogue, opts.out, opts.child)
        return
    runs: dict[int, list[dict]] = {0: [], opts.workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(opts.repeats):
            for workers in runs:
                out = str(Path(tmp) / f"w{workers}-{repeat}")
                cmd = [sys.executable, __file__, opts.catalogue, "--child", str(workers), "--out", out]
                text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                runs[workers].append(
                    json.loads(next(x for x in text.splitlines() if x.startswith("RESULT "))[7:])
                )
    floor, ours = min(r["seconds"] for r in runs[0]), min(r["seconds"] for r in runs[opts.workers])
    products = runs[0][0]["products"]
    same = len({r["hash"] for rs in runs.values() for r in rs}) == 1
    print(f"{products:,} products: in-process checks {floor:.1f} s ({1e6 * floor / products:.0f} us/product), "
          f"{opts.workers} workers {ours:.1f} s: {floor / ours:.2f}x; same shards: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
