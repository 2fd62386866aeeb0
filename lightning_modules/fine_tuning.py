"""The LightningModule's fine-tuning side: trained towers never read cached features, a fit may start from another
run's network (``model.init_from``, whose heads as loaded become WiSE-FT's start side), and the WiSE-FT mix chosen on
validation is what test and predict serve (:mod:`lightning_modules.wise_ft`).

:class:`FineTuning` is a base of :class:`~lightning_modules.clip_ita_module.ClipItaModule`; it reads the module's
``net``, ``wise_ft`` (a :class:`~lightning_modules.wise_ft.WiseFTSelection` or None), ``kept_retrieval`` and
``queries``.
"""

from __future__ import annotations

from typing import Any

from clipita_core.weights import WISE_FT_ALPHA, RetrievalWeights

from .checkpointing import KEY, START_KEY, init_from_checkpoint
from .wise_ft import EVIDENCE_KEY, State, apply_wise_ft, current_state, set_mix


class FineTuning:
    """Hooks of a module whose network may train its towers."""

    def check_batch_source(self) -> None:
        """Refuse to fit trained towers on cached features (they come from the frozen towers, and a batch of
        features never reaches the tower): one line naming the options. Called before the features are encoded."""
        dm = self.trainer.datamodule if self._trainer else None
        hparams = getattr(dm, "hparams", None) or {}
        if self.trainer.state.fn != "fit" or not hparams.get("use_features", False):
            return
        towers = [n for n in ("image_encoder", "text_encoder") if getattr(self.net, n, None) is not None]
        trained = [n.split("_")[0] for n in towers if getattr(self.net, n).trainable]
        if trained:
            raise ValueError(
                f"model.net trains the {' and '.join(trained)} tower but data.use_features is true (cached features "
                "of the frozen towers): set --data.use_features false, or train the heads only"
            )

    def start_from(self, net: Any, init_from: str | None) -> None:
        """``model.init_from``: load its weights into ``net`` now, or wait for the network an ``adapt_modalities``
        fit rebuilds for the catalogue (:meth:`load_init_from`, from ``use_network`` or ``setup``)."""
        record = init_from_checkpoint(net, init_from, wait_for_adaptation=True) if init_from else None
        self._init_from = init_from if init_from and record is None else None
        if record is not None:
            self._loaded(net, record)

    def load_init_from(self, net: Any) -> None:
        """Load the waiting ``model.init_from`` weights into ``net`` (once)."""
        record = init_from_checkpoint(net, self._init_from)
        self._init_from = None
        self._loaded(net, record)

    def _loaded(self, net: Any, record: dict) -> None:
        """WiSE-FT's start side: the network's heads as just loaded from ``init_from``, and the scorer weights its
        run chose for it (served with ``alpha = 0``)."""
        if self.wise_ft is not None:
            self.wise_ft.set_start(net, RetrievalWeights.from_dict(record.get("retrieval")))

    def choose_wise_ft(self, novel: Any) -> RetrievalWeights:
        """The epoch's WiSE-FT choice merged into the scorer weights. ``alpha = 0`` from ``init_from`` serves the
        start network as its own run chose to score it (the scorer this fit chose was chosen for the fine-tuned
        network), so the fallback is exactly the stage-1 model."""
        choice = self.wise_ft.compute(novel, self.current_epoch)
        base = self.net.scorer.weights
        if choice[WISE_FT_ALPHA] == 0.0 and self.wise_ft.start_weights is not None:
            base = self.wise_ft.start_weights
            choice[EVIDENCE_KEY] = {**choice[EVIDENCE_KEY], "scorer": "the start network's (init_from)"}
        return base.merged(choice)

    def wise_ft_start(self) -> State | None:
        """The start values of the non-tower tensors the mix covers (the checkpoint keeps them), None without."""
        return self.wise_ft.start_heads if self.wise_ft is not None and self.wise_ft.start_heads else None

    def restore_wise_ft_start(self, checkpoint: dict) -> None:
        """The module's ``on_load_checkpoint``: a checkpoint's heads start side (:data:`START_KEY`) replaces this
        module's, so a test from a checkpoint mixes as :func:`~lightning_modules.checkpointing.load_model` does."""
        start = (checkpoint.get(KEY) or {}).get(START_KEY)
        if start and self.wise_ft is not None:
            self.wise_ft.start_heads = {k: v.detach().clone() for k, v in start.items()}

    def prepare_data(self) -> None:
        self.check_batch_source()

    def _choosing_wise_ft(self, stage: str) -> bool:
        trainer = self._trainer
        return (
            stage == "val"
            and self.wise_ft is not None
            and bool(self.queries.texts)
            and not (trainer is not None and trainer.sanity_checking)
            and WISE_FT_ALPHA not in (self.kept_retrieval or {})
        )

    def apply_wise_ft(self) -> None:
        """Serve the WiSE-FT mix recorded in ``net.retrieval`` (test, predict), keeping the fine-tuned weights to
        put back by :meth:`restore_fine_tuned`."""
        self.restore_fine_tuned()
        if self.wise_ft is not None and self.net.scorer.weights.alpha != 1.0:
            start = {k: v.to(self.device) for k, v in self.wise_ft.origin.items()}
            self._fine_tuned = current_state(self.net, start)
            apply_wise_ft(self.net, start)

    def restore_fine_tuned(self) -> None:
        fine_tuned = getattr(self, "_fine_tuned", None)
        if fine_tuned:
            set_mix(self.net, {}, fine_tuned, 1.0)
        self._fine_tuned = None
