"""InfoNCE whose targets treat every relevant (product, category name) pair in the batch as a positive."""

from __future__ import annotations

from typing import Literal

import torch

from .gather import gather_no_grad
from .info_nce import InfoNCELoss
from .logit_scale import LOGIT_SCALE

PositiveRule = Literal["same_category", "relevant"]


def positive_mask(
    target_ids: torch.Tensor, product_category_ids: torch.Tensor, rule: PositiveRule = "relevant"
) -> torch.Tensor:
    """``M[i, j]`` True when category name ``j`` (``target_ids[j]``) is a positive for product ``i``.

    ``same_category``: product i was paired with the same category (``target_ids[i] == target_ids[j]``).
    ``relevant``: category j is product i's category or one of its ancestors (``target_ids[j]`` is in row i of
    ``product_category_ids``) - when training pairs products with categories of mixed levels, a product of
    "Apparel > Topwear > Shirts" is a positive for the name "Apparel" too.
    """
    if rule == "same_category":
        return target_ids.unsqueeze(1) == target_ids.unsqueeze(0)
    if rule == "relevant":
        return (product_category_ids.unsqueeze(1) == target_ids.view(1, -1, 1)).any(dim=-1)
    raise ValueError(f"unknown positive rule {rule!r}; expected 'same_category' or 'relevant'")


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j t_ij log softmax(logits_i)_j`` with each row of ``targets`` summing to one."""
    targets = targets / targets.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


class MultiPositiveInfoNCELoss(InfoNCELoss):
    """Bidirectional InfoNCE with multi-positive targets: same-category products are not each other's negatives.

    With one-hot InfoNCE, a batch holding two shirts pushes each shirt away from the other's copy of the name
    "Shirts". Here the target distribution of a product spreads evenly over all category names in the (global) batch
    that are positives for it, and a category name's target spreads over all products it is a positive for. When
    every category appears once in the batch it equals :class:`InfoNCELoss` exactly.

    Args:
        lambda_weight: weight of the product -> category direction.
        temperature: initial tau.
        learnable_temperature: learn tau or keep it fixed.
        max_logit_scale: clamp on ``1 / tau``.
        positives: ``same_category`` or ``relevant`` (also ancestors); see :func:`positive_mask`.

    References:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (multi-positive targets).

    Example:
        >>> loss = MultiPositiveInfoNCELoss(temperature=1.0, learnable_temperature=False)
        >>> p = torch.eye(2); c = torch.eye(2); ids = torch.tensor([[0], [1]])
        >>> round(loss(p, c, target_ids=ids[:, 0], product_category_ids=ids).item(), 4)
        0.3133
    """

    def __init__(
        self,
        lambda_weight: float = 0.5,
        temperature: float = LOGIT_SCALE["temperature"],
        learnable_temperature: bool = LOGIT_SCALE["learnable"],
        max_logit_scale: float = LOGIT_SCALE["max_scale"],
        positives: PositiveRule = "relevant",
    ) -> None:
        super().__init__(lambda_weight, temperature, learnable_temperature, max_logit_scale)
        if positives not in ("same_category", "relevant"):
            raise ValueError(f"unknown positive rule {positives!r}; expected 'same_category' or 'relevant'")
        self.positives = positives
        self.config["positives"] = positives

    def forward(
        self,
        products: torch.Tensor,
        categories: torch.Tensor,
        *,
        target_ids: torch.Tensor,
        product_category_ids: torch.Tensor,
        **_: object,
    ) -> torch.Tensor:
        """Args: embeddings ``[B, D]``; ``target_ids [B]`` the category paired with each product;
        ``product_category_ids [B, L]`` each product's ancestor ids (-1 padded)."""
        return self._in_batch_loss(products, categories, target_ids, product_category_ids)

    def pair_targets(self, target_ids: torch.Tensor, product_category_ids: torch.Tensor) -> torch.Tensor:
        """``[N, N]`` target weights: row ``i`` = how much each category name in the batch is a positive for product
        ``i`` (here 0/1 by :func:`positive_mask`); subclasses grade them."""
        return positive_mask(target_ids, product_category_ids, self.positives).float()

    def _in_batch_loss(
        self,
        products: torch.Tensor,
        categories: torch.Tensor,
        target_ids: torch.Tensor,
        product_category_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Bidirectional soft-target InfoNCE over the global batch, with targets from :meth:`pair_targets`."""
        p2c, c2p, offset = self.logits(products, categories)
        weights = self.pair_targets(gather_no_grad(target_ids), gather_no_grad(product_category_ids))
        local = slice(offset, offset + products.shape[0])
        return self.lambda_weight * soft_cross_entropy(p2c, weights[local]) + (
            1 - self.lambda_weight
        ) * soft_cross_entropy(c2p, weights.T[local])
