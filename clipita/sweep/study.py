"""Storages and studies: SQLite by default, any SQLAlchemy URL (PostgreSQL for clusters), or a journal file."""

from __future__ import annotations

import random
import time
import warnings
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .spec import SweepSpec, make_pruner, make_sampler

JOURNAL_PREFIX = "journal:"
COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def default_storage(study_dir: Path) -> str:
    """``sqlite:///<study_dir>/study.db`` (absolute, so every worker sees the same file)."""
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def make_storage(url: str, heartbeat_interval: int = 60, retry_stale: int = 1) -> optuna.storages.BaseStorage:
    """Open a storage from a URL.

    Args:
        url: ``sqlite:///path.db``, ``postgresql+psycopg2://user@host:port/db`` (or any SQLAlchemy URL Optuna's
            RDBStorage accepts), or ``journal:<path>`` for a JournalStorage on a log file.
        heartbeat_interval: RDB storages only: seconds between a running trial's heartbeats; a trial silent for
            ``3 * heartbeat_interval`` (a killed or pre-empted worker) is marked FAIL by the next worker. 0 turns
            this off.
        retry_stale: how many times such a stale trial is re-queued with the same parameters.
    """
    if url.startswith(JOURNAL_PREFIX):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len(JOURNAL_PREFIX) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict = {}
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna.*")
    warnings.filterwarnings("ignore", message=".*RetryHeartbeatStaleTrialCallback is experimental.*")
    if heartbeat_interval > 0:
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=3 * heartbeat_interval)
        if retry_stale > 0:
            kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=retry_stale
            )
    engine_kwargs: dict = {}
    if url.startswith("sqlite"):
        Path(url.split(":///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}  # several local workers share one file
    else:
        engine_kwargs["pool_pre_ping"] = True  # long trials outlive idle connections on a cluster database
    last: Exception | None = None
    for attempt in range(5):  # workers starting together race on CREATE TABLE; the loser retries
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as err:  # noqa: BLE001 - sqlalchemy's IntegrityError/ProgrammingError/OperationalError
            last = err
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise RuntimeError(f"could not open the Optuna storage {url!r}: {last}") from last


def open_study(spec: SweepSpec, storage_url: str) -> optuna.Study:
    """Create the study, or load it when it exists (several workers cooperate; a stopped sweep resumes)."""
    storage = make_storage(storage_url, spec.heartbeat_interval, spec.retry_stale)
    last: Exception | None = None
    for attempt in range(5):
        try:
            return optuna.create_study(
                storage=storage,
                study_name=spec.study_name,
                sampler=make_sampler(spec.sampler, spec.search_space),
                pruner=make_pruner(spec.pruner),
                direction=spec.direction,
                load_if_exists=True,
            )
        except Exception as err:  # noqa: BLE001 - a concurrent create of the same study
            last = err
            time.sleep(0.5 + random.random() * (attempt + 1))
    raise RuntimeError(f"could not create or load study {spec.study_name!r}: {last}") from last


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Number of trials per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING)."""
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return {name: counts.get(name, 0) for name in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}


def trials_counted(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: finished ones and those other workers are running."""
    return len(study.get_trials(deepcopy=False, states=COUNTED_STATES))


def has_waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
