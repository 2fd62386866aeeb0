"""Callbacks that report what a run achieved."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from .metrics.report import format_metrics_table


class PrintRetrievalMetrics(L.Callback):
    """Print the retrieval metrics as a table (rows = settings, columns = metrics) after validation at the end
    of fit and after test.

    Args:
        metrics: the metric columns to show.
    """

    def __init__(
        self, metrics: tuple[str, ...] = ("map@10", "mrr", "r_precision", "p@1", "p@10", "ndcg@10")
    ) -> None:
        self.metrics = list(metrics)

    def _print(self, trainer: L.Trainer, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        if values:
            print(f"\n{stage} retrieval metrics (epoch {trainer.current_epoch}):")
            print(format_metrics_table(values, stage, self.metrics))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer, "test")


class PlotTrainingCurves(L.Callback):
    """Write ``<log_dir>/curves.png`` (train/loss and val/map@10 per epoch) when fit ends (CSVLogger runs)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning.pytorch.loggers import CSVLogger

        from .curves import plot_training_curves

        logger = trainer.logger
        if not trainer.is_global_zero or not isinstance(logger, CSVLogger):
            return
        logger.save()  # flush buffered rows first
        metrics_csv = Path(logger.log_dir) / "metrics.csv"
        if metrics_csv.is_file():
            plot_training_curves(metrics_csv, Path(logger.log_dir) / "curves.png")
