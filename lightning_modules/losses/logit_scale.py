"""The contrastive temperature, as a fixed or learnable logit scale clamped to a safe range."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..defaults import signature_defaults


class LogitScale(nn.Module):
    """``exp(s)`` with ``s = log(1 / temperature)``; learnable or fixed, clamped to ``max_scale`` (CLIP uses 100).

    Args:
        temperature: the initial tau (> 0). CLIP initialises at 0.07.
        learnable: learn tau jointly with the heads (CLIP) or keep it fixed (a sweep parameter).
        max_scale: upper clamp on ``1 / tau`` so training cannot blow the logits up.
    """

    def __init__(self, temperature: float = 0.07, learnable: bool = True, max_scale: float = 100.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not max_scale >= 1.0 / temperature:
            raise ValueError(f"max_scale {max_scale} is below 1/temperature = {1.0 / temperature:.3g}")
        init = torch.tensor(math.log(1.0 / temperature))
        self.max_log = math.log(max_scale)
        if learnable:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=self.max_log).exp()


#: the temperature options' defaults, declared once by :class:`LogitScale`; every loss's ``temperature``,
#: ``learnable_temperature`` and ``max_logit_scale`` (``model.loss.init_args.*``) take theirs from here
LOGIT_SCALE = signature_defaults(LogitScale)
