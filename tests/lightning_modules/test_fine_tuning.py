"""Fine-tuning: one optimizer step on raw batches changes the image tower when it is trainable, and a frozen tower
(image or text) does not move - its weights, and its BatchNorm statistics, stay as built."""

from __future__ import annotations

import pytest
import torch
from synthetic_catalogue import SyntheticDataModule, tiny_net, trainer

from lightning_modules import ClipItaModule, InfoNCELoss


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    return [k for k, v in module.state_dict().items() if not torch.equal(v, before[k])]


@pytest.mark.parametrize("train_image_encoder", [True, False], ids=["fine-tuned", "frozen"])
def test_one_step_moves_exactly_the_trainable_towers(tmp_path, train_image_encoder):
    torch.manual_seed(0)
    net = tiny_net(train_image_encoder=train_image_encoder)
    module = ClipItaModule(net, InfoNCELoss(temperature=0.1), lr=1e-2, encoder_lr=1e-2, scheduler="none")
    image, text, heads = snapshot(net.image_encoder), snapshot(net.text_encoder), snapshot(net.fusion)
    dm = SyntheticDataModule(net, raw=True)
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, datamodule=dm)
    assert module.global_step == 1

    assert changed(text, net.text_encoder) == []  # the frozen text tower
    assert changed(heads, net.fusion)  # the heads always train
    moved = changed(image, net.image_encoder)
    if train_image_encoder:
        weights = [k for k in moved if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert weights, "fine-tuning left the image tower's weights unchanged"
        groups = module.optimizers().optimizer.param_groups
        assert [g["lr"] for g in groups] == [1e-2, 1e-2] and len(groups[1]["params"]) > 0
    else:
        assert moved == []  # neither weights nor BatchNorm statistics
