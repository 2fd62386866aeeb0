"""The LightningModule: trains an injected :class:`ClipIta` with an injected contrastive loss and evaluates it with the
retrieval metrics."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from clipita_core.protocol import EvalProtocol
from clipita_core.weights import TREE, weight_key

from .checkpointing import restore_module_state, write_checkpoint
from .fine_tuning import FineTuning
from .finite_inputs import check_finite
from .losses import LOSSES, InfoNCELoss
from .lr_schedule import Schedule, warmup_schedule
from .metrics import CategoryRetrievalMetrics
from .model import ClipIta
from .param_groups import check_layer_decay, parameter_groups
from .query_table import QueryTable
from .scorer_choice import CHOICE_KEY, DEFAULT_GRID, ScorerSelection, describe, network_signals
from .step_seed import seed_step
from .training_targets import TrainLevel, training_targets
from .wise_ft import EVIDENCE_KEY, WiseFTSelection
from .wise_ft import describe as describe_wise_ft


class ClipItaModule(FineTuning, L.LightningModule):
    """CLIP-ITA for category-to-image retrieval, trainable with ``clipita fit``.

    The network and the loss are built from their own signatures (``model.net.*``: :class:`ClipIta`'s arguments;
    ``model.loss``: a ``class_path`` + ``init_args`` of :class:`~lightning_modules.losses.InfoNCELoss` or a subclass)
    and handed in; this module owns the optimisation and the evaluation. Their configs travel in the checkpoint
    (:mod:`lightning_modules.checkpointing`), not in ``hparams``. The evaluation protocol
    (:class:`~clipita_core.protocol.EvalProtocol`: the queries, settings and seen / novel / unseen categories of a
    split) is taken like the network: given here, or else read from the DataModule in :meth:`setup` (``clipita
    fit``, where it exists only once the catalogue is sharded).

    Args:
        net: the retrieval network (its options: see :class:`ClipIta`).
        loss: the contrastive objective, a loss registered in ``LOSSES`` (``lightning_modules/losses/``; each
            class's own help: ``--model.loss.help NAME``). Default: ``InfoNCELoss()`` (one-hot targets, the paper).
        lr: AdamW learning rate of heads, fusion and the temperature.
        encoder_lr: learning rate of the top block of a fine-tuned tower (``net.train_image_blocks`` /
            ``train_text_layers``); one parameter group per block depth (:mod:`lightning_modules.param_groups`).
        layer_decay: layer-wise learning-rate decay of fine-tuned towers: a block ``d`` blocks below the top learns
            at ``encoder_lr * layer_decay ** d`` (1: one rate for the tower).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        scheduler: ``cosine`` decay to zero over training, or ``none``.
        train_category_level: pair each product with its leaf category, or a random level of its path each step.
        eval_max_rank: ranking depth kept by the retrieval metrics (R-precision/MRR are capped there).
        choose_scorer: choose the weights of the scorer's signals on the validation split, every validation epoch,
            from ``scorer_grid`` (:mod:`lightning_modules.scorer_choice`): the title-match weights
            (``novel_title_weight`` for novel categories, ``seen_title_weight`` for trained ones) with
            ``net.route_novel_categories``, the image-only weights (``novel_image_weight``, ``seen_image_weight``)
            with ``net.image_evidence``, the BM25 weights (``novel_lexical_weight``, ``seen_lexical_weight``) with
            ``net.lexical_signal``. The choice is kept in ``net.retrieval`` and so in each checkpoint. Needs at
            least one of the two. Pair it with ``data.pseudo_novel_fraction`` so validation has novel categories to
            choose from.
        scorer_grid: the weights tried for each signal (in [0, 1]; 0 = the fused towers, 1 = the title match /
            the image-only tower).
        scorer_min_queries: a side (seen / novel) with fewer validation queries than this keeps the preferred
            scorer (title weight 0, the fused towers) instead of choosing on them (the adaptive recipe: 5).
        choose_taxonomy: with ``choose_scorer``, also choose the tree terms of the query vectors
            (:mod:`lightning_modules.taxonomy_scoring`: a novel category borrows its trained parent, an inner node its
            trained descendants) on validation.
        image_loss_weight: weight of the contrastive loss of the image-only product embedding against the same
            category tower, added to the fused one (only with ``net.image_evidence``; must then be > 0, so the
            image-only head is trained).
        init_from: start from the network weights of another run's checkpoint (stage 2 of linear-probe-then-fine-tune;
            :func:`lightning_modules.checkpointing.init_from_checkpoint`: what may differ, and an ``adapt_modalities``
            network's weights loaded once it is rebuilt for the catalogue).
        wise_ft: choose a WiSE-FT mix of the fine-tuned towers with the pretrained ones (with ``init_from``: of the
            whole network with the one loaded) on validation, every validation epoch (:mod:`lightning_modules.wise_ft`;
            kept in ``net.retrieval`` and the checkpoint, applied by test, predict and ``load_model``). Needs a fine-tuned tower with named pretrained weights; pair it
            with ``data.pseudo_novel_fraction``. Each validation epoch embeds the validation products once per mix.
        wise_ft_grid: the mixes tried (``alpha`` in [0, 1]; 1 = the fine-tuned towers, preferred).
        protocol: the evaluation protocol (no config option; default: the DataModule's, in :meth:`setup`).

    Validation reports ``specific_seen`` (leaves the network trained on) and ``specific_novel`` (leaves it did not:
    the pseudo-novel ones) beside the other groups; with ``choose_scorer`` also ``val/scorer_*_title_weight`` (the
    chosen weights) and ``val/chosen/{all,seen,novel}/map@10`` (validation under the weights chosen on it).
    """

    def __init__(
        self,
        net: ClipIta,
        loss: InfoNCELoss | None = None,
        lr: float = 1e-3,
        encoder_lr: float = 1e-5,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        scheduler: Schedule = "cosine",
        train_category_level: TrainLevel = "random",
        eval_max_rank: int = 1000,
        choose_scorer: bool = False,
        scorer_grid: list[float] = list(DEFAULT_GRID),  # noqa: B006 - jsonargparse schema default; copied
        image_loss_weight: float = 1.0,
        scorer_min_queries: int = 1,
        choose_taxonomy: bool = False,
        layer_decay: float = 1.0,
        init_from: str | None = None,
        wise_ft: bool = False,
        wise_ft_grid: list[float] = [0.0, 0.25, 0.5, 0.75, 1.0],  # noqa: B006 - jsonargparse schema default
        protocol: EvalProtocol | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "protocol"])
        if lr <= 0 or encoder_lr <= 0:
            raise ValueError(f"learning rates must be > 0, got lr={lr}, encoder_lr={encoder_lr}")
        check_layer_decay(layer_decay)
        # WiSE-FT's pretrained side: the towers as built from their names, before any weight is loaded
        self.wise_ft = WiseFTSelection(net, wise_ft_grid, scorer_min_queries) if wise_ft else None
        self.start_from(net, init_from)  # loaded now, or by use_network once the network is adapted
        if choose_scorer and not network_signals(net):
            raise ValueError(
                "model.choose_scorer needs model.net.route_novel_categories, image_evidence or lexical_signal: true "
                "(a signal whose weight is chosen: the frozen title match, the image-only tower, BM25)"
            )
        if net.image_evidence and not image_loss_weight > 0:
            raise ValueError(
                f"model.image_loss_weight must be > 0 with model.net.image_evidence (it trains the image-only "
                f"head), got {image_loss_weight}"
            )
        self.scorer_selection = self._scorer_selection(net)
        self.lexical_query = None  # the lexical side of this evaluation's queries (ClipIta.lexical_query)
        self.kept_retrieval: dict | None = None  # a scorer choice kept instead of re-chosen (see keep_scorer)
        self.net = net
        self.loss = InfoNCELoss() if loss is None else loss
        LOSSES.check(type(self.loss).__name__)  # an unregistered loss class is refused, naming the registered
        metric = lambda: CategoryRetrievalMetrics(max_rank=eval_max_rank, ap_normalization="min_r_k")  # noqa: E731
        self.metrics = torch.nn.ModuleDict({"val": metric(), "test": metric()})
        self.queries = QueryTable()  # the protocol's queries, encoded for the network (set_protocol)
        self.per_query: dict[
            str, dict[str, torch.Tensor]
        ] = {}  # stage -> {metric: [Q]} of the last evaluation
        self.rankings: dict[str, torch.Tensor] = {}  # stage -> [Q, max_rank] product indices (error analysis)
        self.protocol: EvalProtocol | None = None
        self._protocol_given = protocol is not None  # else setup reads the DataModule's
        if protocol is not None:
            self.set_protocol(protocol)

    def _scorer_selection(self, net: ClipIta) -> ScorerSelection | None:
        """The validation-time chooser of ``net``'s signal weights (None without ``choose_scorer`` or signals)."""
        h, signals = self.hparams, network_signals(net)
        if not (h.choose_scorer and signals):
            return None
        return ScorerSelection(h.scorer_grid, signals, h.scorer_min_queries, h.choose_taxonomy)

    def use_network(self, net: ClipIta) -> None:
        """Replace the network before anything is fitted or evaluated (``clipita.modalities`` rebuilds an
        ``adapt_modalities`` network for the catalogue's modalities); the scorer choice follows its signals (a
        signal left out, e.g. the title match without titles, is not chosen)."""
        self.net = net
        if self._init_from:  # an adapt_modalities stage 2: load into the network rebuilt for the catalogue
            self.load_init_from(net)
        self.scorer_selection = self._scorer_selection(net)
        if self.protocol is not None:  # the new network's trained set, attribute order and query features
            self.set_protocol(self.protocol)

    # ----------------------------------------------------------------------------------------- the protocol
    def setup(self, stage: str) -> None:
        if self._trainer is not None:
            self.check_batch_source()
        if self._init_from:  # still not loaded: no adaptation happened, so the difference is refused here
            self.load_init_from(self.net)
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None:
            return
        if not self._protocol_given:
            self.set_protocol(dm.protocol(self.net.category_text))
        elif problem := dm.protocol(self.net.category_text).difference(self.protocol):  # another split's
            raise ValueError(
                f"the evaluation protocol given to the module is not its DataModule's: {problem}"
            )
        statistics = dm.lexical_statistics  # BM25 statistics of the training split: feature-store data
        if self.net.lexical is not None and statistics is not None:
            if float(statistics["avg_len"]) > 0:
                self.net.lexical.set_statistics(statistics)
            else:  # no title or attribute text in training (a folder tree, an image-only table): no BM25 term
                rank_zero_info("lexical signal off: the training products have no title or attribute text")

    def set_protocol(self, protocol: EvalProtocol) -> None:
        """Evaluate on ``protocol``: encode every query text once (frozen text tower), take its settings (validation
        splits the leaves by what the network trains on: :attr:`EvalProtocol.validation_settings`), and give the
        network its trained set (the seen categories) and the catalogue's attribute order."""
        if protocol.text_style != self.net.category_text:
            raise ValueError(
                f"the protocol's queries are {protocol.text_style!r} texts but model.net.category_text is "
                f"{self.net.category_text!r}: build the protocol with the network's style"
            )
        self.protocol = protocol
        self.net.attribute_names = list(protocol.attribute_names)
        self.queries.fill(protocol, self.net)
        self.net.set_trained_categories(protocol.seen_paths)

    # -------------------------------------------------------------------------------------------------- steps
    def on_train_epoch_start(self) -> None:
        """Set the sampler's epoch from ``current_epoch``: Lightning's own ``set_epoch`` counts *finished* epochs,
        which lags by one after resuming from a checkpoint written at validation end. The loader's iterator is made
        after this hook."""
        sampler = getattr(self.trainer.train_dataloader, "sampler", None) if self._trainer else None
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.current_epoch)

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        """Reseed torch from (seed, epoch, batch index) before every step (:mod:`lightning_modules.step_seed`): dropout
        and the sampled training levels of a step are the same whether the run went straight through or resumed from
        a checkpoint written at an epoch's end or in its middle (whatever else drew random numbers in between)."""
        seed_step(self.current_epoch, batch_idx)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net.encode_product(batch)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        check_finite(batch, "train")
        views = self.net.encode_product_views(batch)
        products = views["product"]
        rank, world_size = (self.global_rank, self.trainer.world_size) if self._trainer else (0, 1)
        targets = training_targets(batch["category_ids"], self.hparams.train_category_level, rank, world_size)
        categories = self.queries.category_embeddings(self.net, targets)
        extra = {}
        if getattr(self.loss, "table_weight", 0) > 0:  # every category seen in training, as negatives
            ids = self.queries.seen_ids
            extra = {"table_embeddings": self.queries.category_embeddings(self.net, ids), "table_ids": ids}

        def contrastive(view: torch.Tensor) -> torch.Tensor:
            return self.loss(
                view, categories, target_ids=targets, product_category_ids=batch["category_ids"], **extra
            )

        loss = contrastive(products)
        if "image" in views:  # the image-only tower, against the same category tower
            image_loss = contrastive(views["image"])
            self.log("train/image_loss", image_loss.detach(), batch_size=products.shape[0])
            loss = loss + self.hparams.image_loss_weight * image_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at step {self.global_step}; products in the batch: "
                f"{list(batch['product_id'])[:20]}"
            )
        bs = products.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/temperature", 1.0 / self.loss.logit_scale().detach(), batch_size=bs)
        return loss

    def query_embeddings(self) -> torch.Tensor:
        """Retrieval vectors of every query (:meth:`QueryTable.query_vectors`)."""
        return self.queries.query_vectors(self.net)

    def _choosing(self, stage: str) -> bool:
        sanity = self._trainer is not None and self.trainer.sanity_checking
        return stage == "val" and self.scorer_selection is not None and not sanity

    def _eval_start(self, stage: str) -> None:
        if stage == "test":
            self.apply_wise_ft()
            if self.net.scorer.weights.wise_ft_alpha is not None:
                self.print(describe_wise_ft(self.net.retrieval))
        metric = self.metrics[stage]
        metric.reset()
        if self.protocol is None:
            raise ValueError("no evaluation protocol: pass model protocol=... or evaluate with a DataModule")
        settings = self.protocol.validation_settings if stage == "val" else self.protocol.settings
        texts, paths = self.queries.texts, self.queries.paths
        with torch.no_grad():
            masks = {k: torch.from_numpy(v).to(self.device) for k, v in settings.items()}
            metric.set_queries(self.query_embeddings(), masks)
            self.lexical_query = self.net.lexical_query(texts, paths)
        if self._choosing(stage):
            self.scorer_selection.start(self.net, texts, paths, self.queries.frozen_features(self.net))
        if self._choosing_wise_ft(stage):
            self.wise_ft.start(self.net, self.query_embeddings)
        if stage == "test" and CHOICE_KEY in self.net.scorer.weights.evidence:
            self.print(f"test scores with the {describe(self.net.retrieval)}")

    def _eval_step(self, stage: str, batch: dict) -> None:
        check_finite(batch, stage)
        vectors = self.net.encode_product_for_retrieval(batch)
        metric, tokens = self.metrics[stage], batch.get("lexical_tokens")
        if (
            self.lexical_query is not None and tokens is not None
        ):  # dense + the chosen BM25 term: ClipIta.score
            scores = self.net.score(metric.query_embeddings, vectors, self.lexical_query, tokens)
            metric.update_scores(scores, batch["category_ids"])
        else:
            metric.update(vectors, batch["category_ids"])
        if self._choosing(stage):
            self.scorer_selection.update(vectors, batch["category_ids"], batch)
        if self._choosing_wise_ft(stage):
            self.wise_ft.update(self.net, batch, self.lexical_query)

    def keep_scorer(self, record: dict) -> None:
        """Score with a scorer choice made earlier (e.g. by a fit on pseudo-novel validation) and keep it: validation
        then still reports ``val/chosen/*`` under those weights, but no longer re-chooses them (a refit on every
        training leaf has no novel validation category to choose from)."""
        self.kept_retrieval = dict(record)
        self.net.retrieval = dict(record)

    def _choose_scorer(self) -> None:
        """Choose the scorer's weights on this validation epoch and keep them in ``net.retrieval`` (or, after
        :meth:`keep_scorer`, measure the kept ones)."""
        selection = self.scorer_selection
        titles = torch.tensor(float(selection.titles_present), device=self.device)
        if self._trainer is not None and self.trainer.world_size > 1:
            titles = self.trainer.strategy.reduce(titles, reduce_op="sum")
        record = selection.compute(titles_present=int(titles.item()), kept=self.kept_retrieval)
        record[CHOICE_KEY]["epoch"] = int(self.current_epoch)
        if self.kept_retrieval is None:
            self.net.scorer.weights = self.net.scorer.weights.merged(record)
        shown = self.net.scorer.weights
        keys = [weight_key(side, signal) for signal in selection.points[0] for side in ("novel", "seen")]
        for key in [*keys, *TREE]:
            if getattr(shown, key) is not None:
                self.log(f"val/scorer_{key}", getattr(shown, key), sync_dist=False)
        for name in ("all", "seen", "novel"):
            value = record[CHOICE_KEY].get(f"val_chosen_map@10_{name}")
            if value is not None:
                self.log(f"val/chosen/{name}/map@10", value, sync_dist=False)

    def on_fit_end(self) -> None:
        if self.scorer_selection is not None and CHOICE_KEY in self.net.scorer.weights.evidence:
            self.print(describe(self.net.retrieval))
        if EVIDENCE_KEY in self.net.scorer.weights.evidence:
            self.print(describe_wise_ft(self.net.retrieval))

    def _eval_end(self, stage: str) -> None:
        if self._choosing(stage):
            self._choose_scorer()
        if self._choosing_wise_ft(stage):
            novel = self.net.novel_mask(self.queries.texts, self.queries.paths)
            weights = self.choose_wise_ft(novel)
            self.net.scorer.weights = weights
            self.log("val/wise_ft_alpha", weights.alpha, sync_dist=False)
        if stage == "test":
            self.restore_fine_tuned()
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

    def on_predict_epoch_start(self) -> None:
        self.apply_wise_ft()

    def on_predict_epoch_end(self) -> None:
        self.restore_fine_tuned()

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {
            "product_id": list(batch["product_id"]),
            "embedding": self.net.encode_product_for_retrieval(batch).float().cpu(),
        }

    def configure_optimizers(self):
        h = self.hparams
        groups = parameter_groups(self, self.net, h.lr, h.encoder_lr, h.layer_decay)
        optimizer = torch.optim.AdamW(groups, weight_decay=h.weight_decay)
        if h.scheduler == "none" and h.warmup_steps == 0:
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = warmup_schedule(optimizer, h.scheduler, h.warmup_steps, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Write the checkpoint contract (:mod:`lightning_modules.checkpointing`): the network's config, trained set
        and retrieval record; frozen pretrained towers are left out and rebuilt from their names."""
        write_checkpoint(checkpoint, self.net, prefix="net.", loss=self.loss, start=self.wise_ft_start())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restore_module_state(checkpoint, self.net, self.state_dict(), prefix="net.")
        self.restore_wise_ft_start(checkpoint)
