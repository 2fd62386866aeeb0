"""Which part of a pretrained tower trains: its blocks, bottom to top, and the last ``N`` of them.

A tower is cut into *units*, bottom (input) to top (output), each a set of parameter-name prefixes:

- a timm model with a ``blocks`` / ``stages`` / ``layers`` sequence (EfficientNet's ``blocks``, ConvNeXt's
  ``stages``, ViT's ``blocks``): everything before the sequence (the stem) is unit 0, each element of the sequence one
  unit, and everything after it (EfficientNet's ``conv_head`` + ``bn2``, a ViT's final norm) joins the last element;
- any other timm model (ResNet): each top-level child that holds parameters is a unit ("the last N stages");
- a Hugging Face transformer (the sentence-transformers text tower): ``embeddings`` is unit 0, each transformer layer
  one unit; its ``pooler`` is never trained (sentence embeddings are mean-pooled tokens: it would get no gradient).

Parameters held by the model itself (a ViT's ``cls_token`` / ``pos_embed``) belong to unit 0.

``train_blocks`` (``ClipIta.train_image_blocks`` / ``train_text_layers``): ``0`` nothing trains (the frozen tower),
``-1`` every unit, ``N > 0`` the top ``N`` units. A parameter's *depth* is how many units lie above its own (0 for the
top unit); layer-wise learning-rate decay scales its learning rate by ``decay ** depth``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SEQUENCES = ("blocks", "stages", "layers")  # the timm attribute names of a model's block sequence


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


@dataclass(frozen=True)
class TowerLayout:
    """A tower's units, bottom to top: each a tuple of parameter-name prefixes (``"blocks.3."``); ``never``: prefixes
    of parameters that never train."""

    units: tuple[tuple[str, ...], ...]
    never: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.units)

    def unit_of(self, name: str) -> int | None:
        """The unit of a parameter name (unit 0 when no prefix matches; None for a never-trained one)."""
        if self.never and name.startswith(self.never):
            return None
        for index in range(len(self.units) - 1, -1, -1):
            if name.startswith(self.units[index]):
                return index
        return 0

    def trained_units(self, train_blocks: int) -> range:
        """The unit indices ``train_blocks`` trains (see the module docstring)."""
        check_train_blocks(train_blocks)
        n = len(self.units) if train_blocks == -1 else min(train_blocks, len(self.units))
        return range(len(self.units) - n, len(self.units))

    def depth(self, name: str) -> int:
        """Units above a parameter's own (0 for the top unit)."""
        unit = self.unit_of(name)
        return len(self.units) - 1 - (0 if unit is None else unit)

    def modules(self, root: nn.Module, unit: int) -> list[nn.Module]:
        """The submodules of ``root`` making up a unit."""
        return [root.get_submodule(p.rstrip(".")) for p in self.units[unit] if p.rstrip(".")]


def check_train_blocks(value: int) -> int:
    if value < -1:
        raise ValueError(f"the number of trained blocks must be -1 (all), 0 (none) or N > 0, got {value}")
    return value


def timm_layout(model: nn.Module) -> TowerLayout:
    """The units of a timm model (module docstring)."""
    children = [(n, m) for n, m in model.named_children() if _has_parameters(m)]
    names = [n for n, _ in children]
    for attr in SEQUENCES:
        sequence = getattr(model, attr, None)
        if attr in names and isinstance(sequence, (nn.Sequential, nn.ModuleList)) and len(sequence) > 1:
            at = names.index(attr)
            stem = tuple(f"{n}." for n in names[:at])
            blocks = [(f"{attr}.{i}.",) for i in range(len(sequence))]
            blocks[-1] = blocks[-1] + tuple(f"{n}." for n in names[at + 1 :])
            return TowerLayout(((stem,) if stem else ()) + tuple(blocks))
    return TowerLayout(tuple((f"{n}.",) for n in names))


def transformer_layout(model: nn.Module) -> TowerLayout:
    """The units of a Hugging Face transformer (``BertModel`` & co): embeddings, then each layer of its longest
    ``nn.ModuleList``; the pooler never trains."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError(
            f"{type(model).__name__}: no transformer layer list found to train the last layers of"
        )
    name, layers = max(lists, key=lambda item: len(item[1]))
    embeddings = tuple(f"{n}." for n, m in model.named_children() if n == "embeddings" and _has_parameters(m))
    units = ((embeddings,) if embeddings else ()) + tuple((f"{name}.{i}.",) for i in range(len(layers)))
    never = tuple(f"{n}." for n, _ in model.named_children() if n == "pooler")
    return TowerLayout(units, never)


def apply_train_blocks(root: nn.Module, layout: TowerLayout, train_blocks: int) -> list[nn.Module]:
    """Set ``requires_grad`` of ``root``'s parameters: the units ``train_blocks`` names train, all others are frozen.
    Returns the modules of the frozen units (kept in eval mode by the tower: BatchNorm statistics and dropout as
    pretrained)."""
    trained = set(layout.trained_units(train_blocks))
    for name, parameter in root.named_parameters():
        parameter.requires_grad_(layout.unit_of(name) in trained)
    frozen = [m for unit in range(len(layout)) if unit not in trained for m in layout.modules(root, unit)]
    if not trained:
        return [root]
    return frozen + [root.get_submodule(p.rstrip(".")) for p in layout.never]


def parameter_depths(root: nn.Module, layout: TowerLayout, prefix: str = "") -> dict[str, int]:
    """``{prefix + name: depth}`` of ``root``'s trainable parameters."""
    return {prefix + n: layout.depth(n) for n, p in root.named_parameters() if p.requires_grad}


def weights_digest(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and values, in order): what a feature cache of a
    trained tower is keyed by."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
