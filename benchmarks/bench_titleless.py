"""A titleless table end to end (issue 12): generate, shard, and run a one-seed leaderboard.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_titleless.py --out /tmp/titleless [--products 2400]

The table has only ``id`` (any text: ``SKU/00017.b``), ``file`` and three category columns; no title, no attributes.
Its 36 leaves are the sample catalogue's 24 silhouettes with their patterns, plus 12 ``Outlet`` leaves that reuse
a silhouette with another pattern (an image model must tell them apart by surface). Images are drawn by the
sample generator at 96 px. The leaderboard runs random, BM25, title zero-shot, CLIP-I (EfficientNet-Lite0 at
128 px, frozen, cached features) and CLIP-ITA; the title rows and CLIP-ITA must come back "not run".

With ``--finetune`` (issue 19: where titles are absent, only the image tower can learn the catalogue) it adds the
adaptive recipe (heads on the frozen tower's cached features) and the fine-tune recipe started from it
(``init_from``: the top 2 blocks of the same tower at the same 128 px, trained on the raw images, WiSE-FT mix chosen
on the pseudo-novel validation leaves), on the split seeds given (``--split_seeds 3 4 5``: report seeds; the rows
run as shipped, with the CPU budget below fixed before any run, so no seed decided anything)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_titleless.py --out /tmp/titleless_ft --finetune \
        --split_seeds 3 4 5
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from datamodules.sample_catalogue import LEAVES, draw_product, leaf_pattern
from datamodules.sample_catalogue.taxonomy import _PATTERNS, COLOURS
from datamodules.sharding import shard_catalogue

REPO = Path(__file__).resolve().parents[1]
EXTRA = 12  # Outlet leaves


def leaf_specs() -> list[tuple[tuple[str, str, str], int, str]]:
    """(path, sample leaf index for the silhouette, pattern) per leaf."""
    specs = [(leaf.path, i, leaf_pattern(i)) for i, leaf in enumerate(LEAVES)]
    for j in range(EXTRA):
        i = (2 * j) % len(LEAVES)
        own = leaf_pattern(i)
        other = _PATTERNS[(_PATTERNS.index(own) + 1 + j % (len(_PATTERNS) - 1)) % len(_PATTERNS)]
        specs.append((("Outlet", LEAVES[i].path[1], f"{LEAVES[i].path[2]} ({other})"), i, other))
    return specs


def generate(out: Path, products: int, seed: int = 0) -> tuple[Path, int, int]:
    rng = np.random.default_rng(seed)
    specs = leaf_specs()
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    colours = list(COLOURS)
    for n in range(products):
        path, shape, pattern = specs[n % len(specs)]
        colour = COLOURS[colours[int(rng.integers(len(colours)))]]
        image = draw_product(
            shape, colour, rng, image_size=96, pattern=None if rng.random() < 0.1 else pattern
        )
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        file = f"{n:05d}.jpg"
        (out / "images" / file).write_bytes(buffer.getvalue())
        rows.append({"id": f"SKU/{n:05d}.b", "file": file, "l1": path[0], "l2": path[1], "l3": path[2]})
    with open(out / "products.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    schema = out / "titleless.yaml"
    schema.write_text(
        yaml.safe_dump(
            {
                "name": "titleless",
                "table": "products.csv",
                "image_root": "images",
                "image_column": "file",
                "category_columns": ["l1", "l2", "l3"],
            }
        )
    )
    return schema, products, len(specs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--products", type=int, default=2400)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--finetune", action="store_true", help="add the adaptive and the fine-tuned rows")
    parser.add_argument("--split_seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--finetune_epochs", type=int, default=2, help="epochs of each fine-tuning fit (CPU budget)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()
    schema, given, leaves = generate(out / "catalogue", args.products)
    print(f"generated {given} products, {leaves} leaves in {time.perf_counter() - started:.0f} s")
    manifest = shard_catalogue(str(schema), str(out / "shards"), progress=False)
    print(f"sharded {manifest.sharded} of {given} (skipped {len(manifest.skipped)})")
    assert manifest.sharded == given and manifest.modalities["title"]["present"] == 0

    from clipita.leaderboard import leaderboard

    base = str(REPO / "experiments" / "clip_i.yaml")
    shared = [
        "--data.catalogue",
        str(schema),
        "--data.work_dir",
        str(out / "work"),
        "--data.batch_size",
        "64",
    ]
    shared += ["--model.net.image_size", "128", "--trainer.max_epochs", str(args.epochs)]
    shared += [
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    spec = {
        "name": "titleless",
        "base_config": base,
        "split_seeds": args.split_seeds,
        "design_seeds": [0, 1, 2],  # the recipes' decisions were measured on split seeds 0-2 (report on 3-5)
        "shared_overrides": shared,
        "reference": "CLIP-I",
        "rows": [
            {"name": "random", "baseline": "random"},
            {"name": "BM25", "baseline": "bm25"},
            {"name": "title zero-shot", "baseline": "title_zero_shot"},
            {"name": "CLIP-I", "fit": base},
            {"name": "CLIP-ITA", "fit": str(REPO / "experiments" / "clip_ita.yaml")},
        ],
    }
    if args.finetune:
        spec["rows"] += [
            {"name": "CLIP-ITA adaptive", "fit": str(REPO / "experiments" / "clip_ita_adaptive.yaml")},
            {
                "name": "CLIP-ITA fine-tuned",
                "fit": str(REPO / "experiments" / "clip_ita_finetune.yaml"),
                "init_from": "CLIP-ITA adaptive",
                "overrides": [
                    "--trainer.max_epochs", str(args.finetune_epochs), "--trainer.accumulate_grad_batches", "1",
                    "--model.warmup_steps", "10", "--model.net.image_size", "128", "--data.train_image_size", "null",
                ],
            },
        ]  # fmt: skip
        spec["public_block"] = {"rows": ["CLIP-ITA adaptive", "CLIP-ITA fine-tuned"]}
    spec_path = out / "leaderboard.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    paths = leaderboard(str(spec_path), output_dir=str(out / "report"), runs_dir=str(out / "runs"))
    document = json.loads(Path(paths["json"]).read_text())
    for row in document["rows"]:
        summary = row["summary"] or {}
        value = summary.get("all", {}).get("map@10", {}).get("mean")
        shown = f"all mAP@10 {value:.4f}" if value is not None else ""
        print(f"{row['name']:<16} {row['status'][:90]:<90} {shown}")
    print(f"total {time.perf_counter() - started:.0f} s; report {paths['markdown']}")


if __name__ == "__main__":
    main()
