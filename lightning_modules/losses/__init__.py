"""Contrastive objectives, one per file; :data:`LOSSES` names the ones ``--model.loss`` takes (by class name)."""

from __future__ import annotations

from clipita_core.registry import Registry

from .hierarchical_info_nce import HierarchicalInfoNCELoss, hierarchical_targets
from .info_nce import InfoNCELoss
from .logit_scale import LogitScale
from .multi_positive_info_nce import MultiPositiveInfoNCELoss, positive_mask

LOSSES: Registry[type[InfoNCELoss]] = Registry(
    "loss", {c.__name__: c for c in (InfoNCELoss, MultiPositiveInfoNCELoss, HierarchicalInfoNCELoss)}
)

__all__ = [
    "LOSSES",
    "HierarchicalInfoNCELoss",
    "hierarchical_targets",
    "InfoNCELoss",
    "LogitScale",
    "MultiPositiveInfoNCELoss",
    "positive_mask",
]
