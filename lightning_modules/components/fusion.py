"""Fuse a product's modality features (image, title, attributes) into one embedding."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from clipita_core.registry import Registry
from clipita_core.vocabulary import MODALITIES

from .projection_head import HEAD, HeadConfig, create_head


def check_modalities(modalities: list[str]) -> list[str]:
    """Validate a modality list: non-empty, known names, no repeats; returned in canonical order."""
    if not modalities:
        raise ValueError(f"modalities must name at least one of {', '.join(MODALITIES)}")
    for m in modalities:
        if m not in MODALITIES:
            raise ValueError(f"unknown modality {m!r}; expected a subset of {list(MODALITIES)}")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities repeat a name: {modalities}")
    return [m for m in MODALITIES if m in modalities]


class ConcatFusion(nn.Module):
    """CLIP-ITA's fusion: concatenate the modality features, then one projection head.

    A modality missing for a product (``present`` False, e.g. a product without a title) contributes zeros to its
    slice of the concatenated input, whatever its feature vector holds, so the head sees one fixed "absent" input
    rather than an arbitrary vector.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        embed_dim: int,
        head: HeadConfig = HEAD,
    ) -> None:
        super().__init__()
        self.modalities = list(input_dims)
        self.head = create_head(head, sum(input_dims.values()), embed_dim)

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for m in self.modalities:
            f = features[m]
            if m in present:
                f = f * present[m].to(device=f.device, dtype=f.dtype).unsqueeze(-1)
            parts.append(f)
        return self.head(torch.cat(parts, dim=-1))


class _PerModalityHeads(nn.Module):
    """One projection head per modality; :meth:`project` gives the L2-normalised outputs ``[B, M, D]`` and the
    presence mask ``[B, M]``. The score-level fusions below differ only in how they weigh the modalities."""

    def __init__(
        self,
        input_dims: dict[str, int],
        embed_dim: int,
        head: HeadConfig = HEAD,
    ) -> None:
        super().__init__()
        self.modalities = list(input_dims)
        self.heads = nn.ModuleDict({m: create_head(head, d, embed_dim) for m, d in input_dims.items()})

    def project(
        self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = torch.stack([F.normalize(self.heads[m](features[m]), dim=-1) for m in self.modalities], dim=1)
        return parts, torch.stack([present[m] for m in self.modalities], dim=1)


class WeightedSumFusion(_PerModalityHeads):
    """One head per modality, each output L2-normalised, then a weighted sum (GCL-style score fusion).

    Weights are renormalised to sum to one; with ``learnable_weights`` they are a softmax over learned logits
    initialised from ``weights``. A modality missing for a product (``present`` False) gets weight zero for it.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        embed_dim: int,
        head: HeadConfig = HEAD,
        weights: dict[str, float] | None = None,
        learnable_weights: bool = False,
    ) -> None:
        super().__init__(input_dims, embed_dim, head)
        weights = dict(weights or {})
        unknown = set(weights) - set(self.modalities)
        if unknown:
            raise ValueError(f"fusion weights name modalities not in use: {sorted(unknown)}")
        init = torch.tensor([float(weights.get(m, 1.0)) for m in self.modalities])
        if (init < 0).any() or init.sum() <= 0:
            raise ValueError(f"fusion weights must be >= 0 and not all zero, got {weights}")
        init = init / init.sum()
        if learnable_weights:
            self.weight_logits = nn.Parameter(init.clamp_min(1e-4).log())
        else:
            self.register_buffer("weight_logits", init.clamp_min(1e-12).log())

    def modality_weights(self) -> torch.Tensor:
        return torch.softmax(self.weight_logits, dim=0)

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        parts, mask = self.project(features, present)
        per_sample = self.modality_weights().unsqueeze(0) * mask.to(parts.dtype)
        per_sample = per_sample / per_sample.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return (per_sample.unsqueeze(-1) * parts).sum(dim=1)


class GatedFusion(_PerModalityHeads):
    """Per-modality heads mixed by per-product gates computed from all features and which modalities are present.

    A product whose attributes are missing (or uninformative) can lean on its image and title: the gate sees the
    presence mask and the features, and missing modalities are masked out before the softmax.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        embed_dim: int,
        head: HeadConfig = HEAD,
    ) -> None:
        super().__init__(input_dims, embed_dim, head)
        n = len(self.modalities)
        self.gate = nn.Sequential(nn.Linear(n * embed_dim + n, 128), nn.GELU(), nn.Linear(128, n))

    def forward(self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        parts, mask = self.project(features, present)
        logits = self.gate(torch.cat([parts.flatten(1), mask.to(parts.dtype)], dim=-1))
        weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1).nan_to_num(0.0)
        return (weights.unsqueeze(-1) * parts).sum(dim=1)


# Every fusion: a class ``(input_dims, embed_dim, head)`` (``head`` a :class:`HeadConfig`) whose
# ``forward(features, present)`` gives the product embedding. ``model.net.fusion`` takes the names registered here
# (its type is ``FUSIONS.literal``, read when the parser is built), so a new fusion is one class plus one entry.
FUSIONS: Registry[type[nn.Module]] = Registry(
    "fusion", {"concat": ConcatFusion, "weighted_sum": WeightedSumFusion, "gated": GatedFusion}
)


def create_fusion(
    fusion: str,
    input_dims: dict[str, int],
    embed_dim: int,
    head: HeadConfig = HEAD,
    weights: dict[str, float] | None = None,
    learnable_weights: bool = False,
    **head_options: object,
) -> nn.Module:
    """Build a fusion module by name (a name in :data:`FUSIONS`; ``concat`` is the paper's).

    ``head_options`` (any field of :class:`HeadConfig`, e.g. ``head_type="linear"``) override those of ``head``.
    """
    fusion_class = FUSIONS[fusion]
    head = replace(head, **head_options)
    if fusion_class is WeightedSumFusion:
        return fusion_class(input_dims, embed_dim, head, weights=weights, learnable_weights=learnable_weights)
    return fusion_class(input_dims, embed_dim, head)
