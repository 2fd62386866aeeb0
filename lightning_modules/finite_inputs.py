"""The guard against non-finite inputs: a batch holding NaN/inf fails naming its products."""

from __future__ import annotations

import torch

FLOAT_INPUTS = ("image", "image_features", "title_features", "attribute_features")


def check_finite(batch: dict, stage: str) -> None:
    """Fail with the product ids when an input holds NaN/inf (a degenerate image, a broken cache row).

    Raises:
        FloatingPointError: naming the stage, the batch key and (up to 20 of) the products.
    """
    for key in FLOAT_INPUTS:
        x = batch.get(key)
        if torch.is_tensor(x) and x.is_floating_point() and not torch.isfinite(x).all():
            bad = (~torch.isfinite(x.flatten(1))).any(dim=1).nonzero().flatten().tolist()
            ids = [batch["product_id"][i] for i in bad]
            raise FloatingPointError(f"{stage}: non-finite values in {key!r} of products {ids[:20]}")
