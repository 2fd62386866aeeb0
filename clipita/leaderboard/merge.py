"""Add rows to a finished leaderboard: ``clipita leaderboard <config> --rows [...] --keep_rows true``.

A leaderboard over many rows and split seeds takes hours on a CPU; adding one row (a new recipe, a fine-tuned row
whose stage 1 was run before) should not retrain the others. With ``keep_rows`` the rows run now are merged into
the run kept in ``<output_dir>/leaderboard_run.json``: rows run now replace their earlier results, the others are
kept, and the report (tables, significance, paper ordering, public block) is written from the merged run, rows in the
config's order. A run on some of the kept run's split seeds (``--split_seeds``, where a row is too costly for all)
gives a report on those seeds, every row restricted to them; the partial report after each seed is merged the same
way. The merge refuses, in one line, runs that are not the same evaluation: a split seed the kept run does not have,
or one whose query table, settings or test gallery differ (:meth:`SeedContext.same_harness`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .public import public_summary
from .run import LeaderboardRun, load_run
from .spec import LeaderboardSpec


def check_kept(kept_file: Path, split_seeds: list[int]) -> LeaderboardRun:
    """The kept run, refused in one line when missing, partial, or without one of ``split_seeds`` (checked before
    anything trains)."""
    if not kept_file.is_file():
        raise FileNotFoundError(
            f"keep_rows adds rows to a finished run, but {kept_file} does not exist (run the leaderboard once "
            "without keep_rows, or pass that run's --output_dir)"
        )
    kept = load_run(kept_file)
    if kept.partial:
        raise ValueError(f"keep_rows: the run in {kept_file} is partial ({kept.partial}); finish it first")
    if not set(split_seeds) <= set(kept.spec.split_seeds):
        raise ValueError(
            f"keep_rows: the kept run in {kept_file} is on split seeds {kept.spec.split_seeds}, this run on "
            f"{list(split_seeds)}; a leaderboard compares rows on the same seeds (run on the kept ones or a subset)"
        )
    return kept


def _public_on(public: dict, seeds: list[int]) -> dict:
    """A public-protocol block restricted to ``seeds`` (each row's summary recomputed over them)."""
    if not public:
        return {}
    rows = {}
    for name, entry in (public.get("rows") or {}).items():
        per_seed = {s: v for s, v in (entry.get("per_seed") or {}).items() if int(s) in seeds}
        entry = {**entry, "per_seed": per_seed}
        if per_seed:
            entry["summary"] = public_summary(per_seed)
        rows[name] = entry
    return {**public, "split_seeds": list(seeds), "rows": rows}


def merge_into_kept(
    new: LeaderboardRun, kept: LeaderboardRun | Path, config: LeaderboardSpec
) -> LeaderboardRun:
    """``new`` with the rows of the ``kept`` run that ``new`` did not run, on ``new``'s split seeds.

    Args:
        new: the run just made (its ``spec.rows``: the rows run now; its ``spec.split_seeds``: the report's seeds).
        kept: the earlier run, or its ``leaderboard_run.json`` (checked by :func:`check_kept`).
        config: the whole leaderboard config (every row, in order): the merged report lists rows in its order, then
            any kept row the config no longer names.

    Returns:
        A run whose ``results``, ``not_run``, ``row_text`` and public block hold both; ``command`` and ``wall_s`` are
        both runs' (commands joined, wall times added), ``started`` the kept run's.
    """
    seeds = list(new.spec.split_seeds)
    kept_file = kept if isinstance(kept, Path) else Path("the kept run")
    if isinstance(kept, Path):
        kept = check_kept(kept, seeds)
    if config.reference and config.reference not in set(kept.results) | set(new.results):
        raise ValueError(
            f"keep_rows: the reference row {config.reference!r} is in neither run; add it to --rows"
        )
    for seed, context in new.contexts.items():
        other = kept.contexts.get(seed)
        why = other.same_harness(context) if other is not None else "the kept run has no such seed"
        if why:
            raise ValueError(
                f"keep_rows: split seed {seed} is not the same evaluation as in {kept_file}: {why}"
            )
    ran_now = set(new.results) | set(new.not_run)
    order = [r.name for r in config.rows]
    kept_rows = {r.name: r for r in kept.spec.rows}
    new_rows = {r.name: r for r in new.spec.rows}
    names = [n for n in order if n in new_rows or n in kept_rows]
    names += [n for n in kept_rows if n not in names]
    rows = [new_rows.get(n) or kept_rows[n] for n in names]

    def union(kept_part: dict, new_part: dict) -> dict:
        merged = {k: v for k, v in kept_part.items() if k not in ran_now}
        for name, value in merged.items():  # per-seed results: the report's seeds only
            if isinstance(value, dict) and value and all(isinstance(s, int) for s in value):
                merged[name] = {s: r for s, r in value.items() if s in seeds}
        merged.update(new_part)
        return {n: merged[n] for n in names if n in merged}

    public = _public_on(dict(kept.public or {}), seeds)
    if new.public:
        public = {**public, **{k: v for k, v in new.public.items() if k != "rows"}}
        public["rows"] = {**public.get("rows", {}), **new.public.get("rows", {})}
    if public.get("rows"):
        public["rows"] = {n: public["rows"][n] for n in names if n in public["rows"]}
    public_rows = [n for n in names if n in set(kept.spec.public_rows) | set(new.spec.public_rows)]
    spec = dataclasses.replace(new.spec, rows=rows, public_rows=public_rows)
    return dataclasses.replace(
        new,
        spec=spec,
        contexts={s: new.contexts.get(s) or kept.contexts[s] for s in seeds},
        results=union(kept.results, new.results),
        not_run=union(kept.not_run, new.not_run),
        row_text=union(kept.row_text, new.row_text),
        public=public,
        command=f"{kept.command} ; then, adding rows: {new.command}",
        wall_s=kept.wall_s + new.wall_s,
        started=kept.started or new.started,
        leakage=new.leakage or kept.leakage,
    )
