"""Run a ``clipita fit`` config from Python: fit, test the best checkpoint, and hand back every number.

The leaderboard, the Optuna sweeps and the ablations all train through this one function, so they run exactly the
module, DataModule and Trainer that ``clipita fit --config ...`` runs.

``refit_after_choice: true`` in a fit config (the adaptive recipe) refits after the scorer is chosen: see
:mod:`clipita.refit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from clipita.refit import NAMED_LOGGERS


@dataclass
class RunResult:
    """What one fit (+ test) produced."""

    module: Any
    datamodule: Any
    trainer: Any
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    test_per_query: dict[str, torch.Tensor] = field(default_factory=dict)
    best_checkpoint: str | None = None
    choice_run: RunResult | None = None  # with refit_after_choice: the fit that chose the scorer

    @property
    def query_paths(self) -> list[tuple[str, ...]]:
        return list(self.datamodule.tree.paths)

    @property
    def settings(self) -> dict[str, torch.Tensor]:
        """The test's settings (:attr:`EvalProtocol.settings <clipita_core.protocol.EvalProtocol.settings>`)."""
        return {k: torch.from_numpy(v) for k, v in self.module.protocol.settings.items()}


def read_fit_config(path: str | Path | None) -> dict[str, Any]:
    """A ``clipita fit`` YAML as a plain dict (``{}`` for None): the one place the apps read a fit config's text.

    Objects are built from it only through :func:`clipita.factory.build`, exactly as ``clipita fit`` builds them.
    """
    if path is None:
        return {}
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise FileNotFoundError(f"cannot read fit config {str(path)!r}: {error}") from error
    except yaml.YAMLError as error:
        raise ValueError(f"fit config {str(path)!r} is not valid YAML: {error}") from error
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(
            f"fit config {str(path)!r} must be a mapping of sections, got {type(config).__name__}"
        )
    return config


def section(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A section's options (``data``, ``model``, ...), in plain or ``class_path``/``init_args`` form."""
    node = dict(config.get(name) or {})
    return dict(node.get("init_args") or {}) if "class_path" in node or "init_args" in node else node


def logger_class(config: dict[str, Any]) -> str:
    """The class name of the config's ``trainer.logger`` ("" when none is set)."""
    logger = (config.get("trainer") or {}).get("logger")
    return str(logger.get("class_path", "")).rsplit(".", 1)[-1] if isinstance(logger, dict) else ""


def run_folder_overrides(config: dict[str, Any], save_dir: str | Path, name: str, version: str) -> list[str]:
    """``--key value`` overrides sending a run's logs and checkpoints to ``save_dir/name/version``, whatever the
    config's logger says (checkpoints follow the logger's run folder)."""
    out = ["--trainer.default_root_dir", str(Path(save_dir) / name / version)]
    if logger_class(config) in NAMED_LOGGERS:
        out += [
            "--trainer.logger.init_args.save_dir", str(save_dir),
            "--trainer.logger.init_args.name", name,
            "--trainer.logger.init_args.version", version,
        ]  # fmt: skip
    return out


def _scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def fit_and_test(
    config: str | None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[Any] = (),
    test: bool = True,
) -> RunResult:
    """Fit a config and (by default) test its best checkpoint.

    Args:
        config: a ``clipita fit`` YAML; None for the defaults.
        overrides: ``--key value`` pairs exactly as on the command line, e.g.
            ``["--model.loss.temperature", "0.05", "--trainer.max_epochs", "5"]``.
        callbacks: extra Lightning callbacks (e.g. Optuna's pruning callback) added to the config's own (the
            first fit's only, with ``refit_after_choice``).
        test: evaluate on the test split after fitting (after the refit, with ``refit_after_choice``: the result
            is the refit's, the choosing fit is ``result.choice_run``).
    """
    from clipita.factory import build, config_args
    from clipita.modalities import check_modalities
    from clipita.refit import refit_after_choice

    args = config_args(config, overrides)
    built = build(args)
    trainer, module, datamodule = built.trainer, built.module, built.datamodule
    check_modalities(module, datamodule, wait=trainer.global_rank != 0)  # before any image is encoded
    for callback in callbacks:
        trainer.callbacks.append(callback)
    trainer.fit(module, datamodule=datamodule)
    choice_run = None
    if built.config.get("refit_after_choice"):
        choice_run = RunResult(module, datamodule, trainer, val=_scalars(trainer.callback_metrics, "val/"))
        trainer, module, datamodule = refit_after_choice(args, module, trainer, datamodule)
        if trainer is choice_run.trainer:
            choice_run = None
    result = RunResult(module, datamodule, trainer, val=_scalars(trainer.callback_metrics, "val/"))
    result.choice_run = choice_run
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        result.best_checkpoint = checkpoint.best_model_path
    if test:
        trainer.test(module, datamodule=datamodule, ckpt_path=result.best_checkpoint, verbose=False)
        result.test = _scalars(trainer.callback_metrics, "test/")
        result.test_per_query = module.per_query.get("test", {})
    return result
