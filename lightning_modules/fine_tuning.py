"""The LightningModule's fine-tuning side: trained towers never read cached features, and the WiSE-FT mix chosen on
validation is what test and predict serve (:mod:`lightning_modules.wise_ft`).

:class:`FineTuning` is a base of :class:`~lightning_modules.clip_ita_module.ClipItaModule`; it reads the module's
``net``, ``wise_ft`` (a :class:`~lightning_modules.wise_ft.WiseFTSelection` or None), ``kept_retrieval`` and
``queries``.
"""

from __future__ import annotations

from clipita_core.weights import WISE_FT_ALPHA

from .wise_ft import apply_wise_ft, set_mix, tower_state


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
            self._fine_tuned = tower_state(self.net)
            pretrained = {k: v.to(self.device) for k, v in self.wise_ft.pretrained.items()}
            apply_wise_ft(self.net, pretrained)

    def restore_fine_tuned(self) -> None:
        fine_tuned = getattr(self, "_fine_tuned", None)
        if fine_tuned:
            set_mix(self.net, self.wise_ft.pretrained, fine_tuned, 1.0)
        self._fine_tuned = None
