"""What a leaderboard run produced (per seed: query table, test gallery, per-row per-query values) and its
file format (JSON + npz, no pickled classes)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# (key, column label, ceiling key shown beside it)
from .spec import LeaderboardSpec, RowSpec


# --------------------------------------------------------------------------------------------- per-seed results
@dataclass
class SeedContext:
    """The query table and test gallery of one split seed (shared by every row of that seed)."""

    seed: int
    paths: list[tuple[str, ...]]
    groups: dict[str, np.ndarray]
    category_ids: np.ndarray
    product_ids: list[str]

    @property
    def depth(self) -> np.ndarray:
        return np.array([len(p) for p in self.paths])

    def same_harness(self, other: SeedContext) -> str | None:
        """Why ``other`` is not the same evaluation (None when it is)."""
        if self.paths != other.paths:
            return "the category tables differ"
        if set(self.groups) != set(other.groups) or any(
            not np.array_equal(self.groups[g], other.groups[g]) for g in self.groups
        ):
            return "the settings differ (another unseen-category draw?)"
        if self.product_ids != other.product_ids or not np.array_equal(self.category_ids, other.category_ids):
            return "the test galleries differ"
        return None


@dataclass
class RowSeedResult:
    """One row on one split seed."""

    per_query: dict[str, np.ndarray]
    top: np.ndarray
    logged: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


@dataclass
class LeaderboardRun:
    """Everything the report is written from."""

    spec: LeaderboardSpec
    contexts: dict[int, SeedContext] = field(default_factory=dict)
    results: dict[str, dict[int, RowSeedResult]] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)
    command: str = ""
    started: str = ""
    wall_s: float = 0.0
    environment: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    partial: str = ""
    leakage: dict[str, Any] = field(default_factory=dict)  # the shard manifest's leakage guard report
    row_text: dict[str, list[str]] = field(default_factory=dict)  # row -> product text fields it reads
    public: dict[str, Any] = field(default_factory=dict)  # the public-protocol block (.public.public_block)

    @property
    def ran(self) -> list[str]:
        return [r.name for r in self.spec.rows if r.name in self.results]


def _numpy_per_query(per_query: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: torch.as_tensor(v).detach().cpu().double().numpy() for k, v in per_query.items()}


def _context(
    seed: int,
    groups: dict[str, torch.Tensor],
    datamodule: Any,
    product_ids: Sequence[str],
    category_ids: torch.Tensor,
) -> SeedContext:
    return SeedContext(
        seed=seed,
        paths=[tuple(p) for p in datamodule.tree.paths],
        groups={k: torch.as_tensor(v).cpu().numpy().astype(bool) for k, v in groups.items()},
        category_ids=torch.as_tensor(category_ids).cpu().numpy(),
        product_ids=list(product_ids),
    )


RUN_FILE = "leaderboard_run.json"  # + leaderboard_run.npz beside it (arrays); no pickled classes


def save_run(run: LeaderboardRun, path: str | Path) -> None:
    """Keep a finished run (per-query values, top-10 rankings, galleries) so the report can be re-rendered with
    ``report_only`` without training again: plain JSON for the structure and an ``.npz`` beside it for the arrays
    (no pickled classes, so the file survives code moves and loads without trusting it)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}

    def put(value: np.ndarray) -> str:
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value)
        return key

    document = {
        "format": "clipita-leaderboard-run/1",
        "spec": dataclasses.asdict(run.spec),
        "contexts": [
            {
                "seed": c.seed,
                "paths": [list(p) for p in c.paths],
                "groups": {g: put(v) for g, v in c.groups.items()},
                "category_ids": put(c.category_ids),
                "product_ids": list(c.product_ids),
            }
            for c in run.contexts.values()
        ],
        "results": {
            row: [
                {
                    "seed": seed,
                    "per_query": {m: put(v) for m, v in r.per_query.items()},
                    "top": put(r.top),
                    "logged": r.logged,
                    "wall_s": r.wall_s,
                }
                for seed, r in per_seed.items()
            ]
            for row, per_seed in run.results.items()
        },
        "not_run": run.not_run,
        "command": run.command,
        "started": run.started,
        "wall_s": run.wall_s,
        "environment": run.environment,
        "partial": run.partial,
        "leakage": run.leakage,
        "row_text": run.row_text,
        "public": run.public,
    }
    np.savez_compressed(path.with_suffix(".npz"), **arrays)
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False))


def load_run(path: str | Path) -> LeaderboardRun:
    """A run written by :func:`save_run`."""
    path = Path(path)
    document = json.loads(path.read_text())
    if document.get("format") != "clipita-leaderboard-run/1":
        raise ValueError(f"{path} does not hold a clipita leaderboard run")
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    spec_fields = dict(document["spec"])
    spec_fields["rows"] = [RowSpec(**r) for r in spec_fields["rows"]]
    run = LeaderboardRun(spec=LeaderboardSpec(**spec_fields))
    for c in document["contexts"]:
        run.contexts[int(c["seed"])] = SeedContext(
            seed=int(c["seed"]),
            paths=[tuple(p) for p in c["paths"]],
            groups={g: arrays[k] for g, k in c["groups"].items()},
            category_ids=arrays[c["category_ids"]],
            product_ids=list(c["product_ids"]),
        )
    for row, per_seed in document["results"].items():
        run.results[row] = {
            int(r["seed"]): RowSeedResult(
                per_query={m: arrays[k] for m, k in r["per_query"].items()},
                top=arrays[r["top"]],
                logged=r["logged"],
                wall_s=r["wall_s"],
            )
            for r in per_seed
        }
    for key in ("not_run", "command", "started", "wall_s", "environment", "partial"):
        setattr(run, key, document[key])
    for key in ("leakage", "row_text", "public"):  # absent from runs saved before these were kept
        setattr(run, key, document.get(key) or {})
    return run
