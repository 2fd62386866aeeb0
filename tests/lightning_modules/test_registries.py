"""The model library's families are each listed once, in a registry: the config Literal, the factory and the
messages all follow it."""

from __future__ import annotations

import typing

import pytest

from lightning_modules.components.fusion import FUSIONS, create_fusion
from lightning_modules.losses import LOSSES, InfoNCELoss
from lightning_modules.model import ClipIta

DIMS = {"image": 4, "title": 3}


def test_the_fusion_option_is_the_registry():
    assert FUSIONS.names == ("concat", "weighted_sum", "gated")
    assert typing.get_args(typing.get_type_hints(ClipIta.__init__)["fusion"]) == FUSIONS.names
    for name in FUSIONS:
        assert type(create_fusion(name, DIMS, embed_dim=5, head_type="linear")) is FUSIONS[name]
    with pytest.raises(ValueError, match=r"unknown fusion 'sum'; expected one of \['concat', 'weighted_sum'"):
        create_fusion("sum", DIMS, embed_dim=5)


def test_weighted_sum_alone_takes_its_weights():
    fusion = create_fusion("weighted_sum", DIMS, embed_dim=5, head_type="linear", weights={"image": 3.0})
    assert fusion.modality_weights().tolist() == pytest.approx([0.75, 0.25])


def test_losses_are_registered_by_the_class_name_the_config_uses():
    assert LOSSES.names == ("InfoNCELoss", "MultiPositiveInfoNCELoss", "HierarchicalInfoNCELoss")
    for name in LOSSES:
        loss = LOSSES[name]()
        assert type(loss).__name__ == name and isinstance(loss, InfoNCELoss)
