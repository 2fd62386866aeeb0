"""The optimizer's parameter groups: heads at ``lr``, trained tower blocks at ``encoder_lr``, decayed layer-wise.

Every trainable parameter of the module lands in exactly one group, a frozen one in none:

- ``heads``: everything trainable outside the two towers (projection heads, fusion, attribute pooling, the loss's
  temperature) at ``lr``;
- ``image_encoder/depth<d>`` and ``text_encoder/depth<d>``: the trained parameters of a tower whose block is ``d``
  blocks below its top (:mod:`lightning_modules.components.encoder_blocks`), at ``encoder_lr * layer_decay ** d``
  (0.7: each block further down learns 0.7x as fast, so the general low-level features move least); with
  ``layer_decay`` 1 one group per tower (``image_encoder``, ``text_encoder``) at ``encoder_lr``.

The warm-up and cosine schedule (:class:`~lightning_modules.clip_ita_module.ClipItaModule`) scale every group alike.
"""

from __future__ import annotations

from typing import Any

from torch import nn

TOWERS = ("image_encoder", "text_encoder")


def check_layer_decay(layer_decay: float) -> float:
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"model.layer_decay must be in (0, 1], got {layer_decay}")
    return float(layer_decay)


def parameter_groups(
    module: nn.Module, net: nn.Module, lr: float, encoder_lr: float, layer_decay: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW parameter groups of ``module`` (which holds ``net`` as a submodule), each with a ``name``.

    Args:
        module: the trained module (the LightningModule: network and loss).
        net: the network; its towers ``image_encoder`` / ``text_encoder`` give the depth of each trained parameter
            (``parameter_depths``).
        lr: the heads' learning rate.
        encoder_lr: the top block's learning rate in a trained tower.
        layer_decay: the factor per block further from the top.
    """
    layer_decay = check_layer_decay(layer_decay)
    by_id = {id(p): p for p in module.parameters() if p.requires_grad}
    named = dict(net.named_parameters())
    tower_groups: dict[tuple[str, int], list[nn.Parameter]] = {}
    for tower_name in TOWERS:
        tower = getattr(net, tower_name, None)
        if tower is None or not tower.trainable:
            continue
        depths = tower.parameter_depths(prefix=f"{tower_name}.")
        trained = {n for n, p in named.items() if n.startswith(f"{tower_name}.") and p.requires_grad}
        if set(depths) != trained:
            unplaced = sorted(trained ^ set(depths))[:5]
            raise ValueError(f"{tower_name}: trained parameters without a block depth: {unplaced}")
        for name, depth in depths.items():  # one group per depth, or one per tower without decay
            tower_groups.setdefault((tower_name, depth if layer_decay < 1 else 0), []).append(named[name])
    in_towers = {id(p) for params in tower_groups.values() for p in params}
    heads = [p for i, p in by_id.items() if i not in in_towers]
    groups: list[dict[str, Any]] = [{"name": "heads", "params": heads, "lr": lr}] if heads else []
    for (tower_name, depth), params in sorted(tower_groups.items()):
        name = f"{tower_name}/depth{depth}" if layer_decay < 1 else tower_name
        groups.append({"name": name, "params": params, "lr": encoder_lr * layer_decay**depth})
    return groups
