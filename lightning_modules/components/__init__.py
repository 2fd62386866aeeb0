"""Plain nn.Module building blocks: encoders (built by name), attribute pooling, projection heads, fusion."""

from __future__ import annotations

from .attribute_pooling import AttributePooling
from .fusion import FUSIONS, ConcatFusion, GatedFusion, WeightedSumFusion, check_modalities, create_fusion
from .image_encoder import ImageEncoder, create_timm_backbone
from .projection_head import HEAD, HeadConfig, MLPHead, ResidualHead, create_head
from .text_encoder import TextEncoder

__all__ = [
    "FUSIONS",
    "HEAD",
    "AttributePooling",
    "ConcatFusion",
    "GatedFusion",
    "HeadConfig",
    "ImageEncoder",
    "MLPHead",
    "ResidualHead",
    "TextEncoder",
    "WeightedSumFusion",
    "check_modalities",
    "create_fusion",
    "create_head",
    "create_timm_backbone",
]
