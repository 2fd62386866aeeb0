"""Per-step training randomness as a function of (seed, epoch, batch index within the epoch).

:meth:`ClipItaModule.on_train_batch_start` reseeds torch's global generators (CPU and CUDA) before every training
step, so head dropout and the sampled training levels (``train_category_level: random``,
:mod:`lightning_modules.training_targets`) of step ``b`` of epoch ``e`` are the same whether the run went straight
through, resumed from the checkpoint written at the end of epoch ``e - 1``, or resumed from one written in the middle
of epoch ``e`` (the raw training stream resumes its batches there too: ``datamodules/training_stream.py``), whatever
else drew random numbers in between (DataLoader iterators, validation). Every DDP rank reseeds alike, which
:func:`~lightning_modules.training_targets.training_targets` relies on. The image augmentation in DataLoader workers
has its own per-sample seeds (``datamodules/augmentation.py``).
"""

from __future__ import annotations

import hashlib
import os

import torch


def step_seed(seed: int, epoch: int, batch_idx: int) -> int:
    """A 63-bit seed of ``(seed, epoch, batch_idx)``: distinct triples give unrelated seeds.

    Example:
        >>> step_seed(0, 1, 2) == step_seed(0, 1, 2) != step_seed(0, 2, 1)
        True
    """
    digest = hashlib.blake2b(f"step:{seed}:{epoch}:{batch_idx}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seed_step(epoch: int, batch_idx: int) -> None:
    """Reseed torch for step ``batch_idx`` of ``epoch``, from the run's seed (``seed_everything``'s
    ``PL_GLOBAL_SEED``; 0 when unset)."""
    torch.manual_seed(step_seed(int(os.environ.get("PL_GLOBAL_SEED", "0")), epoch, batch_idx))
