"""CLIP-ITA: a product tower fusing image, title and attributes, and a category-name tower, in one embedding space."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .components.attribute_pooling import AttributePooling, PoolingType, attribute_texts
from .components.fusion import FusionType, create_fusion
from .components.image_encoder import ImageEncoder
from .components.projection_head import HeadType, create_head
from .components.text_encoder import TextEncoder


class ClipIta(nn.Module):
    """The retrieval model. Training, prediction, indexing and search all go through ``encode_product`` and
    ``encode_category``.

    Each modality is read from cached encoder features when the batch has them (``image_features``,
    ``title_features``, ``attribute_features`` + ``attribute_mask``) and otherwise computed from raw inputs
    (``image``, ``title``, ``attributes``) by the encoders, so the same model trains on a feature cache and serves raw
    catalogue records.

    Args:
        modalities: the product modalities fused (CLIP-I: ``[image]``; CLIP-IA; CLIP-ITA: all three).
        image_encoder: the image tower (needed when ``image`` is a modality).
        text_encoder: the text tower (titles, attribute pairs and category names).
        embed_dim: the shared embedding width.
        fusion: ``concat`` (the paper), ``weighted_sum`` or ``gated``.
        head_type: product-side projection heads.
        category_head: category-side head; ``residual``/``identity`` keep the pretrained text space (``embed_dim``
            must then equal the text width).
        attribute_names: attribute order for raw ``attributes`` dicts.
        zero_shot_weight: mix the product's frozen title embedding into its output:
            ``normalize(normalize(fused) + w * normalize(title_features))``. Scores then add a zero-shot
            title-vs-category-name term to the trained one, which keeps what the pretrained text space knows about
            categories never trained on. Needs ``embed_dim`` equal to the text width and a category head that keeps
            the text space (``residual`` or ``identity``).
        route_novel_categories: at retrieval time, score a category the model never trained on by the zero-shot
            match of its name with the products' frozen title embeddings, and a trained category by the model.
            Done with one dot product: retrieval vectors are ``[product, title]`` and query vectors ``[category, 0]``
            (trained) or ``[0, name]`` (novel); see :meth:`encode_product_for_retrieval` / :meth:`encode_query`.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        text_encoder: TextEncoder,
        image_encoder: ImageEncoder | None = None,
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
        zero_shot_weight: float = 0.0,
        route_novel_categories: bool = False,
    ) -> None:
        super().__init__()
        self.route_novel_categories = route_novel_categories
        if zero_shot_weight < 0:
            raise ValueError(f"zero_shot_weight must be >= 0, got {zero_shot_weight}")
        if route_novel_categories and "title" not in modalities and zero_shot_weight == 0:
            raise ValueError(
                "route_novel_categories needs product titles: add 'title' or set zero_shot_weight"
            )
        if zero_shot_weight > 0 and embed_dim != text_encoder.output_dim:
            raise ValueError(
                f"zero_shot_weight > 0 needs embed_dim == the text width {text_encoder.output_dim}, got {embed_dim}"
            )
        self.zero_shot_weight = zero_shot_weight
        self.modalities = list(modalities)
        if "image" in self.modalities and image_encoder is None:
            raise ValueError("modality 'image' needs an image encoder")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.attribute_names = list(attribute_names)
        text_dim = text_encoder.output_dim
        dims = {
            "image": image_encoder.output_dim if image_encoder else 0,
            "title": text_dim,
            "attributes": text_dim,
        }
        input_dims = {m: dims[m] for m in self.modalities}
        self.attribute_pooling = (
            AttributePooling(text_dim, attribute_pooling) if "attributes" in input_dims else None
        )
        self.fusion = create_fusion(
            fusion,
            input_dims,
            embed_dim,
            head_type,
            hidden_dim,
            num_hidden_layers,
            dropout,
            fusion_weights,
            learnable_fusion_weights,
        )
        self.category_head = create_head(
            category_head, text_dim, embed_dim, hidden_dim, num_hidden_layers, dropout
        )

    # ----------------------------------------------------------------------------------------------- features
    def image_features(self, batch: dict) -> torch.Tensor:
        if "image_features" in batch:
            return batch["image_features"]
        return self.image_encoder(batch["image"])

    def title_features(self, batch: dict) -> torch.Tensor:
        if "title_features" in batch:
            return batch["title_features"]
        return self.text_encoder(list(batch["title"]))

    def raw_attribute_features(self, attributes: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed every ``name: value`` pair: ``[B, A, D]`` and the presence mask ``[B, A]``."""
        names = self.attribute_names or sorted({k for a in attributes for k in a})
        texts = [attribute_texts(a, names) for a in attributes]
        mask = torch.tensor([[t != "" for t in row] for row in texts], dtype=torch.bool)
        flat = [t for row in texts for t in row if t]
        emb = self.text_encoder(flat)
        out = emb.new_zeros(len(texts), len(names), self.text_encoder.output_dim)
        out[mask.to(out.device)] = emb
        return out, mask.to(out.device)

    def attribute_features(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "attribute_features" in batch:
            feats, mask = batch["attribute_features"], batch["attribute_mask"]
        else:
            feats, mask = self.raw_attribute_features(batch["attributes"])
        return self.attribute_pooling(feats, mask), mask.any(dim=1)

    def modality_features(self, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-modality encoder features and a per-product presence flag for each."""
        features: dict[str, torch.Tensor] = {}
        present: dict[str, torch.Tensor] = {}
        if "image" in self.modalities:
            features["image"] = self.image_features(batch)
        if "title" in self.modalities:
            features["title"] = self.title_features(batch)
            if batch.get("title_mask") is not None:  # False = the product has no title (a zero vector)
                present["title"] = batch["title_mask"].to(features["title"].device).bool()
        if "attributes" in self.modalities:
            features["attributes"], present["attributes"] = self.attribute_features(batch)
        dtype = next(self.fusion.parameters()).dtype
        features = {m: f.to(dtype) for m, f in features.items()}
        n = next(iter(features.values())).shape[0]
        device = next(iter(features.values())).device
        for m in features:
            present.setdefault(m, torch.ones(n, dtype=torch.bool, device=device))
        return features, present

    # ------------------------------------------------------------------------------------------------ towers
    def encode_product(self, batch: dict, normalize: bool = True) -> torch.Tensor:
        """Product embeddings ``[B, embed_dim]`` from a batch dict (raw inputs or cached features)."""
        features, present = self.modality_features(batch)
        out = self.fusion(features, present)
        if self.zero_shot_weight > 0:
            title = features["title"] if "title" in features else self.title_features(batch).to(out.dtype)
            out = F.normalize(out, dim=-1) + self.zero_shot_weight * F.normalize(title, dim=-1)
        return F.normalize(out, dim=-1) if normalize else out

    def encode_product_for_retrieval(self, batch: dict) -> torch.Tensor:
        """The vector a product is indexed with: ``encode_product``, plus its normalised frozen title embedding
        appended when ``route_novel_categories`` is on (``[B, 2 * embed_dim]``)."""
        product = self.encode_product(batch)
        if not self.route_novel_categories:
            return product
        title = F.normalize(self.title_features(batch).to(product.dtype), dim=-1)
        return torch.cat([product, title], dim=-1)

    def encode_query(self, text_features: torch.Tensor, novel: torch.Tensor | None = None) -> torch.Tensor:
        """Query vectors matching :meth:`encode_product_for_retrieval` for category-name features ``[C, text_dim]``;
        ``novel [C]`` marks names the model never trained on (routed to the zero-shot title match)."""
        category = self.encode_category(text_features)
        if not self.route_novel_categories:
            return category
        name = F.normalize(text_features.to(category.dtype), dim=-1)
        novel = (
            torch.zeros(len(category), dtype=torch.bool, device=category.device) if novel is None else novel
        )
        trained_part = torch.where(novel.unsqueeze(1), torch.zeros_like(category), category)
        novel_part = torch.where(novel.unsqueeze(1), name, torch.zeros_like(name))
        return torch.cat([trained_part, novel_part], dim=-1)

    def encode_category(self, text_features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Category embeddings from text-encoder features of category names ``[C, text_dim]``."""
        out = self.category_head(text_features.to(next(self.parameters()).dtype))
        return F.normalize(out, dim=-1) if normalize else out

    def encode_category_texts(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Category embeddings for any free-text category names (seen in training or not)."""
        return self.encode_category(self.text_encoder(list(texts)), normalize)
