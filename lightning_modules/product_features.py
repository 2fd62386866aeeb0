"""A product's per-modality encoder features, read from a batch: the cached features when the batch has them
(``image_features``, ``title_features``, ``attribute_features`` + ``attribute_mask``; ARCHITECTURE.md's batch
contract), otherwise the encoders run on the raw inputs (``image``, ``title``, ``attributes``). So the same model
trains on a feature cache and serves raw catalogue records.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clipita_core.vocabulary import attribute_texts

from .components.attribute_pooling import AttributePooling
from .components.image_encoder import ImageEncoder
from .components.text_encoder import TextEncoder


def image_features(batch: dict, image_encoder: ImageEncoder | None) -> torch.Tensor:
    if "image_features" in batch:
        return batch["image_features"]
    return image_encoder(batch["image"])


def title_features(batch: dict, text_encoder: TextEncoder) -> torch.Tensor:
    if "title_features" in batch:
        return batch["title_features"]
    return text_encoder(list(batch["title"]))


def raw_attribute_features(
    attributes: Sequence[dict], names: Sequence[str], text_encoder: TextEncoder
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed every ``name: value`` pair: ``[B, A, D]`` and the presence mask ``[B, A]`` (``names``: the attribute
    order; empty = every name the records have, sorted)."""
    names = list(names) or sorted({k for a in attributes for k in a})
    texts = [attribute_texts(a, names) for a in attributes]
    mask = torch.tensor([[t != "" for t in row] for row in texts], dtype=torch.bool)
    flat = [t for row in texts for t in row if t]
    emb = text_encoder(flat)
    out = emb.new_zeros(len(texts), len(names), text_encoder.output_dim)
    out[mask.to(out.device)] = emb
    return out, mask.to(out.device)


def attribute_features(
    batch: dict, names: Sequence[str], text_encoder: TextEncoder, pooling: AttributePooling
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled attribute embedding ``[B, D]`` and whether each product has any attribute ``[B]``."""
    if "attribute_features" in batch:
        feats, mask = batch["attribute_features"], batch["attribute_mask"]
    else:
        feats, mask = raw_attribute_features(batch["attributes"], names, text_encoder)
    return pooling(feats, mask), mask.any(dim=1)


def modality_features(
    batch: dict,
    modalities: Sequence[str],
    image_encoder: ImageEncoder | None,
    text_encoder: TextEncoder,
    attribute_names: Sequence[str],
    attribute_pooling: AttributePooling | None,
    dtype: torch.dtype,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-modality encoder features (as ``dtype``) and a per-product presence flag for each."""
    features: dict[str, torch.Tensor] = {}
    present: dict[str, torch.Tensor] = {}
    if "image" in modalities:
        features["image"] = image_features(batch, image_encoder)
    if "title" in modalities:
        features["title"] = title_features(batch, text_encoder)
        if batch.get("title_mask") is not None:  # False = the product has no title (a zero vector)
            present["title"] = batch["title_mask"].to(features["title"].device).bool()
    if "attributes" in modalities:
        features["attributes"], present["attributes"] = attribute_features(
            batch, attribute_names, text_encoder, attribute_pooling
        )
    features = {m: f.to(dtype) for m, f in features.items()}
    n = next(iter(features.values())).shape[0]
    device = next(iter(features.values())).device
    for m in features:
        present.setdefault(m, torch.ones(n, dtype=torch.bool, device=device))
    return features, present
