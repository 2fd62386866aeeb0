"""Missing modalities in every fusion: a product without a title (``present`` False) is defined and tested."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.components.fusion import create_fusion

DIMS = {"image": 6, "title": 5}


def _batch(n: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {m: torch.randn(n, d) for m, d in DIMS.items()}


@pytest.mark.parametrize("fusion", ["concat", "weighted_sum", "gated"])
def test_missing_title_ignores_whatever_its_vector_holds(fusion: str) -> None:
    torch.manual_seed(1)
    module = create_fusion(fusion, DIMS, embed_dim=3, head_type="linear").eval()
    features = _batch()
    present = {m: torch.ones(4, dtype=torch.bool) for m in DIMS}
    present["title"] = torch.tensor([True, False, True, False])
    garbage = dict(features, title=features["title"] + 100.0 * torch.randn_like(features["title"]))
    with torch.no_grad():
        out = module(features, present)
        out_garbage = module(garbage, present)
    missing = ~present["title"]
    # rows without a title do not depend on the title vector at all; rows with one do
    assert torch.allclose(out[missing], out_garbage[missing], atol=1e-5)
    assert not torch.allclose(out[~missing], out_garbage[~missing], atol=1e-3)
    assert torch.isfinite(out).all()


def test_concat_missing_modality_is_a_zero_slice() -> None:
    module = create_fusion("concat", DIMS, embed_dim=3, head_type="linear").eval()
    features = _batch()
    present = {"image": torch.ones(4, dtype=torch.bool), "title": torch.zeros(4, dtype=torch.bool)}
    zeroed = dict(features, title=torch.zeros_like(features["title"]))
    all_present = {m: torch.ones(4, dtype=torch.bool) for m in DIMS}
    with torch.no_grad():
        assert torch.allclose(module(features, present), module(zeroed, all_present))
