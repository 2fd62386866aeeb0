"""``clipita sweep``: an Optuna hyperparameter search over ``clipita fit`` configs.

    clipita sweep sweeps/clip_ita.yaml
    clipita sweep sweeps/clip_ita.yaml --n_trials 40 --storage postgresql+psycopg2://user@db:5432/optuna
    clipita sweep sweeps/clip_ita.yaml --report_only true       # best YAML + plots + summary of the study so far

Every trial trains through :func:`clipita.experiment.fit_and_test` (the module, DataModule and Trainer
of ``clipita fit``). See ``sweeps/README.md`` for the YAML format and the cluster recipe.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import optuna

from clipita_core.registry import Registry

from .report import write_report
from .space import SearchSpaceError
from .spec import PRUNERS, SAMPLERS, SweepSpec, load_sweep_spec
from .study import default_storage, has_waiting, make_storage, open_study, trials_counted
from .trial import JOIN_ENV, join_trial, run_trial

BASE_SNAPSHOT = "base_config.yaml"


def _check(option: str, registry: Registry, name: str) -> None:
    """``name`` is registered in ``registry``, else the registry's one message, naming the option."""
    try:
        registry.check(name)
    except ValueError as err:
        raise SearchSpaceError(f"{option}: {err}") from None


def apply_cli(
    spec: SweepSpec,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: str | None = None,
    pruner: str | None = None,
    seed: int | None = None,
    output_dir: str | None = None,
    best_config: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> SweepSpec:
    """Apply command-line options on top of the sweep YAML (a changed sampler/pruner name drops its YAML kwargs)."""
    if n_trials is not None:
        spec.n_trials = n_trials
    if timeout is not None:
        spec.timeout = timeout
    if storage is not None:
        spec.storage = storage
    if study_name is not None:
        spec.study_name = study_name
    if output_dir is not None:
        spec.output_dir = output_dir
    if best_config is not None:
        spec.best_config = best_config
    if sampler is not None and sampler != spec.sampler["name"]:
        _check("--sampler", SAMPLERS, sampler)
        spec.sampler = {"name": sampler, **({"seed": spec.sampler["seed"]} if "seed" in spec.sampler else {})}
    if seed is not None:
        spec.sampler["seed"] = seed
    if pruner is not None and pruner != spec.pruner["name"]:
        _check("--pruner", PRUNERS, pruner)
        spec.pruner = {"name": pruner}
    searched = {p.key for p in spec.search_space.params}
    for key, value in (overrides or {}).items():
        if key in searched:
            raise SearchSpaceError(f"--overrides fixes {key!r}, which the sweep searches; drop one of them")
        spec.overrides[key] = value
    return spec


def sweep(
    sweep_config: str,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    sampler: SAMPLERS.literal | None = None,  # the names registered when the parser is built
    pruner: PRUNERS.literal | None = None,
    seed: int | None = None,
    output_dir: str | None = None,
    best_config: str | None = None,
    overrides: dict[str, Any] | None = None,
    report_only: bool = False,
) -> dict[str, Any] | None:
    """Run (or join, or resume) an Optuna study whose trials are ``clipita fit`` runs, then report the best one.

    The sweep YAML names the base ``clipita fit`` config, fixed overrides, the search space, the objective, the
    sampler, the pruner and the study; the options below override it. Several ``clipita sweep`` processes given the
    same storage and study name cooperate on one study (each asks for the next trial until the study holds
    ``n_trials``), and a stopped sweep resumes where it stopped. Each trial trains through ``fit_and_test`` with
    Optuna's ``PyTorchLightningPruningCallback`` on the objective metric; a trial that raises is recorded as FAIL
    with its error in the user attributes and the study goes on. Trial outputs go to
    ``<output_dir>/<study_name>/trial_NNNN/``; at the end the best trial is written as a ``clipita fit`` YAML next
    to ``optimization_history.png``, ``param_importances.png``, ``intermediate_values.png`` and ``summary.json``.

    Args:
        sweep_config: the sweep YAML (see ``sweeps/README.md``), e.g. ``sweeps/clip_ita.yaml``.
        n_trials: trials the study should hold in total (finished, failed and running ones count; 0: only
            create/load the study and report).
        timeout: stop asking for new trials after this many seconds (this process).
        storage: ``sqlite:///path.db``, an RDB URL such as ``postgresql+psycopg2://user:pw@host:5432/db``, or
            ``journal:<path>`` (a JournalStorage log file). Default: ``sqlite:///<output_dir>/<study_name>/study.db``.
        study_name: the study's name in the storage (default: the sweep YAML's file name).
        sampler: the study's sampler, a name in ``SAMPLERS`` (``clipita/sweep/spec.py``; the choices are listed
            below); default: the YAML's ``sampler``, else ``tpe``. ``cmaes`` samples float/int parameters only
            (others fall back to random).
        pruner: the study's pruner, a name in ``PRUNERS`` (idem); default: the YAML's ``pruner``, else
            ``median``.
        seed: the sampler's seed; trial n is sampled with ``seed + n`` (reproducible with one worker, no duplicates
            across workers).
        output_dir: parent folder of the per-study folder (default ``runs/sweeps``).
        best_config: where to write the best trial's ``clipita fit`` YAML (default ``<study folder>/best.yaml``).
        overrides: extra fixed ``clipita fit`` keys for every trial, e.g. ``'{trainer.max_epochs: 5}'``.
        report_only: run no trial: write the best YAML, plots and summary of the study as it stands.

    Returns:
        The summary (also written to ``summary.json``); None in a DDP helper process.
    """
    spec = apply_cli(
        load_sweep_spec(sweep_config),
        n_trials,
        timeout,
        storage,
        study_name,
        sampler,
        pruner,
        seed,
        output_dir,
        best_config,
        overrides,
    )
    study_dir = spec.study_dir
    storage_url = spec.storage or default_storage(study_dir)
    join = os.environ.get(JOIN_ENV)
    if join:  # a DDP rank re-launched by Lightning inside the parent's trial
        snapshot = study_dir / BASE_SNAPSHOT
        spec.base_config = str(snapshot) if snapshot.is_file() else spec.base_config
        join_trial(spec, make_storage(storage_url, heartbeat_interval=0), json.loads(join), study_dir)
        return None
    study_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, storage_url)
    study.set_user_attr("sweep_config", str(sweep_config))
    pin_base_config(spec, study)
    for params in spec.enqueue_params():
        study.enqueue_trial(params, skip_if_exists=True)
    if not report_only:
        try:
            run_until_full(study, spec)
        except KeyboardInterrupt:
            print(
                f"\nclipita sweep: interrupted; the running trial is FAIL and queued again. Run the same command to "
                f"resume study {spec.study_name!r} ({storage_url})."
            )
            raise SystemExit(130) from None
    if not study.get_trials(deepcopy=False):
        print(f"study {spec.study_name!r} has no trials yet ({storage_url})")
        return {"study_name": spec.study_name, "n_trials": 0}
    return write_report(spec, study, storage_url, Path(spec.best_config) if spec.best_config else None)


def pin_base_config(spec: SweepSpec, study: optuna.Study) -> None:
    """Train every trial of a study on the base config as it was when the study began.

    The first worker stores the base config's text in the study (user attribute ``base_config_yaml``); every worker
    (on any machine) writes that text to ``<study folder>/base_config.yaml`` and trains from it. An edit to the base
    config in the middle of a sweep then cannot split the study into trials of two different recipes.
    """
    if spec.base_config is None:
        return
    current = Path(spec.base_config).read_text()
    pinned = study.user_attrs.get("base_config_yaml")
    if pinned is None:
        study.set_user_attr("base_config", spec.base_config)
        study.set_user_attr("base_config_yaml", current)
        pinned = current
    elif pinned != current:
        print(
            f"clipita sweep: {spec.base_config} changed since study {spec.study_name!r} began; its trials keep "
            f"training on the original (see {spec.study_dir / BASE_SNAPSHOT})"
        )
    snapshot = spec.study_dir / BASE_SNAPSHOT
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if not snapshot.is_file() or snapshot.read_text() != pinned:
        tmp = snapshot.with_name(f".{snapshot.name}.{os.getpid()}.tmp")
        tmp.write_text(pinned)
        tmp.replace(snapshot)
    spec.base_config_origin = study.user_attrs.get("base_config", spec.base_config)
    spec.base_config = str(snapshot)


def run_until_full(study: optuna.Study, spec: SweepSpec) -> None:
    """Ask for trials one at a time until the study holds ``n_trials`` (queued trials always run).

    Stops early after ``max_failures_in_a_row`` failed trials of this worker in a row: a broken base config or a
    missing data folder fails every trial and should not burn the study's budget.
    """
    import time

    from optuna.trial import TrialState

    start = time.monotonic()
    study_dir = spec.study_dir
    failures = 0
    finished: list[optuna.trial.FrozenTrial] = []  # this worker's trials, as Optuna closes them
    while True:
        if spec.timeout is not None and time.monotonic() - start > spec.timeout:
            print(f"clipita sweep: timeout of {spec.timeout:.0f} s reached")
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's RUNNING trial must not count
        if trials_counted(study) >= spec.n_trials and not has_waiting(study):
            return
        before = len(finished)
        study.optimize(
            lambda trial: run_trial(trial, spec, study_dir),
            n_trials=1,
            catch=(Exception,),
            gc_after_trial=True,
            callbacks=[lambda _study, trial: finished.append(trial)],
        )
        if len(finished) > before:
            failures = failures + 1 if finished[-1].state == TrialState.FAIL else 0
        if 0 < spec.max_failures_in_a_row <= failures:
            error = finished[-1].user_attrs.get("error", "(no message)")
            print(
                f"clipita sweep: {failures} trials in a row failed; stopping this worker. Last: {error[:1000]}"
            )
            return
