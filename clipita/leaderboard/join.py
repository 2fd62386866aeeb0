"""Join leaderboard runs made on different split seeds into one report:
``clipita leaderboard <config> --join '["runs/seed3", "runs/seed4"]' --output_dir results/<name>``.

On a cluster every split seed of a leaderboard can run as its own job (``--split_seeds [s]``, one ``--output_dir``
each), and a row too costly for one sitting can be added seed by seed (``--keep_rows`` on a subset of seeds). Joining
their kept runs (``leaderboard_run.json``) gives the report the runs would have given together: every row on the union
of the seeds, significance and seed statistics over all of them, the public block's rows summarised over all.

The join refuses, in one line, what would not be one leaderboard: a partial run, two runs of another leaderboard
(spec name) or on a common split seed, and a row that some run has and another lacks (a row's mean must be over every
seed of the report). Nothing is run; the joined run is written beside its report (``report_only`` re-renders it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .public import public_summary
from .run import RUN_FILE, LeaderboardRun, load_run
from .spec import LeaderboardSpec


def _rows_of(run: LeaderboardRun) -> set[str]:
    return set(run.results) | set(run.not_run)


def join_runs(
    runs: list[LeaderboardRun], config: LeaderboardSpec, sources: list[str] | None = None
) -> LeaderboardRun:
    """One run over the union of ``runs``' split seeds.

    Args:
        runs: finished runs of the same leaderboard on disjoint split seeds, with the same rows.
        config: the leaderboard config (rows listed in its order, then any row it no longer names).
        sources: names of the runs for messages (their folders); default ``run 1``, ``run 2``...

    Returns:
        The joined run: results, contexts and public per-seed entries of every run; ``not_run`` and ``row_text``
        of the first run (checked equal across runs); commands joined, wall times added.

    Raises:
        ValueError: fewer than two runs, a partial run, another leaderboard, a split seed in two runs, rows that
            differ between runs.
    """
    names = sources or [f"run {i + 1}" for i in range(len(runs))]
    if len(runs) < 2:
        raise ValueError("join needs at least two runs (their output folders)")
    first = runs[0]
    seen: dict[int, str] = {}
    for run, name in zip(runs, names, strict=True):
        if run.partial:
            raise ValueError(f"join: {name} is partial ({run.partial}); finish it first")
        if run.spec.name != first.spec.name:
            raise ValueError(
                f"join: {name} is leaderboard {run.spec.name!r}, {names[0]} is {first.spec.name!r}"
            )
        for seed in run.spec.split_seeds:
            if seed in seen:
                raise ValueError(
                    f"join: split seed {seed} is in both {seen[seed]} and {name}; join disjoint seeds"
                )
            seen[seed] = name
        if _rows_of(run) != _rows_of(first):
            extra = sorted(_rows_of(run) ^ _rows_of(first))
            raise ValueError(
                f"join: {name} and {names[0]} do not have the same rows ({extra}); every row must be on every seed"
            )
        for row in run.results:
            missing = [s for s in run.spec.split_seeds if s not in run.results[row]]
            if missing:
                raise ValueError(f"join: row {row!r} of {name} has no result on split seed {missing[0]}")
    if set(first.not_run) != {r for run in runs for r in run.not_run}:
        raise ValueError("join: the runs did not leave out the same rows")
    seeds = sorted(seen)
    order = [r.name for r in config.rows]
    row_specs = {r.name: r for run in reversed(runs) for r in run.spec.rows}
    row_names = [n for n in order if n in row_specs] + [n for n in row_specs if n not in order]
    results = {
        row: {s: run.results[row][s] for s in seeds for run in runs if s in run.spec.split_seeds}
        for row in row_names
        if row in first.results
    }
    public = dict(first.public or {})
    if public:
        rows = {}
        for row in row_names:
            per_seed = {k: v for run in runs for k, v in ((run.public or {}).get("rows", {}).get(row, {})
                                                          .get("per_seed", {}) or {}).items()}  # fmt: skip
            if per_seed:
                per_seed = dict(sorted(per_seed.items(), key=lambda kv: int(kv[0])))
                rows[row] = {"per_seed": per_seed, "summary": public_summary(per_seed)}
        public.update(split_seeds=seeds, rows=rows)
    spec = dataclasses.replace(
        first.spec,
        rows=[row_specs[n] for n in row_names],
        split_seeds=seeds,
        public_rows=[n for n in row_names if any(n in run.spec.public_rows for run in runs)],
    )
    return dataclasses.replace(
        first,
        spec=spec,
        contexts={s: next(run.contexts[s] for run in runs if s in run.spec.split_seeds) for s in seeds},
        results=results,
        not_run=dict(first.not_run),
        row_text={n: first.row_text[n] for n in row_names if n in first.row_text},
        public=public,
        command=" ; joined with: ".join(run.command for run in runs),
        wall_s=sum(run.wall_s for run in runs),
        started=min((run.started for run in runs if run.started), default=""),
        report={},
    )


def join_folders(folders: list[str], config: LeaderboardSpec) -> LeaderboardRun:
    """:func:`join_runs` of the runs kept in ``<folder>/leaderboard_run.json`` (a missing one named in one line)."""
    runs = []
    for folder in folders:
        path = Path(folder) / RUN_FILE
        if not path.is_file():
            raise FileNotFoundError(f"join: {path} does not exist (pass the output folders of finished runs)")
        runs.append(load_run(path))
    return join_runs(runs, config, [str(f) for f in folders])
