"""Run a ``clipita fit`` config from Python: fit, test the best checkpoint, and hand back every number.

The leaderboard, the Optuna sweeps and the ablations all train through this one function, so they run exactly the
module, DataModule and Trainer that ``clipita fit --config ...`` runs.

``refit_after_choice: true`` in a fit config (the adaptive recipe) makes one fit two: the first, with pseudo-novel
validation (``data.pseudo_novel_fraction``), chooses the scorer (:mod:`lightning_modules.scorer_choice`); the
second trains again from scratch on *every* training leaf (``pseudo_novel_fraction`` 0, the same seed, epochs and
test split) and keeps that choice instead of re-choosing (:meth:`ClipItaModule.keep_scorer`), so the leaves held out
to choose the scorer are no longer novel to the model that is tested, indexed and searched. It lives here, at the
level that builds Trainers and DataModules, and not in a callback: the second fit needs a new split (a new
DataModule) and a fresh network, optimiser and schedule, which a callback inside the first ``trainer.fit`` cannot
give. ``clipita fit`` calls the same :func:`refit_after_choice`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml


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
        return self.module.settings


NAMED_LOGGERS = ("CSVLogger", "TensorBoardLogger")  # loggers with a save_dir/name/version run folder


def read_fit_config(path: str | Path | None) -> dict[str, Any]:
    """A ``clipita fit`` YAML as a plain dict (``{}`` for None): the one place the apps read a fit config's text.

    Objects are built from it only through :func:`clipita.cli.make_cli`, exactly as ``clipita fit`` builds them.
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


REFIT_OVERRIDES: tuple[str, ...] = ("--data.pseudo_novel_fraction", "0")


def chosen_retrieval(module: Any, best_checkpoint: str | None) -> dict[str, Any]:
    """The scorer choice a test of this fit would use: the best checkpoint's retrieval record (the module's own
    when there is no checkpoint)."""
    if not best_checkpoint:
        return dict(module.net.retrieval)
    from lightning_modules.checkpointing import read_record

    checkpoint = torch.load(best_checkpoint, map_location="cpu", weights_only=True)
    return dict(read_record(checkpoint, best_checkpoint).get("retrieval", {}))


def refit_version_overrides(trainer: Any) -> list[str]:
    """Send the refit's logs and checkpoints to a sibling run folder ``<version>_refit`` of the first fit's."""
    logger = trainer.logger
    if logger is None or type(logger).__name__ not in NAMED_LOGGERS:
        return []
    version = logger.version
    name = f"version_{version}_refit" if isinstance(version, int) else f"{version}_refit"
    return ["--trainer.logger.init_args.version", name]


def fit_args(args: Sequence[str], subcommand: str | None = None) -> list[str]:
    """Command-line tokens of a fit, less the subcommand and the fit-only ``--ckpt_path`` (a refit starts fresh)."""
    out, tokens, i = [], list(args), 0
    if subcommand and subcommand in tokens:
        tokens.remove(subcommand)
    while i < len(tokens):
        if tokens[i] == "--ckpt_path":
            i += 2
            continue
        if not tokens[i].startswith("--ckpt_path="):
            out.append(tokens[i])
        i += 1
    return out


def refit_after_choice(
    args: Sequence[str], module: Any, trainer: Any, datamodule: Any
) -> tuple[Any, Any, Any]:
    """Train again on every training leaf, keeping the scorer the fit just made chose; returns the new
    ``(trainer, module, datamodule)``.

    ``args`` are the first fit's command-line tokens (config + overrides, no subcommand); the refit adds
    ``--data.pseudo_novel_fraction 0`` and a ``<version>_refit`` run folder. Its validation still logs
    ``val/chosen/*`` (under the kept weights), so the config's checkpoint monitor works unchanged.
    """
    from clipita.cli import make_cli
    from clipita.modalities import check_modalities

    if not getattr(module.hparams, "choose_scorer", False):
        raise ValueError("refit_after_choice needs model.choose_scorer: true (there is no choice to keep)")
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else None
    record = chosen_retrieval(module, best or None)
    held = datamodule.manifest.get("pseudo_novel_categories", []) if datamodule.manifest else []
    if not held:
        print(
            "refit_after_choice: no pseudo-novel leaf was held out (data.pseudo_novel_fraction 0): no refit"
        )
        return trainer, module, datamodule
    cli = make_cli(list(args) + list(REFIT_OVERRIDES) + refit_version_overrides(trainer), run=False)
    refit_trainer, refit_module, refit_dm = cli.trainer, cli.model, cli.datamodule
    check_modalities(refit_module, refit_dm, wait=refit_trainer.global_rank != 0)
    refit_module.keep_scorer(record)
    refit_trainer.fit(refit_module, datamodule=refit_dm)
    refit_module.print(
        f"refit on every training leaf ({len(held)} pseudo-novel leaves back in training), scorer kept"
    )
    return refit_trainer, refit_module, refit_dm


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
    from clipita.cli import make_cli
    from clipita.modalities import check_modalities

    args = (["--config", config] if config else []) + list(overrides)
    cli = make_cli(args, run=False)
    trainer, module, datamodule = cli.trainer, cli.model, cli.datamodule
    check_modalities(module, datamodule, wait=trainer.global_rank != 0)  # before any image is encoded
    for callback in callbacks:
        trainer.callbacks.append(callback)
    trainer.fit(module, datamodule=datamodule)
    choice_run = None
    if cli.config.get("refit_after_choice"):
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
