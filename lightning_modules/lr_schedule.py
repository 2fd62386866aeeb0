"""The learning-rate schedule: a linear warm-up, then a cosine decay to zero over training (or a constant rate).

It scales every parameter group alike (:mod:`lightning_modules.param_groups`), stepped once per optimizer step.
"""

from __future__ import annotations

from typing import Literal

import torch

Schedule = Literal["cosine", "none"]


def warmup_factor(step: int, schedule: Schedule, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate factor at optimizer step ``step`` (0-based): ``(step + 1) / warmup_steps`` during the
    warm-up, then 1 (``none``) or ``0.5 * (1 + cos(pi * progress))`` with ``progress`` the share of the steps after
    the warm-up done (``cosine``; 0 from ``total_steps`` on)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "none":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + torch.cos(torch.tensor(min(1.0, progress) * torch.pi)).item())


def warmup_schedule(
    optimizer: torch.optim.Optimizer, schedule: Schedule, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler of ``optimizer`` following :func:`warmup_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_factor(step, schedule, warmup_steps, total_steps)
    )
