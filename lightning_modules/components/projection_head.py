"""Projection heads: the paper's MLP (2 hidden layers, GELU, LayerNorm) and the variants used by the ablations."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

HeadType = Literal["mlp", "residual", "linear", "identity"]


class MLPHead(nn.Module):
    """``num_hidden_layers`` x (Linear -> LayerNorm -> GELU -> Dropout), then a Linear to ``out_dim``.

    With ``num_hidden_layers=2`` this is CLIP-ITA's projection head (MLP with 2 hidden layers, GELU, LayerNorm).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 512,
        num_hidden_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            dim = hidden_dim
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

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 512,
        num_hidden_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if in_dim != out_dim:
            raise ValueError(f"a residual head needs in_dim == out_dim, got {in_dim} and {out_dim}")
        self.mlp = MLPHead(in_dim, out_dim, hidden_dim, num_hidden_layers, dropout)
        last = self.mlp.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


def create_head(
    head_type: HeadType,
    in_dim: int,
    out_dim: int,
    hidden_dim: int = 512,
    num_hidden_layers: int = 2,
    dropout: float = 0.1,
) -> nn.Module:
    """Build a projection head by name: ``mlp`` (the paper), ``residual``, ``linear`` or ``identity``."""
    if head_type == "mlp":
        return MLPHead(in_dim, out_dim, hidden_dim, num_hidden_layers, dropout)
    if head_type == "residual":
        return ResidualHead(in_dim, out_dim, hidden_dim, num_hidden_layers, dropout)
    if head_type == "linear":
        return nn.Linear(in_dim, out_dim)
    if head_type == "identity":
        if in_dim != out_dim:
            raise ValueError(f"an identity head needs in_dim == out_dim, got {in_dim} and {out_dim}")
        return nn.Identity()
    raise ValueError(f"unknown head type {head_type!r}; expected one of mlp, residual, linear, identity")
