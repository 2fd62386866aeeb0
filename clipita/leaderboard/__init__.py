"""``clipita leaderboard``: every model and baseline of a leaderboard config, on several held-out splits, scored in
one harness, with significance tests, per-category numbers, plots and the paper's error analysis.

A leaderboard config (``experiments/leaderboards/<name>.yaml``)::

    name: fashion
    base_config: experiments/clip_ita.yaml      # data + frozen text encoder the baselines are scored with
    split_seeds: [0, 1, 2]                      # held-out splits (seen/unseen leaves change with the seed)
    vary_training_seed: true                    # also --seed_everything <split seed> for trained rows
    shared_overrides: [--trainer.enable_progress_bar, "false"]   # every row, every seed
    reference: CLIP-ITA                         # significance marks are against this row
    significance: {test: permutation, correction: holm, alpha: 0.05, n_resamples: 10000}
    paper_ordering:                             # the claim checked from the numbers
      rows: [CLIP-ITA, CLIP-IA, CLIP-I, [image zero-shot, title zero-shot]]   # a list = first one that ran
      metrics: [map@10, mrr, r_precision]
    rows:
      - {name: random, baseline: random}
      - {name: BM25, baseline: bm25, options: {k1: 1.5}}
      - {name: CLIP-ITA, fit: experiments/clip_ita.yaml, overrides: [--model.lr, "0.001"]}
      - {name: mine, fit: experiments/clip_ita.yaml, checkpoint: "runs/mine/seed{seed}/best.ckpt"}

Per split seed, trained rows go through :func:`clipita.experiment.fit_and_test` (exactly ``clipita fit``),
checkpoint rows through ``Trainer.test``, and baselines through :mod:`clipita.baselines` (the module's own
``CategoryRetrievalMetrics`` via ``update_scores``, same queries, groups and test gallery; checked row by row).

Outputs under ``results/<name>/``: ``leaderboard.md`` (tables per setting, mean ± std over seeds, significance
marks, error analysis, the paper-ordering verdict, command and run time), ``leaderboard.json``,
``leaderboard.csv``, ``per_category.csv``, ``leaderboard_*.png``, and ``leaderboard_run.json`` + ``.npz`` (the raw per-query
results: ``--report_only true`` re-renders the report from it without training). A partial report is written
after every split seed but the last.

On a CPU shared with other jobs pass ``--num_threads 1``: the heads train several times faster than with torch's
default thread pool fighting for the same cores.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import platform
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

# (key, column label, ceiling key shown beside it)
COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("p@1", "P@1", "p@1_ceiling"),
    ("p@5", "P@5", "p@5_ceiling"),
    ("p@10", "P@10", "p@10_ceiling"),
    ("map@5", "mAP@5", None),
    ("map@10", "mAP@10", None),
    ("r_precision", "R-prec", None),
    ("ndcg@10", "nDCG@10", None),
    ("mrr", "MRR", None),
    ("recall@10", "R@10", None),
)
TESTED_METRICS: tuple[str, ...] = tuple(key for key, _, _ in COLUMNS)
CEILINGS: tuple[str, ...] = tuple(c for _, _, c in COLUMNS if c)
LABELS: dict[str, str] = {key: label for key, label, _ in COLUMNS}
SETTING_ORDER: tuple[str, ...] = (
    "all",
    "general",
    "level-2",
    "level-3",
    "specific",
    "specific_seen",
    "specific_unseen",
)
ERROR_KS: tuple[int, ...] = (1, 10)
BETTER, WORSE = "▲", "▼"


# ------------------------------------------------------------------------------------------------------ the spec
@dataclass
class RowSpec:
    """One leaderboard row: a baseline, a config to fit, or a config + checkpoint to test."""

    name: str
    baseline: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    fit: str | None = None
    overrides: list[str] = field(default_factory=list)
    checkpoint: str | None = None

    @property
    def kind(self) -> str:
        if self.baseline:
            return f"baseline:{self.baseline}"
        return "checkpoint" if self.checkpoint else "fit"

    @property
    def slug(self) -> str:
        name = self.name.lower().replace("+", " plus ")  # "CLIP-ITA+" must not share "CLIP-ITA"'s run folder
        return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "row"


@dataclass
class LeaderboardSpec:
    """A parsed leaderboard config (see the module docstring for the YAML)."""

    name: str
    rows: list[RowSpec]
    split_seeds: list[int] = field(default_factory=lambda: [0])
    base_config: str | None = None
    shared_overrides: list[str] = field(default_factory=list)
    reference: str | None = None
    vary_training_seed: bool = True
    test: str = "permutation"
    correction: str = "holm"
    alpha: float = 0.05
    n_resamples: int = 10000
    ordering_rows: list[list[str]] = field(default_factory=list)
    ordering_metrics: list[str] = field(default_factory=lambda: ["map@10", "mrr", "r_precision"])
    ordering_settings: list[str] | None = None
    description: str = ""
    source: str = ""

    def row(self, name: str) -> RowSpec:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row named {name!r}; rows: {[r.name for r in self.rows]}")


def resolve_path(path: str, must_exist: bool = True) -> str:
    """``path`` from the working directory (the project folder holding ``experiments/``), as ``clipita fit`` does."""
    candidate = Path(path).expanduser()
    if candidate.exists() or candidate.is_absolute() or not must_exist:
        return str(candidate)
    raise FileNotFoundError(
        f"{path!r} does not exist (paths are relative to the working directory {Path.cwd()})"
    )


def find_leaderboard_config(name_or_path: str) -> Path:
    """A leaderboard YAML by path, or by name under ``experiments/leaderboards/``."""
    for candidate in (Path(name_or_path), Path("experiments") / "leaderboards" / f"{name_or_path}.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"leaderboard config {name_or_path!r} not found (nor experiments/leaderboards/{name_or_path}.yaml under "
        f"{Path.cwd()})"
    )


def _string_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list of command-line tokens, got {value!r}")
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in value]


def load_spec(path: str) -> LeaderboardSpec:
    """Parse and check a leaderboard YAML; errors name the offending key."""
    from clipita.baselines import BASELINES

    file = find_leaderboard_config(path)
    raw = yaml.safe_load(file.read_text()) or {}
    if not isinstance(raw, dict) or not raw.get("rows"):
        raise ValueError(f"{file}: a leaderboard config needs a non-empty 'rows' list")
    known = {
        "name", "description", "rows", "split_seeds", "base_config", "shared_overrides", "reference",
        "vary_training_seed", "significance", "paper_ordering",
    }  # fmt: skip
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{file}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    rows: list[RowSpec] = []
    for i, item in enumerate(raw["rows"]):
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError(f"{file}: rows[{i}] needs a 'name'")
        extra = set(item) - {"name", "baseline", "options", "fit", "overrides", "checkpoint"}
        if extra:
            raise ValueError(f"{file}: rows[{i}] ({item['name']}) has unknown keys {sorted(extra)}")
        row = RowSpec(
            name=str(item["name"]),
            baseline=item.get("baseline"),
            options=dict(item.get("options") or {}),
            fit=item.get("fit"),
            overrides=_string_list(item.get("overrides"), f"rows[{i}].overrides"),
            checkpoint=item.get("checkpoint"),
        )
        if bool(row.baseline) == bool(row.fit):
            raise ValueError(f"{file}: row {row.name!r} needs exactly one of 'baseline' or 'fit'")
        if row.baseline and row.baseline not in BASELINES:
            raise ValueError(
                f"{file}: row {row.name!r}: unknown baseline {row.baseline!r}; one of {BASELINES}"
            )
        if row.checkpoint and not row.fit:
            raise ValueError(
                f"{file}: row {row.name!r}: 'checkpoint' needs the 'fit' config it was trained with"
            )
        rows.append(row)
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"{file}: row names must be unique, got {names}")
    slugs = [r.slug for r in rows]
    if len(set(slugs)) != len(slugs):
        raise ValueError(f"{file}: rows {names} map to clashing run folders {slugs}; rename one")
    seeds = [int(s) for s in raw.get("split_seeds", [0])]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{file}: split_seeds must be a non-empty list of distinct integers, got {seeds}")
    for row in rows:
        if row.checkpoint and len(seeds) > 1 and "{seed}" not in row.checkpoint:
            raise ValueError(
                f"{file}: row {row.name!r}: with several split seeds the checkpoint path needs a '{{seed}}' "
                "placeholder (a model trained on one split must not be tested on another split's test set)"
            )
    sig = dict(raw.get("significance") or {})
    ordering = dict(raw.get("paper_ordering") or {})
    spec = LeaderboardSpec(
        name=str(raw.get("name") or file.stem),
        rows=rows,
        split_seeds=seeds,
        base_config=raw.get("base_config"),
        shared_overrides=_string_list(raw.get("shared_overrides"), "shared_overrides"),
        reference=raw.get("reference"),
        vary_training_seed=bool(raw.get("vary_training_seed", True)),
        test=str(sig.get("test", "permutation")),
        correction=str(sig.get("correction", "holm")),
        alpha=float(sig.get("alpha", 0.05)),
        n_resamples=int(sig.get("n_resamples", 10000)),
        ordering_rows=[[e] if isinstance(e, str) else [str(x) for x in e] for e in ordering.get("rows", [])],
        ordering_metrics=[str(m) for m in ordering.get("metrics", ["map@10", "mrr", "r_precision"])],
        ordering_settings=ordering.get("settings"),
        description=str(raw.get("description", "")),
        source=str(file),
    )
    if spec.reference is not None:
        spec.row(spec.reference)
    for entry in spec.ordering_rows:
        for name in entry:
            spec.row(name)
    for metric in spec.ordering_metrics:
        if metric not in TESTED_METRICS:
            raise ValueError(f"{file}: paper_ordering metric {metric!r} is not one of {TESTED_METRICS}")
    if spec.test not in ("permutation", "ttest", "wilcoxon") or spec.correction not in ("holm", "bonferroni"):
        raise ValueError(
            f"{file}: significance test/correction {spec.test!r}/{spec.correction!r} not supported"
        )
    if spec.base_config is None:
        fits = [r.fit for r in rows if r.fit]
        spec.base_config = fits[0] if fits else None
    return spec


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
            return "the query groups differ (another unseen-category draw?)"
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

    @property
    def ran(self) -> list[str]:
        return [r.name for r in self.spec.rows if r.name in self.results]


def _numpy_per_query(per_query: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: torch.as_tensor(v).detach().cpu().double().numpy() for k, v in per_query.items()}


def _context(
    seed: int, groups: dict[str, torch.Tensor], datamodule: Any, product_ids: Sequence[str]
) -> SeedContext:
    return SeedContext(
        seed=seed,
        paths=[tuple(p) for p in datamodule.tree.paths],
        groups={k: torch.as_tensor(v).cpu().numpy().astype(bool) for k, v in groups.items()},
        category_ids=datamodule.datasets["test"].category_ids.cpu().numpy(),
        product_ids=list(product_ids),
    )


def _logger_overrides(config: str | None, runs_dir: Path, slug: str, seed: int) -> list[str]:
    """Send a row's run (logs, checkpoints) to ``runs_dir/<row>/seed<k>`` whatever the config's logger says."""
    out = ["--trainer.default_root_dir", str(runs_dir / slug / f"seed{seed}")]
    if config is None:
        return out
    logger = ((yaml.safe_load(Path(config).read_text()) or {}).get("trainer") or {}).get("logger")
    if isinstance(logger, dict) and str(logger.get("class_path", "")).endswith(
        ("CSVLogger", "TensorBoardLogger")
    ):
        out += [
            "--trainer.logger.init_args.save_dir", str(runs_dir),
            "--trainer.logger.init_args.name", slug,
            "--trainer.logger.init_args.version", f"seed{seed}",
        ]  # fmt: skip
    return out


class _Runner:
    """Runs every row of a spec on every split seed."""

    def __init__(self, spec: LeaderboardSpec, overrides: Sequence[str], runs_dir: Path, log=print) -> None:
        self.spec, self.overrides, self.runs_dir, self.log = spec, list(overrides), runs_dir, log
        self.galleries: dict[tuple, Any] = {}

    def seed_overrides(self, seed: int, trained: bool) -> list[str]:
        out = ["--data.split_seed", str(seed)]
        if trained and self.spec.vary_training_seed:
            out += ["--seed_everything", str(seed)]
        return out

    def gallery(self, row: RowSpec, seed: int):
        from clipita.baselines import load_test_gallery

        config = resolve_path(self.spec.base_config) if self.spec.base_config else None
        overrides = [
            *self.spec.shared_overrides, *row.overrides, *self.overrides, *self.seed_overrides(seed, False),
            "--trainer.logger", "false",
        ]  # fmt: skip
        key = (config, tuple(overrides))
        if key not in self.galleries:
            self.galleries = {key: load_test_gallery(config, overrides)}  # keep one gallery in memory
        return self.galleries[key]

    def baseline(self, row: RowSpec, seed: int) -> tuple[RowSeedResult, SeedContext]:
        from clipita.baselines import run_baseline

        gallery = self.gallery(row, seed)
        result = run_baseline(row.baseline, gallery, row.options)
        context = SeedContext(
            seed=seed,
            paths=list(gallery.tree.paths),
            groups={k: v.numpy().astype(bool) for k, v in gallery.query_groups.items()},
            category_ids=gallery.category_ids.numpy(),
            product_ids=list(gallery.product_ids),
        )
        top = result.ranking[:, : max(ERROR_KS)].numpy()
        return RowSeedResult(_numpy_per_query(result.per_query), top, dict(result.metrics)), context

    def trained(self, row: RowSpec, seed: int) -> tuple[RowSeedResult, SeedContext]:
        from clipita.experiment import fit_and_test

        config = resolve_path(row.fit)
        if row.checkpoint:  # test only: no logs, and never touch a folder the checkpoint may live in
            logging = [
                "--trainer.logger",
                "false",
                "--trainer.default_root_dir",
                str(self.runs_dir / "tests"),
            ]
        else:  # a fresh run folder per row and seed (a previous leaderboard run's checkpoints are replaced)
            shutil.rmtree(self.runs_dir / row.slug / f"seed{seed}", ignore_errors=True)
            logging = _logger_overrides(config, self.runs_dir, row.slug, seed)
        overrides = [
            *logging,
            *self.spec.shared_overrides, *row.overrides, *self.overrides, *self.seed_overrides(seed, True),
        ]  # fmt: skip
        if row.checkpoint:
            from clipita.cli import make_cli

            checkpoint = resolve_path(row.checkpoint.format(seed=seed))
            cli = make_cli(["--config", config, *overrides], run=False)
            module, datamodule = cli.model, cli.datamodule
            cli.trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)
            logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
        else:
            run = fit_and_test(config, overrides)
            module, datamodule, logged = run.module, run.datamodule, run.test
        per_query = _numpy_per_query(module.per_query["test"])
        top = module.rankings["test"][:, : max(ERROR_KS)].cpu().numpy()
        context = _context(seed, module.query_groups, datamodule, datamodule.datasets["test"].product_id)
        logged = {k.removeprefix("test/"): v for k, v in logged.items()}
        return RowSeedResult(per_query, top, logged), context

    def run(
        self, rows: Sequence[RowSpec], on_seed: Callable[[LeaderboardRun, list[int]], None] | None = None
    ) -> LeaderboardRun:
        """Every row on every split seed; ``on_seed(run, seeds_done)`` after each seed but the last."""
        from clipita.baselines import BaselineNotRun

        out = LeaderboardRun(spec=self.spec)
        for i, seed in enumerate(self.spec.split_seeds):
            if i and on_seed is not None:
                on_seed(out, self.spec.split_seeds[:i])
            for row in rows:
                if row.name in out.not_run:
                    continue
                self.log(f"[leaderboard {self.spec.name}] split seed {seed}: {row.name} ({row.kind})")
                start = time.perf_counter()
                try:
                    result, context = self.baseline(row, seed) if row.baseline else self.trained(row, seed)
                except BaselineNotRun as reason:
                    out.not_run[row.name] = f"not run: {reason}"
                    self.log(f"[leaderboard {self.spec.name}] {row.name}: {out.not_run[row.name]}")
                    continue
                result.wall_s = time.perf_counter() - start
                known = out.contexts.setdefault(seed, context)
                problem = known.same_harness(context)
                if problem:
                    raise ValueError(
                        f"row {row.name!r} on split seed {seed} is not evaluated like the rows before it: {problem}; "
                        "row overrides must not change the data (catalogue, split options, work_dir)"
                    )
                out.results.setdefault(row.name, {})[seed] = result
                gc.collect()
        return out


# ------------------------------------------------------------------------------------------------- statistics
def settings_of(run: LeaderboardRun) -> list[str]:
    """The query groups present in any seed, in reading order."""
    names: list[str] = []
    for context in run.contexts.values():
        names += [g for g in context.groups if g not in names]
    known = [s for s in SETTING_ORDER if s in names]
    return known + sorted(n for n in names if n not in known)


def _group_values(run: LeaderboardRun, row: str, seed: int, group: str, metric: str) -> np.ndarray:
    """Per-query values of one group on one seed, NaN for queries without a relevant product (or absent)."""
    context = run.contexts[seed]
    mask = context.groups.get(group)
    if mask is None:
        return np.zeros(0)
    return run.results[row][seed].per_query[metric][mask]


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def summarize(run: LeaderboardRun) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{row: {setting: {metric: {"mean", "std", "values", "num_queries"}}}}``; std is the sample std (ddof=1)."""
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    metrics = [*TESTED_METRICS, *CEILINGS]
    for row in run.ran:
        out[row] = {}
        for setting in settings_of(run):
            cells: dict[str, dict[str, Any]] = {}
            for metric in metrics:
                per_seed = [_group_values(run, row, s, setting, metric) for s in run.spec.split_seeds]
                values = [_mean(v) for v in per_seed]
                finite = [v for v in values if not math.isnan(v)]
                cells[metric] = {
                    "mean": float(np.mean(finite)) if finite else math.nan,
                    "std": float(np.std(finite, ddof=1))
                    if len(finite) > 1
                    else (0.0 if finite else math.nan),
                    "values": values,
                    "num_queries": [int(np.isfinite(v).sum()) for v in per_seed],
                }
            out[row][setting] = cells
    return out


def _pooled(run: LeaderboardRun, row: str, setting: str, metric: str) -> np.ndarray:
    """Per-query values pooled over split seeds (seed-major): the pairs of a paired test."""
    return np.concatenate([_group_values(run, row, s, setting, metric) for s in run.spec.split_seeds])


def _test_pairs(run: LeaderboardRun, pairs: Sequence[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
    """Paired tests of ``(row_a, row_b, setting, metric)``; one Holm/Bonferroni family over all of them."""
    from lightning_modules.metrics import adjust_p_values, paired_test

    spec = run.spec
    tests: list[dict[str, Any]] = []
    for a, b, setting, metric in pairs:
        x, y = _pooled(run, a, setting, metric), _pooled(run, b, setting, metric)
        keep = np.isfinite(x) & np.isfinite(y)
        if not keep.any():
            continue
        stat, p = paired_test(x[keep], y[keep], method=spec.test, n_resamples=spec.n_resamples, seed=0)
        tests.append(
            {
                "row": a, "versus": b, "setting": setting, "metric": metric, "statistic": stat,
                "p_value": p, "mean_difference": float(np.mean(x[keep] - y[keep])), "num_pairs": int(keep.sum()),
            }
        )  # fmt: skip
    if tests:
        adjusted = adjust_p_values([t["p_value"] for t in tests], method=spec.correction)
        for t, p in zip(tests, adjusted, strict=True):
            t["p_adjusted"] = float(p)
            significant = p < spec.alpha and t["mean_difference"] != 0
            t["mark"] = (BETTER if t["mean_difference"] > 0 else WORSE) if significant else ""
    return tests


def significance(run: LeaderboardRun) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """Every row that ran against the reference: ``{row: {setting: {metric: test}}}``.

    Per row, the tests over all settings x metrics are one family (Holm by default); per-query values are pooled
    over the split seeds, so a pair is (seed, category).
    """
    reference = run.spec.reference
    if reference is None or reference not in run.results:
        return {}
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for row in run.ran:
        if row == reference:
            continue
        pairs = [(row, reference, s, m) for s in settings_of(run) for m in TESTED_METRICS]
        for t in _test_pairs(run, pairs):
            out.setdefault(row, {}).setdefault(t["setting"], {})[t["metric"]] = t
    return out


def error_counts(run: LeaderboardRun) -> dict[str, dict[str, dict[str, int]]]:
    """The paper's error analysis per row and setting, counts summed over split seeds: wrong items among the top-1
    and top-10 by same tree / different tree and depth gap (:func:`lightning_modules.metrics.error_analysis`)."""
    from datamodules.category_tree import CategoryTree
    from lightning_modules.metrics import error_analysis

    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in run.ran:
        out[row] = {}
        for setting in settings_of(run):
            total: dict[str, int] = {}
            for seed in run.spec.split_seeds:
                context, result = run.contexts[seed], run.results[row][seed]
                if setting not in context.groups:
                    continue
                tree = CategoryTree(context.paths)
                mask = context.groups[setting] & (result.per_query["num_relevant"] > 0)
                counts = error_analysis(
                    torch.arange(len(context.paths)),
                    torch.from_numpy(result.top),
                    torch.from_numpy(context.category_ids),
                    query_ancestors=torch.from_numpy(tree.ancestor_matrix(context.paths)),
                    ks=ERROR_KS,
                    query_mask=torch.from_numpy(mask),
                )
                for k, v in counts.items():
                    total[k] = total.get(k, 0) + int(v)
            out[row][setting] = total
    return out


def _ordering_chain(run: LeaderboardRun) -> tuple[list[str], list[str]]:
    """The ordering's rows that ran (first alternative that ran per entry) and notes on substitutions."""
    chain, notes = [], []
    for entry in run.spec.ordering_rows:
        ran = [n for n in entry if n in run.results]
        if not ran:
            notes.append(f"no row of {entry} ran ({'; '.join(run.not_run.get(n, 'not run') for n in entry)})")
            continue
        chain.append(ran[0])
        skipped = [n for n in entry[: entry.index(ran[0])]]
        if skipped:
            notes.append(
                f"{ran[0]} stands in for {', '.join(skipped)} ({'; '.join(run.not_run.get(n, '') for n in skipped)})"
            )
    return chain, notes


def ordering_verdict(run: LeaderboardRun, summary: dict) -> dict[str, Any]:
    """Check the configured ordering (e.g. the paper's CLIP-ITA > CLIP-IA > CLIP-I > zero-shot) on the means, and
    test each adjacent pair (paired, pooled over seeds, one corrected family) for whether the gap is significant."""
    chain, notes = _ordering_chain(run)
    if len(chain) < 2:
        return {"chain": chain, "notes": notes, "checks": [], "statement": "no ordering configured or run"}
    settings = [s for s in (run.spec.ordering_settings or settings_of(run)) if s in settings_of(run)]
    metrics = run.spec.ordering_metrics
    pairs = [(a, b, s, m) for s in settings for m in metrics for a, b in zip(chain, chain[1:], strict=False)]
    tests = {(t["row"], t["versus"], t["setting"], t["metric"]): t for t in _test_pairs(run, pairs)}
    checks = []
    for s in settings:
        for m in metrics:
            means = [summary[r][s][m]["mean"] for r in chain]
            if any(math.isnan(v) for v in means):
                continue
            gaps = []
            for (a, b), (va, vb) in zip(
                zip(chain, chain[1:], strict=False), zip(means, means[1:], strict=False), strict=True
            ):
                t = tests.get((a, b, s, m), {})
                gaps.append(
                    {"higher": a, "lower": b, "difference": va - vb, "holds": va > vb,
                     "p_adjusted": t.get("p_adjusted"), "significant": t.get("p_adjusted", 1.0) < run.spec.alpha}
                )  # fmt: skip
            checks.append(
                {"setting": s, "metric": m, "means": dict(zip(chain, means, strict=True)),
                 "holds": all(g["holds"] for g in gaps),
                 "holds_significantly": all(g["holds"] and g["significant"] for g in gaps), "gaps": gaps}
            )  # fmt: skip
    n_hold = sum(c["holds"] for c in checks)
    n_sig = sum(c["holds_significantly"] for c in checks)
    chain_text = " > ".join(chain)
    headline = next((c for c in checks if c["setting"] == "all" and c["metric"] == metrics[0]), None)
    lines = [
        f"Ordering checked: {chain_text}"
        + (f" ({'; '.join(notes)})" if notes else "")
        + f", on the means over {len(run.spec.split_seeds)} split seed(s)."
    ]
    if headline is not None:
        values = " vs ".join(f"{r} {v:.3f}" for r, v in headline["means"].items())
        verdict = "HOLDS" if headline["holds"] else "DOES NOT HOLD"
        lines.append(f"Headline ({headline['setting']}, {LABELS[headline['metric']]}): {verdict} ({values}).")
    lines.append(
        f"It holds in {n_hold} of {len(checks)} (setting, metric) checks"
        f" ({', '.join(LABELS[m] for m in metrics)} on {', '.join(settings)}); with every adjacent gap "
        f"significant ({run.spec.test} test, {run.spec.correction}-corrected, alpha {run.spec.alpha}) in {n_sig}."
    )
    for higher, lower in zip(chain, chain[1:], strict=False):
        gaps = [g for c in checks for g in c["gaps"] if g["higher"] == higher and g["lower"] == lower]
        lines.append(
            f"{higher} > {lower}: in {sum(g['holds'] for g in gaps)} of {len(gaps)} checks "
            f"(significantly in {sum(g['holds'] and g['significant'] for g in gaps)}; "
            f"significantly reversed in {sum(not g['holds'] and g['significant'] for g in gaps)})."
        )
    failures = [c for c in checks if not c["holds"]]
    for c in failures:
        broken = [g for g in c["gaps"] if not g["holds"]]
        detail = "; ".join(
            f"{g['lower']} {c['means'][g['lower']]:.3f} >= {g['higher']} {c['means'][g['higher']]:.3f}"
            for g in broken
        )
        lines.append(f"Fails on {c['setting']} / {LABELS[c['metric']]}: {detail}.")
    return {
        "chain": chain,
        "notes": notes,
        "checks": checks,
        "holds_everywhere": n_hold == len(checks) and bool(checks),
        "headline_holds": None if headline is None else headline["holds"],
        "statement": "\n".join(lines),
    }


# ------------------------------------------------------------------------------------------------- formatting
def _fmt(cell: dict[str, Any], seeds: int, mark: str = "") -> str:
    if cell is None or math.isnan(cell["mean"]):
        return "–"
    text = f"{cell['mean']:.3f}"
    if seeds > 1:
        text += f" ± {cell['std']:.3f}"
    return text + mark


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _queries_text(cell: dict[str, Any]) -> str:
    """Queries evaluated (with a relevant test product): one number, or one per seed when they differ."""
    counts = cell["num_queries"]
    return str(counts[0]) if len(set(counts)) == 1 else ", ".join(str(c) for c in counts)


def significance_floor(spec: LeaderboardSpec, family_size: int) -> float | None:
    """The smallest corrected p-value a permutation test with ``spec.n_resamples`` can reach in a family of
    ``family_size`` tests (two-sided: ``2 / (n + 1)`` times the family size); None for the other tests."""
    if spec.test != "permutation":
        return None
    return min(1.0, 2.0 / (spec.n_resamples + 1) * max(1, family_size))


def markdown_table(run: LeaderboardRun, summary: dict, tests: dict, setting: str) -> str:
    seeds = len(run.spec.split_seeds)
    header = ["Model"]
    for _, label, ceiling in COLUMNS:
        header.append(label)
        if ceiling:
            header.append("ceil")
    header.append("queries")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in run.spec.rows:
        name = row.name + (" (ref)" if row.name == run.spec.reference else "")
        if row.name in run.not_run:
            lines.append("| " + " | ".join([name, run.not_run[row.name]] + [""] * (len(header) - 2)) + " |")
            continue
        if row.name not in summary:
            continue
        cells = summary[row.name][setting]
        out = [name]
        for key, _, ceiling in COLUMNS:
            mark = tests.get(row.name, {}).get(setting, {}).get(key, {}).get("mark", "")
            out.append(_fmt(cells[key], seeds, mark))
            if ceiling:
                out.append("–" if math.isnan(cells[ceiling]["mean"]) else f"{cells[ceiling]['mean']:.3f}")
        out.append(_queries_text(cells["map@10"]))
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def _error_rows(run: LeaderboardRun, errors: dict, setting: str) -> list[str]:
    depth = max(len(p) for c in run.contexts.values() for p in c.paths)
    header = ["Model"]
    for k in ERROR_KS:
        p = "top-1" if k == 1 else f"top-{k}"
        header += [f"{p} wrong", "same tree", "diff. tree"] + [f"gap {g}" for g in range(1, depth + 1)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in run.ran:
        counts = errors[row].get(setting, {})
        if not counts:
            continue
        out = [row]
        for k in ERROR_KS:
            prefix = "rank1" if k == 1 else f"top{k}"
            judged, wrong = counts.get(f"{prefix}/judged", 0), counts.get(f"{prefix}/wrong", 0)
            share = lambda n, w=wrong: f"{n} ({100 * n / w:.0f}%)" if w else "–"  # noqa: E731
            out.append(f"{wrong}/{judged} ({100 * wrong / judged:.0f}%)" if judged else "–")
            out += [
                share(counts.get(f"{prefix}/wrong_same_tree", 0)),
                share(counts.get(f"{prefix}/wrong_different_tree", 0)),
            ]
            out += [share(counts.get(f"{prefix}/wrong_depth_gap={g}", 0)) for g in range(1, depth + 1)]
        lines.append("| " + " | ".join(out) + " |")
    return lines


def write_markdown(
    run: LeaderboardRun,
    summary: dict,
    tests: dict,
    errors: dict,
    ordering: dict,
    plots: list[str],
    path: Path,
) -> None:
    spec = run.spec
    seeds = spec.split_seeds
    lines = [f"# Leaderboard: {spec.name}", ""]
    if run.partial:
        lines += [f"**{run.partial}**", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    gallery = ", ".join(f"seed {s}: {len(c.product_ids)}" for s, c in sorted(run.contexts.items()))
    lines += [
        f"- command: `{run.command}`",
        f"- config: `{spec.source}`",
        f"- started {run.started}; wall time {run.wall_s:.0f} s ({run.wall_s / 60:.1f} min)"
        + (f" on {run.environment.get('device', '')}" if run.environment else ""),
        f"- split seeds: {seeds} (mean ± sample std over seeds; each seed re-draws the test split and the unseen leaves)",
        f"- test gallery (products): {gallery}",
        f"- reference for significance: **{spec.reference}**",
        "",
        "## Does the paper's ordering hold?",
        "",
        *[f"{line}  " for line in ordering.get("statement", "").splitlines()],
        "",
        "## Results per setting",
        "",
        f"{BETTER}/{WORSE}: significantly higher/lower than {spec.reference} ({spec.test} paired test on per-query values "
        f"pooled over the {len(seeds)} split seed(s), {spec.correction}-corrected over all settings x metrics of the row, "
        f"alpha {spec.alpha}"
        + (f", {spec.n_resamples} resamples" if spec.test == "permutation" else "")
        + "). `ceil` is the best P@k any ranking can reach (min(R, k)/k averaged over the queries). "
        "Queries with no relevant test product are left out (`queries`; per seed when it differs).",
        "",
    ]
    family = len(settings_of(run)) * len(TESTED_METRICS)
    floor = significance_floor(spec, family)
    if floor is not None and floor >= spec.alpha:
        lines += [
            f"**Warning:** with {spec.n_resamples} resamples and {family} tests per row the smallest reachable "
            f"corrected p-value is {floor:.3f} >= alpha: no difference can be marked; raise "
            "`significance.n_resamples`.",
            "",
        ]
    for setting in settings_of(run):
        lines += [f"### {setting}", "", markdown_table(run, summary, tests, setting), ""]
    if run.not_run:
        lines += ["## Rows not run", ""] + [f"- **{n}**: {why}" for n, why in run.not_run.items()] + [""]
    lines += [
        "## Error analysis (the paper's)",
        "",
        "Wrong items among each query's top-1 / top-10, counted over all split seeds: what share stays in the query's "
        "tree (same top-level category) or jumps to another, and the depth gap (query depth minus the depth of the "
        "lowest common ancestor; a gap equal to the query's depth is another tree).",
        "",
    ]
    for setting in [s for s in ("all", "specific_seen", "specific_unseen") if s in settings_of(run)]:
        lines += [f"### {setting}", "", *_error_rows(run, errors, setting), ""]
    lines += [
        "## Per category",
        "",
        "`per_category.csv`: one line per row x split seed x category (path, depth, leaf, seen/unseen, R, every metric).",
        "",
        "## Plots",
        "",
        *[f"![{Path(p).stem}]({Path(p).name})" for p in plots],
        "",
        "## Run time per row",
        "",
        "| Model | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for row in run.ran:
        lines.append(f"| {row} | " + " | ".join(f"{run.results[row][s].wall_s:.0f} s" for s in seeds) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_csv(run: LeaderboardRun, summary: dict, tests: dict, path: Path) -> None:
    import pandas as pd

    records = []
    for row in run.spec.rows:
        for setting in settings_of(run):
            rec: dict[str, Any] = {"model": row.name, "kind": row.kind, "setting": setting}
            if row.name in run.not_run:
                rec["status"] = run.not_run[row.name]
                records.append(rec)
                continue
            if row.name not in summary:
                continue
            cells = summary[row.name][setting]
            rec["status"] = "ok"
            rec["seeds"] = len(run.spec.split_seeds)
            rec["num_queries"] = float(np.mean(cells["map@10"]["num_queries"]))
            for key, _, ceiling in COLUMNS:
                rec[key] = cells[key]["mean"]
                rec[f"{key}_std"] = cells[key]["std"]
                t = tests.get(row.name, {}).get(setting, {}).get(key)
                rec[f"{key}_p_adjusted"] = None if t is None else t["p_adjusted"]
                rec[f"{key}_mark"] = "" if t is None else t["mark"]
                if ceiling:
                    rec[ceiling] = cells[ceiling]["mean"]
            records.append(rec)
    pd.DataFrame.from_records(records).to_csv(path, index=False, float_format="%.6g")


def write_per_category(run: LeaderboardRun, path: Path) -> None:
    import pandas as pd

    from datamodules.category_tree import format_path

    records = []
    metrics = [*TESTED_METRICS, *CEILINGS]
    for row in run.ran:
        for seed in run.spec.split_seeds:
            context, result = run.contexts[seed], run.results[row][seed]
            leaves = context.groups.get("specific", np.zeros(len(context.paths), bool))
            unseen = context.groups.get("specific_unseen", np.zeros(len(context.paths), bool))
            for q, category in enumerate(context.paths):
                rec = {
                    "model": row,
                    "split_seed": seed,
                    "query": q,
                    "category": format_path(category),
                    "depth": len(category),
                    "leaf": bool(leaves[q]),
                    "seen": ("unseen" if unseen[q] else "seen") if leaves[q] else "",
                    "num_relevant": int(result.per_query["num_relevant"][q]),
                }
                rec.update({m: result.per_query[m][q] for m in metrics})
                records.append(rec)
    pd.DataFrame.from_records(records).to_csv(path, index=False, float_format="%.6g")


# ------------------------------------------------------------------------------------------------------ plots
def plot_metrics(
    run: LeaderboardRun, summary: dict, path: Path, metrics: Sequence[str] = ("map@10", "mrr", "r_precision")
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = settings_of(run)
    rows = run.ran
    cols = min(3, len(settings))
    nrows = math.ceil(len(settings) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.8 * nrows), squeeze=False, sharey=True)
    colors = plt.get_cmap("tab10")
    width = 0.8 / max(1, len(rows))
    for ax, setting in zip(axes.flat, settings, strict=False):
        x = np.arange(len(metrics))
        for i, row in enumerate(rows):
            cells = [summary[row][setting][m] for m in metrics]
            means = [c["mean"] for c in cells]
            stds = [c["std"] for c in cells]
            ax.bar(
                x + (i - (len(rows) - 1) / 2) * width,
                means,
                width,
                yerr=stds,
                capsize=2,
                color=colors(i % 10),
                label=row,
            )
        queries = _queries_text(summary[rows[0]][setting]["map@10"])
        ax.set_title(f"{setting} ({queries} queries)")
        ax.set_xticks(x, [LABELS[m] for m in metrics])
        ax.set_ylim(0, 1.08)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(settings) :]:
        ax.axis("off")
    axes[0][0].set_ylabel("mean over split seeds (± std)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(rows), 7), frameon=False)
    fig.suptitle(f"{run.spec.name}: retrieval metrics per setting ({len(run.spec.split_seeds)} split seeds)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_per_category(run: LeaderboardRun, path: Path, metric: str = "map@10") -> None:
    """Heatmap of per-category AP@10 (mean over the seeds where the category has test products) for every leaf."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datamodules.category_tree import format_path

    rows = run.ran
    first = run.contexts[run.spec.split_seeds[0]]
    leaves = [
        q for q in range(len(first.paths)) if first.groups.get("specific", np.ones(len(first.paths), bool))[q]
    ]
    matrix = np.full((len(leaves), len(rows)), np.nan)
    for j, row in enumerate(rows):
        stacked = np.stack([run.results[row][s].per_query[metric][leaves] for s in run.spec.split_seeds])
        with np.errstate(all="ignore"):
            finite = np.isfinite(stacked)
            matrix[:, j] = np.where(
                finite.any(0), np.nansum(stacked, 0) / np.maximum(finite.sum(0), 1), np.nan
            )
    keep = np.isfinite(matrix).any(axis=1)
    unseen_in = np.zeros(len(leaves), int)
    for s in run.spec.split_seeds:
        unseen = run.contexts[s].groups.get("specific_unseen")
        if unseen is not None:
            unseen_in += unseen[leaves].astype(int)
    ref = rows.index(run.spec.reference) if run.spec.reference in rows else len(rows) - 1
    order = [i for i in np.argsort(-np.nan_to_num(matrix[:, ref], nan=-1.0), kind="stable") if keep[i]]
    labels = [
        format_path(first.paths[leaves[i]][-2:])
        + (f"  [unseen {unseen_in[i]}/{len(run.spec.split_seeds)}]" if unseen_in[i] else "")
        for i in order
    ]
    height = max(3.0, 0.17 * len(order) + 1.5)
    fig, ax = plt.subplots(figsize=(2.0 + 1.1 * len(rows) + 3.2, height))
    image = ax.imshow(matrix[order], aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(rows)), rows, rotation=30, ha="left", rotation_mode="anchor")
    ax.set_yticks(range(len(order)), labels, fontsize=7)
    ax.xaxis.tick_top()
    fig.colorbar(
        image, ax=ax, fraction=0.04, pad=0.02, label=f"{LABELS.get(metric, metric)} (mean over seeds)"
    )
    ax.set_title(
        f"{run.spec.name}: {LABELS.get(metric, metric)} per leaf category (sorted by {rows[ref]}; blank = no test product)",
        fontsize=9,
        pad=40,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_errors(run: LeaderboardRun, errors: dict, path: Path, setting: str = "all") -> None:
    """Stacked bars: share of judged top-1 / top-10 items that are wrong within the query's tree or in another tree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in run.ran if errors[r].get(setting)]
    fig, axes = plt.subplots(
        1, len(ERROR_KS), figsize=(5.5 * len(ERROR_KS), 0.45 * len(rows) + 1.8), squeeze=False
    )
    for ax, k in zip(axes[0], ERROR_KS, strict=True):
        prefix = "rank1" if k == 1 else f"top{k}"
        same, other = [], []
        for r in rows:
            c = errors[r][setting]
            judged = max(1, c.get(f"{prefix}/judged", 0))
            same.append(c.get(f"{prefix}/wrong_same_tree", 0) / judged)
            other.append(c.get(f"{prefix}/wrong_different_tree", 0) / judged)
        y = np.arange(len(rows))
        ax.barh(y, same, color="tab:orange", label="wrong, same tree")
        ax.barh(y, other, left=same, color="tab:red", label="wrong, different tree")
        ax.set_yticks(y, rows)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of retrieved items")
        ax.set_title(f"{'top-1' if k == 1 else f'top-{k}'} errors ({setting} queries, all seeds)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ report
def write_report(
    run: LeaderboardRun, output_dir: str | Path, started: float | None = None
) -> dict[str, Path]:
    """Write every leaderboard file for a finished run; returns ``{kind: path}`` (the JSON document is kept in
    ``run.report``).

    Args:
        run: the finished run.
        output_dir: the report folder (created).
        started: ``time.perf_counter()`` at the start of the run; when given, ``run.wall_s`` is set after the
            statistics and plots, so the reported wall time covers all but writing the text files.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(run)
    tests = significance(run)
    errors = error_counts(run)
    ordering = ordering_verdict(run, summary)
    paths = {
        "markdown": out / "leaderboard.md",
        "json": out / "leaderboard.json",
        "csv": out / "leaderboard.csv",
        "per_category": out / "per_category.csv",
    }
    plots: list[str] = []
    if run.ran:
        paths["plot_metrics"] = out / "leaderboard_metrics.png"
        plot_metrics(run, summary, paths["plot_metrics"])
        paths["plot_per_category"] = out / "leaderboard_per_category.png"
        plot_per_category(run, paths["plot_per_category"])
        paths["plot_errors"] = out / "leaderboard_errors.png"
        plot_errors(run, errors, paths["plot_errors"])
        plots = [str(paths[k]) for k in ("plot_metrics", "plot_per_category", "plot_errors")]
    if started is not None:
        run.wall_s = time.perf_counter() - started
    write_markdown(run, summary, tests, errors, ordering, plots, paths["markdown"])
    write_csv(run, summary, tests, paths["csv"])
    write_per_category(run, paths["per_category"])
    spec = run.spec
    document = {
        "name": spec.name,
        "partial": run.partial or None,
        "command": run.command,
        "config": spec.source,
        "started": run.started,
        "wall_time_s": run.wall_s,
        "environment": run.environment,
        "split_seeds": spec.split_seeds,
        "reference": spec.reference,
        "significance": {
            "test": spec.test,
            "correction": spec.correction,
            "alpha": spec.alpha,
            "n_resamples": spec.n_resamples,
            "family": "per row: every setting x metric against the reference; per-query values pooled over seeds",
        },  # fmt: skip
        "settings": settings_of(run),
        "rows": [
            {
                "name": row.name,
                "kind": row.kind,
                "spec": {k: v for k, v in vars(row).items() if v not in (None, [], {})},
                "status": run.not_run.get(row.name, "ok" if row.name in run.results else "missing"),
                "summary": summary.get(row.name),
                "significance": tests.get(row.name),
                "error_analysis": errors.get(row.name),
                "per_seed": {
                    str(s): {"wall_time_s": r.wall_s, "logged_test_metrics": r.logged}
                    for s, r in run.results.get(row.name, {}).items()
                },
            }
            for row in spec.rows
        ],
        "paper_ordering": ordering,
        "test_gallery_size": {str(s): len(c.product_ids) for s, c in run.contexts.items()},
    }
    run.report = _json_safe(document)
    paths["json"].write_text(json.dumps(run.report, indent=2, ensure_ascii=False, allow_nan=False))
    return paths


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
    return run


# --------------------------------------------------------------------------------------------------- command
def _command(leaderboard_config: str, **options: Any) -> str:
    parts = ["clipita", "leaderboard", leaderboard_config]
    for key, value in options.items():
        if value in (None, [], ()):
            continue
        parts += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return " ".join(parts)


def leaderboard(
    leaderboard_config: str,
    output_dir: str | None = None,
    split_seeds: list[int] | None = None,
    rows: list[str] | None = None,
    overrides: list[str] | None = None,
    runs_dir: str | None = None,
    num_threads: int | None = None,
    report_only: bool = False,
) -> dict[str, str]:
    """Run a leaderboard: every row on every split seed, then write the tables, statistics and plots.

    After each split seed but the last, a partial report (the seeds done so far) is written to ``output_dir``.

    Args:
        leaderboard_config: a leaderboard YAML, or its name under ``experiments/leaderboards/`` (e.g. ``fashion``).
        output_dir: where the report goes (default ``results/<name>``).
        split_seeds: replace the config's split seeds, e.g. ``[0]`` for a quick look.
        rows: run only these rows (by name); the reference row is always kept.
        overrides: extra ``--key value`` tokens for every row after the config's own, e.g.
            ``[--data.work_dir, /tmp/work]`` or ``[--trainer.max_epochs, "2"]``.
        runs_dir: where trained rows write logs and checkpoints (default ``runs/leaderboards/<name>``).
        num_threads: torch CPU threads (default: torch's choice); 1 is fastest on a CPU shared with other jobs.
        report_only: do not run anything: re-render the report from ``<output_dir>/leaderboard_run.json`` (kept by
            the last full run), e.g. after changing the report code.

    Returns:
        ``{kind: path}`` of the files written (markdown, json, csv, per_category, plots).
    """
    if num_threads:
        torch.set_num_threads(num_threads)
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    spec = load_spec(leaderboard_config)
    if split_seeds:
        spec.split_seeds = [int(s) for s in split_seeds]
    if rows:
        for name in rows:
            spec.row(name)
        keep = set(rows) | ({spec.reference} if spec.reference else set())
        spec.rows = [r for r in spec.rows if r.name in keep]
    out_dir = Path(output_dir) if output_dir else Path("results") / spec.name
    if report_only:
        run = load_run(out_dir / RUN_FILE)
        paths = write_report(run, out_dir)
        print(f"leaderboard {run.spec.name}: report re-rendered from {out_dir / RUN_FILE}")
        return {k: str(v) for k, v in paths.items()}
    runs = Path(runs_dir) if runs_dir else Path("runs") / "leaderboards" / spec.name
    command = _command(
        leaderboard_config, output_dir=output_dir, split_seeds=split_seeds, rows=rows, overrides=overrides,
        runs_dir=runs_dir, num_threads=num_threads,
    )  # fmt: skip
    environment = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }

    def stamp(run: LeaderboardRun) -> LeaderboardRun:
        run.command, run.started, run.environment = command, started_at, environment
        return run

    def write_partial(run: LeaderboardRun, done: list[int]) -> None:
        """A report of the seeds done so far, so a long run has readable results before it ends."""
        partial = dataclasses.replace(stamp(run), spec=dataclasses.replace(spec, split_seeds=list(done)))
        partial.partial = f"Partial: split seeds {done} of {spec.split_seeds} done, the run goes on."
        write_report(partial, out_dir, started=started)
        print(f"[leaderboard {spec.name}] partial report after split seeds {done}: {out_dir}")

    run = stamp(_Runner(spec, overrides or [], runs).run(spec.rows, on_seed=write_partial))
    family = len(settings_of(run)) * len(TESTED_METRICS)
    floor = significance_floor(spec, family)
    if floor is not None and floor >= spec.alpha:
        print(
            f"warning: {spec.n_resamples} permutation resamples cannot reach significance in {family} tests"
        )
    paths = write_report(run, out_dir, started=started)
    save_run(run, out_dir / RUN_FILE)
    paths["run"] = out_dir / RUN_FILE
    print(
        f"leaderboard {spec.name}: {len(run.ran)} rows x {len(spec.split_seeds)} seeds in {run.wall_s:.0f} s"
    )
    print(run.report["paper_ordering"]["statement"])
    for kind, path in paths.items():
        print(f"  {kind:<18} {path}")
    return {k: str(v) for k, v in paths.items()}
