"""Bidirectional InfoNCE between products and their category names (CLIP-ITA's objective)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .gather import gather_with_grad, world
from .logit_scale import LOGIT_SCALE, LogitScale


def check_lambda(lambda_weight: float) -> float:
    if not 0.0 <= lambda_weight <= 1.0:
        raise ValueError(f"loss lambda must lie in [0, 1], got {lambda_weight}")
    return lambda_weight


class InfoNCELoss(nn.Module):
    """``lambda * CE(product -> category) + (1 - lambda) * CE(category -> product)`` over a batch.

    Row ``i`` pairs product ``i`` with the name of its category; every other category name in the (global) batch is
    a negative, including other copies of the same category (one-hot targets, as in CLIP and CLIP-ITA). Under DDP the
    embeddings of all ranks are gathered, so negatives come from the global batch.

    Args:
        lambda_weight: weight of the product -> category direction (lambda in the paper).
        temperature: initial tau; logits are ``cos_sim / tau``.
        learnable_temperature: learn tau (as CLIP's logit scale) or keep it fixed.
        max_logit_scale: clamp on ``1 / tau``.

    References:
        Hendriksen et al., "Extending CLIP for Category-to-image Retrieval in E-commerce", ECIR 2022.
        Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.

    Example:
        >>> loss = InfoNCELoss(temperature=1.0, learnable_temperature=False)
        >>> p = torch.eye(2); c = torch.eye(2)
        >>> round(loss(p, c).item(), 4)  # log(1 + e^-1)
        0.3133
    """

    def __init__(
        self,
        lambda_weight: float = 0.5,
        temperature: float = LOGIT_SCALE["temperature"],
        learnable_temperature: bool = LOGIT_SCALE["learnable"],
        max_logit_scale: float = LOGIT_SCALE["max_scale"],
    ) -> None:
        super().__init__()
        self.lambda_weight = check_lambda(lambda_weight)
        self.logit_scale = LogitScale(temperature, learnable_temperature, max_logit_scale)
        #: the constructor arguments (``type(loss)(**loss.config)`` rebuilds it); kept in checkpoints
        self.config: dict[str, object] = dict(
            lambda_weight=lambda_weight,
            temperature=temperature,
            learnable_temperature=learnable_temperature,
            max_logit_scale=max_logit_scale,
        )

    def logits(
        self, products: torch.Tensor, categories: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Local-vs-global logits (open_clip's local loss): ``[B, world*B]`` both ways, and this rank's offset."""
        rank, _ = world()
        all_products = gather_with_grad(products)
        all_categories = gather_with_grad(categories)
        scale = self.logit_scale()
        return (
            scale * products @ all_categories.T,
            scale * categories @ all_products.T,
            rank * products.shape[0],
        )

    def forward(self, products: torch.Tensor, categories: torch.Tensor, **_: object) -> torch.Tensor:
        """Args: ``products`` and ``categories``: L2-normalised ``[B, D]``, row i of each a positive pair."""
        p2c, c2p, offset = self.logits(products, categories)
        labels = torch.arange(products.shape[0], device=products.device) + offset
        return self.lambda_weight * F.cross_entropy(p2c, labels) + (1 - self.lambda_weight) * F.cross_entropy(
            c2p, labels
        )
