"""Pool a product's per-attribute embeddings (one per ``name: value`` pair) into one vector."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

PoolingType = Literal["mean", "attention"]


class AttributePooling(nn.Module):
    """Masked pooling over attribute embeddings ``[B, A, D]`` with mask ``[B, A]`` (True = present).

    Args:
        dim: embedding width D.
        mode: ``mean`` (CLIP-ITA: the mean of the per-attribute text embeddings) or ``attention`` (a learned query
            scores each attribute; the paper's future work). Products with no attribute get a zero vector.

    Example:
        >>> pool = AttributePooling(4)
        >>> x = torch.ones(1, 2, 4); x[0, 1] = 3
        >>> pool(x, torch.tensor([[True, False]]))
        tensor([[1., 1., 1., 1.]])
    """

    def __init__(self, dim: int, mode: PoolingType = "mean") -> None:
        super().__init__()
        if mode not in ("mean", "attention"):
            raise ValueError(f"unknown attribute pooling {mode!r}; expected 'mean' or 'attention'")
        self.mode = mode
        if mode == "attention":
            self.key = nn.Linear(dim, dim)
            self.query = nn.Parameter(torch.randn(dim) * dim**-0.5)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(features.dtype)
        if self.mode == "mean":
            total = (features * mask.unsqueeze(-1)).sum(dim=1)
            return total / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        scores = torch.tanh(self.key(features)) @ self.query
        scores = scores.masked_fill(mask == 0, float("-inf"))
        weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # all-missing rows -> zeros
        return (weights.unsqueeze(-1) * features).sum(dim=1)
