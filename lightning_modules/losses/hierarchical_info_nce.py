"""Hierarchy-aware InfoNCE: ancestors are graded positives, and every seen category can serve as a negative."""

from __future__ import annotations

import torch

from .logit_scale import LOGIT_SCALE
from .multi_positive_info_nce import MultiPositiveInfoNCELoss, soft_cross_entropy


def hierarchical_targets(
    target_ids: torch.Tensor, product_category_ids: torch.Tensor, parent_weight: float
) -> torch.Tensor:
    """``W[i, j]``: how much category ``target_ids[j]`` is a positive for product ``i``.

    1 for the product's own (deepest) category, ``parent_weight`` for its parent, ``parent_weight**2`` for the
    grandparent, ..., 0 for categories off its path.

    Example:
        >>> paths = torch.tensor([[0, 2, 5], [1, 3, -1]])
        >>> hierarchical_targets(torch.tensor([5, 2, 3]), paths, 0.5).tolist()
        [[1.0, 0.5, 0.0], [0.0, 0.0, 1.0]]
    """
    depth = (product_category_ids >= 0).sum(dim=1)  # [B]
    levels = torch.arange(product_category_ids.shape[1], device=target_ids.device)
    hit = product_category_ids.unsqueeze(1) == target_ids.view(1, -1, 1)  # [B, J, L]
    distance = (depth.view(-1, 1, 1) - 1 - levels.view(1, 1, -1)).clamp(min=0).float()
    weights = torch.where(hit, parent_weight**distance, torch.zeros_like(distance))
    return weights.amax(dim=-1)


class HierarchicalInfoNCELoss(MultiPositiveInfoNCELoss):
    """Bidirectional InfoNCE with graded, tree-aware targets (CLIP-ITA's future work: use the category tree).

    In-batch part: like :class:`MultiPositiveInfoNCELoss`, but a category name paired with a product's ancestor is a
    positive with weight ``parent_weight ** (levels up)`` instead of 1, so "Apparel" pulls a shirt less than "Shirts"
    does. Table part (``table_weight > 0``): each product is also scored against *every* category seen in training
    (not just those in the batch), with the same graded targets, which gives every step all the negatives a small
    taxonomy has. Categories unseen in training are never in the table (they are masked by the caller).

    Args:
        lambda_weight: weight of the product -> category direction of the in-batch part.
        temperature: initial tau.
        learnable_temperature: learn tau.
        max_logit_scale: clamp on ``1 / tau``.
        parent_weight: target weight of a parent relative to the product's own category (0 = leaf only).
        table_weight: weight of the product -> all-seen-categories term (0 switches it off).

    References:
        Hendriksen et al., ECIR 2022 (future work: hierarchy-aware training).
        Bertinetto et al., "Making Better Mistakes: Leveraging Class Hierarchies with Deep Networks", CVPR 2020
        (soft hierarchical targets).
    """

    def __init__(
        self,
        lambda_weight: float = 0.5,
        temperature: float = LOGIT_SCALE["temperature"],
        learnable_temperature: bool = LOGIT_SCALE["learnable"],
        max_logit_scale: float = LOGIT_SCALE["max_scale"],
        parent_weight: float = 0.5,
        table_weight: float = 0.5,
    ) -> None:
        super().__init__(
            lambda_weight, temperature, learnable_temperature, max_logit_scale, positives="relevant"
        )
        if not 0.0 <= parent_weight <= 1.0:
            raise ValueError(f"parent_weight must lie in [0, 1], got {parent_weight}")
        if table_weight < 0:
            raise ValueError(f"table_weight must be >= 0, got {table_weight}")
        self.parent_weight = parent_weight
        self.table_weight = table_weight
        del self.config["positives"]  # fixed to "relevant", not an argument here
        self.config.update(parent_weight=parent_weight, table_weight=table_weight)

    def forward(
        self,
        products: torch.Tensor,
        categories: torch.Tensor,
        *,
        target_ids: torch.Tensor,
        product_category_ids: torch.Tensor,
        table_embeddings: torch.Tensor | None = None,
        table_ids: torch.Tensor | None = None,
        **_: object,
    ) -> torch.Tensor:
        """Args: as :class:`MultiPositiveInfoNCELoss`, plus ``table_embeddings [C, D]`` of the seen categories with
        their table ids ``table_ids [C]`` (needed when ``table_weight > 0``)."""
        loss = self._in_batch_loss(products, categories, target_ids, product_category_ids)
        if self.table_weight > 0:
            if table_embeddings is None or table_ids is None:
                raise ValueError("table_weight > 0 needs table_embeddings and table_ids")
            table_logits = self.logit_scale() * products @ table_embeddings.T
            table_targets = hierarchical_targets(table_ids, product_category_ids, self.parent_weight)
            loss = loss + self.table_weight * soft_cross_entropy(table_logits, table_targets)
        return loss

    def pair_targets(self, target_ids: torch.Tensor, product_category_ids: torch.Tensor) -> torch.Tensor:
        """Graded targets: 1 for the product's own category, ``parent_weight ** levels_up`` for its ancestors."""
        return hierarchical_targets(target_ids, product_category_ids, self.parent_weight)


__all__ = ["HierarchicalInfoNCELoss", "hierarchical_targets"]
