"""Run a ``clipita fit`` config from Python: fit, test the best checkpoint, and hand back every number.

The leaderboard, the Optuna sweeps and the ablations all train through this one function, so they run exactly the
module, DataModule and Trainer that ``clipita fit --config ...`` runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


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

    @property
    def query_paths(self) -> list[tuple[str, ...]]:
        return list(self.datamodule.tree.paths)

    @property
    def query_groups(self) -> dict[str, torch.Tensor]:
        return self.module.query_groups


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
            ``["--model.temperature", "0.05", "--trainer.max_epochs", "5"]``.
        callbacks: extra Lightning callbacks (e.g. Optuna's pruning callback) added to the config's own.
        test: evaluate on the test split after fitting.
    """
    from clipita.cli import make_cli

    args = (["--config", config] if config else []) + list(overrides)
    cli = make_cli(args, run=False)
    trainer, module, datamodule = cli.trainer, cli.model, cli.datamodule
    for callback in callbacks:
        trainer.callbacks.append(callback)
    trainer.fit(module, datamodule=datamodule)
    result = RunResult(module, datamodule, trainer, val=_scalars(trainer.callback_metrics, "val/"))
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_path:
        result.best_checkpoint = checkpoint.best_model_path
    if test:
        trainer.test(module, datamodule=datamodule, ckpt_path=result.best_checkpoint, verbose=False)
        result.test = _scalars(trainer.callback_metrics, "test/")
        result.test_per_query = module.per_query.get("test", {})
    return result
