"""``clipita leaderboard``: load the spec, run it, write the report."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .join import join_folders
from .merge import check_kept, merge_into_kept
from .public import public_block
from .report import significance_floor, write_report
from .run import RUN_FILE, LeaderboardRun, load_run, save_run
from .runner import _Runner, choice_checkpoint

# (key, column label, ceiling key shown beside it)
from .spec import TESTED_METRICS, LeaderboardSpec, RowSpec, load_spec
from .statistics import settings_of


# --------------------------------------------------------------------------------------------------- command
def _check_kept_sources(spec: LeaderboardSpec, runs: Path) -> None:
    """A row starting from a row not run here (``init_from``, ``--rows``) needs that row's kept choice runs."""
    ran = {r.name for r in spec.rows}
    for row in spec.rows:
        if row.init_from and row.init_from not in ran:
            missing = [
                str(p)
                for p in (choice_checkpoint(runs, RowSpec(row.init_from), s) for s in spec.split_seeds)
                if not p.is_file()
            ]
            if missing:
                raise FileNotFoundError(
                    f"row {row.name!r} starts from row {row.init_from!r} (init_from), which is not run here and "
                    f"has no kept choice run: {missing[0]} does not exist (add {row.init_from!r} to --rows)"
                )


def _public_only(
    spec: LeaderboardSpec, out_dir: Path, runs: Path, split_seeds: list[int] | None
) -> dict[str, str]:
    """The public-protocol block of a finished run, from its kept checkpoints, into its report."""
    if not spec.public_rows:
        raise ValueError(f"{spec.source}: public_only needs a 'public_block: {{rows: [...]}}' in the config")
    if not (out_dir / RUN_FILE).is_file():
        raise FileNotFoundError(
            f"public_only re-uses a finished run: {out_dir / RUN_FILE} does not exist (pass the run's --output_dir)"
        )
    run = load_run(out_dir / RUN_FILE)
    if run.spec.design_seeds is None:  # a run saved before seed roles: the config's declaration
        run.spec.design_seeds = spec.design_seeds
    seeds = [int(s) for s in split_seeds] if split_seeds else list(run.spec.split_seeds)
    run.public = public_block(spec, runs, seeds)
    save_run(run, out_dir / RUN_FILE)
    paths = write_report(run, out_dir)
    print(
        f"leaderboard {spec.name}: public-protocol block from {runs} on split seeds {seeds} -> {paths['public']}"
    )
    return {k: str(v) for k, v in paths.items()}


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
    public_only: bool = False,
    keep_rows: bool = False,
    join: list[str] | None = None,
) -> dict[str, str]:
    """Run a leaderboard: every row on every split seed, then write the tables, statistics and plots.

    After each split seed but the last, a partial report (the seeds done so far) is written to ``output_dir``.

    Args:
        leaderboard_config: a leaderboard YAML, or its name under ``experiments/leaderboards/`` (e.g. ``fashion``).
        output_dir: where the report goes (default ``results/<name>``).
        split_seeds: replace the config's split seeds, e.g. ``[0]`` for a quick look.
        rows: run only these rows (by name); the reference row is always kept (with ``keep_rows``: from the kept
            run). A row that starts from a row not
            run here (``init_from``) starts from that row's choice runs kept under ``runs_dir`` by an earlier run.
        overrides: extra ``--key value`` tokens for every row after the config's own, e.g.
            ``[--data.work_dir, /tmp/work]`` or ``[--trainer.max_epochs, "2"]``.
        runs_dir: where trained rows write logs and checkpoints (default ``runs/leaderboards/<name>``).
        num_threads: torch CPU threads (default: torch's choice); 1 is fastest on a CPU shared with other jobs.
        report_only: do not run anything: re-render the report from ``<output_dir>/leaderboard_run.json`` (kept by
            the last full run), e.g. after changing the report code.
        public_only: train nothing: compute the public-protocol block (the config's ``public_block`` rows) from the
            checkpoints a previous run kept under ``runs_dir``, on the split seeds of ``<output_dir>/
            leaderboard_run.json`` (or ``split_seeds``), and re-render the report with it. A normal run computes the
            block at its end.
        keep_rows: add the rows run here (``rows``) to the finished run kept in ``<output_dir>/leaderboard_run.json``
            (same split seeds and test galleries, checked) instead of replacing it: rows run here replace their
            earlier results, the others are kept (the reference row too, unless named in ``rows``), the report covers
            all (:mod:`clipita.leaderboard.merge`).
        join: run nothing: join the finished runs kept in these output folders, made on disjoint split seeds with
            the same rows (one job per seed, or a costly row added seed by seed), into one report in
            ``output_dir`` (:mod:`clipita.leaderboard.join`).

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
        keep = set(rows) | ({spec.reference} if spec.reference and not keep_rows else set())
        spec.rows = [r for r in spec.rows if r.name in keep]
        spec.public_rows = [n for n in spec.public_rows if n in keep]
    out_dir = Path(output_dir) if output_dir else Path("results") / spec.name
    if join:
        run = join_folders(list(join), load_spec(leaderboard_config))
        paths = write_report(run, out_dir)
        save_run(run, out_dir / RUN_FILE)
        print(
            f"leaderboard {run.spec.name}: {len(join)} runs joined on split seeds {run.spec.split_seeds} -> {out_dir}"
        )
        return {k: str(v) for k, v in paths.items()}
    if report_only:
        run = load_run(out_dir / RUN_FILE)
        if run.spec.design_seeds is None:  # a run saved before seed roles: the config's declaration
            run.spec.design_seeds = spec.design_seeds
        paths = write_report(run, out_dir)
        print(f"leaderboard {run.spec.name}: report re-rendered from {out_dir / RUN_FILE}")
        return {k: str(v) for k, v in paths.items()}
    runs = Path(runs_dir) if runs_dir else Path("runs") / "leaderboards" / spec.name
    if public_only:
        return _public_only(spec, out_dir, runs, split_seeds)
    _check_kept_sources(spec, runs)
    kept = check_kept(out_dir / RUN_FILE, spec.split_seeds) if keep_rows else None
    command = _command(
        leaderboard_config, output_dir=output_dir, split_seeds=split_seeds, rows=rows, overrides=overrides,
        runs_dir=runs_dir, num_threads=num_threads, keep_rows=keep_rows or None,
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
        """A report of the seeds done so far, so a long run has readable results before it ends (with
        ``keep_rows``: merged with the kept run on those seeds; the kept run file stays whole until the end)."""
        partial = dataclasses.replace(stamp(run), spec=dataclasses.replace(spec, split_seeds=list(done)))
        if kept is not None:
            partial = merge_into_kept(partial, kept, load_spec(leaderboard_config))
        partial.partial = f"Partial: split seeds {done} of {spec.split_seeds} done, the run goes on."
        write_report(partial, out_dir, started=started)
        if kept is None:  # so --report_only / --public_only work on a run stopped early
            save_run(partial, out_dir / RUN_FILE)
        print(f"[leaderboard {spec.name}] partial report after split seeds {done}: {out_dir}")

    run = stamp(_Runner(spec, overrides or [], runs).run(spec.rows, on_seed=write_partial))
    if spec.public_rows:
        run.public = public_block(spec, runs, spec.split_seeds)
    family = len(settings_of(run)) * len(TESTED_METRICS)
    floor = significance_floor(spec, family)
    if floor is not None and floor >= spec.alpha:
        print(
            f"warning: {spec.n_resamples} permutation resamples cannot reach significance in {family} tests"
        )
    if kept is not None:
        run.wall_s = time.perf_counter() - started
        run = merge_into_kept(run, kept, load_spec(leaderboard_config))
    paths = write_report(run, out_dir, started=None if kept is not None else started)
    save_run(run, out_dir / RUN_FILE)
    paths["run"] = out_dir / RUN_FILE
    print(
        f"leaderboard {spec.name}: {len(run.ran)} rows x {len(spec.split_seeds)} seeds in {run.wall_s:.0f} s"
    )
    print(run.report["paper_ordering"]["statement"])
    for kind, path in paths.items():
        print(f"  {kind:<18} {path}")
    return {k: str(v) for k, v in paths.items()}
