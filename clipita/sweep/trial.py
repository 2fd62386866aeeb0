"""One trial: sample the search space, train through ``fit_and_test`` (the same path as ``clipita fit``), record.

A trial's outputs live in ``<study_dir>/trial_NNNN/`` (logger, checkpoints, ``val_history.json``). Its user
attributes hold the full validation metric set of the epoch that scored the objective, the overrides, the epochs
run, the worker (host and pid), and on failure the error. Under DDP (``--trainer.strategy ddp``) Lightning
re-launches the command for ranks 1..N-1; those processes find ``CLIPITA_SWEEP_JOIN`` in their environment and join
the parent's trial instead of starting their own (see :func:`join_trial`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import optuna

from clipita.experiment import read_fit_config, run_folder_overrides

from .space import to_overrides
from .spec import SweepSpec

JOIN_ENV = "CLIPITA_SWEEP_JOIN"
HISTORY_FILE = "val_history.json"
_MAX_ATTR_CHARS = 4000


class ValHistory(L.Callback):
    """Record every validation epoch's ``val/*`` metrics (rank 0), in memory and in ``val_history.json``.

    Args:
        path: the JSON file written after every validation epoch (survives pruning and crashes).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.epochs: list[dict[str, float]] = []
        self.started = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"epoch": int(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        self.epochs.append(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.epochs, indent=1))


def pick_epoch(history: list[dict[str, float]], metric: str, maximize: bool, reduce: str) -> dict[str, float]:
    """The epoch whose ``metric`` is the objective: the best one (``reduce: best``) or the last one."""
    rows = [r for r in history if metric in r]
    if not rows:
        available = sorted({k for r in history for k in r if k != "epoch"})
        raise RuntimeError(
            f"objective metric {metric!r} was never logged in validation; logged: {available or 'nothing'}"
        )
    if reduce == "last":
        return rows[-1]
    return (max if maximize else min)(rows, key=lambda r: r[metric])


def _class_name(node: Any) -> str:
    return str(node.get("class_path", "")).rsplit(".", 1)[-1] if isinstance(node, Mapping) else ""


def redirect_checkpoints(callbacks: Any, dirpath: str) -> list | None:
    """The callback list with every fixed ``dirpath`` pointed at ``dirpath`` (None when none is fixed)."""
    if not isinstance(callbacks, list):
        return None
    out, changed = [], False
    for callback in callbacks:
        init_args = callback.get("init_args") if isinstance(callback, Mapping) else None
        if isinstance(init_args, Mapping) and init_args.get("dirpath"):
            callback = {**callback, "init_args": {**init_args, "dirpath": dirpath}}
            changed = True
        out.append(callback)
    return out if changed else None


def output_overrides(base_config: str | None, fixed: Mapping[str, Any], trial_dir: Path) -> list[str]:
    """Send the trial's logs and checkpoints to ``trial_dir``, whatever the base config names.

    ``default_root_dir`` always; a CSV/TensorBoard logger's ``save_dir``/``name``/``version`` (unless the sweep
    sets ``trainer.logger`` itself); and a checkpoint callback's fixed ``dirpath`` (the callback list is passed
    whole, since a list item cannot be overridden by key).
    """
    config = read_fit_config(base_config)
    trainer = config.get("trainer") or {}
    if any(k.startswith("trainer.logger") for k in fixed):  # the sweep sets its own logger
        config = {k: v for k, v in config.items() if k != "trainer"}
    out = run_folder_overrides(config, trial_dir.parent, trial_dir.name, "0")
    out[1] = str(trial_dir)
    callbacks = redirect_checkpoints(
        fixed.get("trainer.callbacks", trainer.get("callbacks")), str(trial_dir / "checkpoints")
    )
    if callbacks is not None:
        out += ["--trainer.callbacks", json.dumps(callbacks)]
    return out


def trial_overrides(
    spec: SweepSpec, trial: optuna.trial.BaseTrial, trial_dir: Path
) -> tuple[dict[str, Any], list[str]]:
    """Sample (or re-read) the trial's values; return them and the full override list for ``fit_and_test``."""
    fixed = spec.overrides
    values = spec.search_space.sample(trial, fixed)
    overrides = (
        to_overrides(fixed) + to_overrides(values) + output_overrides(spec.base_config, fixed, trial_dir)
    )
    return values, overrides


class _Tee(io.TextIOBase):
    """Write to the real stream and keep a copy (to quote jsonargparse's error message in the trial)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.buffer_ = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.buffer_.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def _fit(base_config: str | None, overrides: list[str], history: ValHistory, pruning: L.Callback) -> Any:
    """``fit_and_test(test=False)`` with the trial's callbacks.

    jsonargparse exits on a config it rejects: that becomes a RuntimeError quoting its message (the trial FAILs, the
    study goes on). Once training has started, an exit is Lightning's answer to Ctrl-C or SIGTERM: that becomes a
    KeyboardInterrupt, which stops the sweep.
    """
    from clipita.experiment import fit_and_test

    tee = _Tee(sys.stderr)
    try:
        with contextlib.redirect_stderr(tee), warnings.catch_warnings():
            # sys.argv is the sweep's own command line, kept on purpose: DDP re-launches it for ranks 1..N-1
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
            return fit_and_test(base_config, overrides, callbacks=[history, pruning], test=False)
    except SystemExit as exit_:
        if history.started:
            raise KeyboardInterrupt(f"training interrupted ({type(exit_).__name__} {exit_.code})") from exit_
        text = tee.buffer_.getvalue().strip()
        at = text.rfind("error:")  # jsonargparse: usage, then "error: <what>" possibly over several lines
        detail = " ".join((text[at:] if at >= 0 else text[-1000:]).split())
        raise RuntimeError(f"clipita fit rejected the trial's config (exit {exit_.code}): {detail}") from None


def _restore_env(before: Mapping[str, str]) -> None:
    """Drop variables a DDP launch added (MASTER_PORT, WORLD_SIZE, ...) so the next trial launches afresh."""
    for key in set(os.environ) - set(before):
        del os.environ[key]
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - best effort between trials
        pass


def run_trial(trial: optuna.trial.Trial, spec: SweepSpec, study_dir: Path) -> float:
    """The Optuna objective: one training run. Raises ``TrialPruned`` when pruned; errors propagate (-> FAIL)."""
    from optuna_integration import PyTorchLightningPruningCallback

    trial_dir = study_dir / f"trial_{trial.number:04d}"
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("worker_pid", os.getpid())
    trial.set_user_attr("run_dir", str(trial_dir))
    start = time.perf_counter()
    history = ValHistory(trial_dir / HISTORY_FILE)
    env_before = dict(os.environ)
    try:
        values, overrides = trial_overrides(spec, trial, trial_dir)
        trial.set_user_attr("values", json.loads(json.dumps(values)))
        trial.set_user_attr("overrides", overrides)
        pruning = PyTorchLightningPruningCallback(trial, monitor=spec.metric)
        os.environ[JOIN_ENV] = json.dumps(
            {"study_name": trial.study.study_name, "trial_id": trial._trial_id, "number": trial.number}
        )
        _fit(spec.base_config, overrides, history, pruning)
        pruning.check_pruned()  # DDP: rank 0 recorded the pruning decision in the storage
        picked = pick_epoch(history.epochs, spec.metric, spec.maximize, spec.reduce)
        _record(trial, history, picked, start)
        return picked[spec.metric]
    except optuna.TrialPruned:
        _record(trial, history, None, start)
        raise
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM (pre-emption): queue the same point again, then stop
        _record(trial, history, None, start)
        trial.set_user_attr("error", f"interrupted: {err}"[:_MAX_ATTR_CHARS])
        trial.study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
        raise
    except Exception as err:
        _record(trial, history, None, start)
        trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:_MAX_ATTR_CHARS])
        trial.set_user_attr("traceback", "".join(traceback.format_exception(err))[-_MAX_ATTR_CHARS:])
        raise
    finally:
        _restore_env(env_before)


def _record(trial: optuna.trial.Trial, history: ValHistory, picked: dict | None, start: float) -> None:
    trial.set_user_attr("epochs_run", len(history.epochs))
    trial.set_user_attr("wall_s", round(time.perf_counter() - start, 2))
    if history.epochs:
        trial.set_user_attr("last_epoch", history.epochs[-1]["epoch"])
    if picked is not None:
        trial.set_user_attr("best_epoch", picked["epoch"])
        for key, value in picked.items():
            if key.startswith("val/"):
                trial.set_user_attr(key, value)


def join_trial(
    spec: SweepSpec, storage: optuna.storages.BaseStorage, join: Mapping[str, Any], study_dir: Path
) -> None:
    """A DDP rank > 0 re-launched by Lightning: run the parent's trial with the same overrides, report nothing.

    The pruning callback only reports on global rank 0 and broadcasts its decision, so this rank stops with it.
    """
    from optuna_integration import PyTorchLightningPruningCallback

    study = optuna.load_study(study_name=join["study_name"], storage=storage)
    trial = optuna.trial.Trial(study, int(join["trial_id"]))
    trial_dir = study_dir / f"trial_{int(join['number']):04d}"
    _, overrides = trial_overrides(spec, trial, trial_dir)
    pruning = PyTorchLightningPruningCallback(trial, monitor=spec.metric)
    _fit(spec.base_config, overrides, ValHistory(trial_dir / HISTORY_FILE), pruning)
