"""Test-only callbacks (imported by class path in subprocess runs)."""

from __future__ import annotations

import time

import lightning as L


class SleepEveryBatch(L.Callback):
    """Slow training down so a test can kill the process in the middle of an epoch."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
