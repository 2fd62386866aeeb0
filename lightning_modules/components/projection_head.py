"""Projection heads: the paper's MLP (2 hidden layers, GELU, LayerNorm) and the variants used by the ablations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

HeadType = Literal["mlp", "residual", "linear", "identity"]


@dataclass(frozen=True)
class HeadConfig:
    """What a projection head is: its type and, for the MLP heads, their width, depth and dropout.

    The one declaration of the head options and their defaults: the heads, the fusions and :class:`ClipIta`'s flat
    ``model.net.head_type`` / ``hidden_dim`` / ``num_hidden_layers`` / ``dropout`` (whose defaults are read from
    :data:`HEAD`) all take them from here.
    """

    head_type: HeadType = "mlp"
    hidden_dim: int = 512
    num_hidden_layers: int = 2
    dropout: float = 0.1


#: the default head: CLIP-ITA's MLP with 2 hidden layers of 512, GELU, LayerNorm, dropout 0.1
HEAD = HeadConfig()


class MLPHead(nn.Module):
    """``num_hidden_layers`` x (Linear -> LayerNorm -> GELU -> Dropout), then a Linear to ``out_dim``.

    With ``num_hidden_layers=2`` (:data:`HEAD`) this is CLIP-ITA's projection head (MLP with 2 hidden layers, GELU,
    LayerNorm). Reads ``hidden_dim``, ``num_hidden_layers`` and ``dropout`` of ``config``.
    """

    def __init__(self, in_dim: int, out_dim: int, config: HeadConfig = HEAD) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        width = config.hidden_dim
        for _ in range(config.num_hidden_layers):
            layers += [nn.Linear(dim, width), nn.LayerNorm(width), nn.GELU(), nn.Dropout(config.dropout)]
            dim = width
        layers.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ResidualHead(nn.Module):
    """``x + MLP(x)`` with the MLP's last layer zero-initialised: starts as the identity.

    Keeps the pretrained text space at initialisation, so category names the model never trained on (unseen
    categories) stay where the pretrained encoder put them while the head adapts seen ones. Needs
    ``in_dim == out_dim``.
    """

    def __init__(self, in_dim: int, out_dim: int, config: HeadConfig = HEAD) -> None:
        super().__init__()
        if in_dim != out_dim:
            raise ValueError(f"a residual head needs in_dim == out_dim, got {in_dim} and {out_dim}")
        self.mlp = MLPHead(in_dim, out_dim, config)
        last = self.mlp.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


def create_head(config: HeadConfig, in_dim: int, out_dim: int) -> nn.Module:
    """Build the projection head ``config`` names: ``mlp`` (the paper), ``residual``, ``linear`` or ``identity``."""
    head_type = config.head_type
    if head_type == "mlp":
        return MLPHead(in_dim, out_dim, config)
    if head_type == "residual":
        return ResidualHead(in_dim, out_dim, config)
    if head_type == "linear":
        return nn.Linear(in_dim, out_dim)
    if head_type == "identity":
        if in_dim != out_dim:
            raise ValueError(f"an identity head needs in_dim == out_dim, got {in_dim} and {out_dim}")
        return nn.Identity()
    raise ValueError(f"unknown head type {head_type!r}; expected one of mlp, residual, linear, identity")
