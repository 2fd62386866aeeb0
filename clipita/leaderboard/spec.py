"""The leaderboard YAML (rows, split seeds, significance, ordering claim) and the protocol's metric columns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    init_from: str | None = None  # a fit row starting from an earlier row's choice run on the same split seed

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
    design_seeds: list[int] | None = None  # the split seeds decisions were measured on (None: not declared)
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
    public_rows: list[str] = field(default_factory=list)  # rows of the public-protocol block (.public)

    def seed_roles(self) -> dict[str, list[int]]:
        """``report`` (split seeds no decision used), ``design`` (declared design seeds) and ``tuned`` (reported
        seeds that are design seeds: their numbers are no held-out estimate)."""
        design = list(self.design_seeds or [])
        return {
            "report": [s for s in self.split_seeds if s not in design],
            "design": design,
            "tuned": [s for s in self.split_seeds if s in design],
        }

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


def _check_init_from(file: Path, row: RowSpec, earlier: list[RowSpec]) -> None:
    """``init_from`` names a fit row above this one (its choice run on the same split seed must exist first)."""
    if not row.fit or row.checkpoint:
        raise ValueError(
            f"{file}: row {row.name!r}: 'init_from' needs a 'fit' row that trains (no 'checkpoint')"
        )
    source = next((r for r in earlier if r.name == row.init_from), None)
    if source is None:
        raise ValueError(
            f"{file}: row {row.name!r} starts from row {row.init_from!r} (init_from), which is not a row above it; "
            "list the row it starts from earlier in 'rows'"
        )
    if not source.fit or source.checkpoint:
        raise ValueError(
            f"{file}: row {row.name!r} starts from row {source.name!r} (init_from), which trains nothing here "
            "(a baseline or a checkpoint row); init_from needs a 'fit' row"
        )


def _public_rows(file: Path, block: Any, rows: list[RowSpec]) -> list[str]:
    """``public_block: {rows: [...]}``: trained rows (their kept checkpoints are what the block scores)."""
    if block is None:
        return []
    if not isinstance(block, dict) or set(block) != {"rows"} or not isinstance(block["rows"], list):
        raise ValueError(f"{file}: public_block must be {{rows: [<row name>, ...]}}, got {block!r}")
    by_name = {r.name: r for r in rows}
    for name in block["rows"]:
        row = by_name.get(str(name))
        if row is None:
            raise ValueError(f"{file}: public_block row {name!r} is not a row; rows: {list(by_name)}")
        if not row.fit or row.checkpoint:
            raise ValueError(
                f"{file}: public_block row {name!r} must be a 'fit' row (the block scores its kept checkpoints)"
            )
    return [str(n) for n in block["rows"]]


def load_spec(path: str) -> LeaderboardSpec:
    """Parse and check a leaderboard YAML; errors name the offending key."""
    from clipita.baselines import BASELINES

    file = find_leaderboard_config(path)
    raw = yaml.safe_load(file.read_text()) or {}
    if not isinstance(raw, dict) or not raw.get("rows"):
        raise ValueError(f"{file}: a leaderboard config needs a non-empty 'rows' list")
    known = {
        "name", "description", "rows", "split_seeds", "base_config", "shared_overrides", "reference",
        "vary_training_seed", "significance", "paper_ordering", "design_seeds",
        "public_block",
    }  # fmt: skip
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{file}: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    rows: list[RowSpec] = []
    for i, item in enumerate(raw["rows"]):
        if not isinstance(item, dict) or "name" not in item:
            raise ValueError(f"{file}: rows[{i}] needs a 'name'")
        extra = set(item) - {"name", "baseline", "options", "fit", "overrides", "checkpoint", "init_from"}
        if extra:
            raise ValueError(f"{file}: rows[{i}] ({item['name']}) has unknown keys {sorted(extra)}")
        row = RowSpec(
            name=str(item["name"]),
            baseline=item.get("baseline"),
            options=dict(item.get("options") or {}),
            fit=item.get("fit"),
            overrides=_string_list(item.get("overrides"), f"rows[{i}].overrides"),
            checkpoint=item.get("checkpoint"),
            init_from=None if item.get("init_from") is None else str(item["init_from"]),
        )
        if bool(row.baseline) == bool(row.fit):
            raise ValueError(f"{file}: row {row.name!r} needs exactly one of 'baseline' or 'fit'")
        if row.baseline:
            try:
                BASELINES.check(row.baseline)
            except ValueError as error:  # the registry's message, prefixed with the file and row
                raise ValueError(f"{file}: row {row.name!r}: {error}") from None
        if row.checkpoint and not row.fit:
            raise ValueError(
                f"{file}: row {row.name!r}: 'checkpoint' needs the 'fit' config it was trained with"
            )
        if row.init_from is not None:
            _check_init_from(file, row, rows)
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
    design = raw.get("design_seeds")
    if design is not None:
        if not isinstance(design, list) or len({int(s) for s in design}) != len(design):
            raise ValueError(f"{file}: design_seeds must be a list of distinct integers, got {design!r}")
        design = [int(s) for s in design]
    sig = dict(raw.get("significance") or {})
    ordering = dict(raw.get("paper_ordering") or {})
    spec = LeaderboardSpec(
        name=str(raw.get("name") or file.stem),
        rows=rows,
        split_seeds=seeds,
        design_seeds=design,
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
        public_rows=_public_rows(file, raw.get("public_block"), rows),
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
