"""Contrastive objectives, one per file."""

from __future__ import annotations

from .hierarchical_info_nce import HierarchicalInfoNCELoss, hierarchical_targets
from .info_nce import InfoNCELoss
from .logit_scale import LogitScale
from .multi_positive_info_nce import MultiPositiveInfoNCELoss, positive_mask

__all__ = [
    "HierarchicalInfoNCELoss",
    "hierarchical_targets",
    "InfoNCELoss",
    "LogitScale",
    "MultiPositiveInfoNCELoss",
    "positive_mask",
]
