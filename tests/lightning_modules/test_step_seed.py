"""A streamed fine-tune interrupted in the middle of an epoch and resumed from that checkpoint ends with the weights of
the uninterrupted fit, exactly: the batches resume where they stopped (``datamodules/training_stream.py``), and the
module's per-step randomness (head dropout, the sampled training levels of ``train_category_level: random``) is a
function of (seed, epoch, batch index) (:mod:`lightning_modules.step_seed`), not of the steps run since a reseed."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from synthetic_catalogue import tiny_net

from datamodules.catalogue_datamodule import CatalogueDataModule
from lightning_modules import ClipItaModule, InfoNCELoss
from lightning_modules.step_seed import step_seed

EPOCHS = 2


class CountSteps(L.Callback):
    """Counts the training steps a fit runs (a resumed fit runs only those after its checkpoint)."""

    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_end(self, *args) -> None:
        self.steps += 1


def fit(tmp_path: Path, name: str, ckpt_path: str | None = None, every: int = 0) -> tuple[dict, int, int]:
    """Fine-tune the tiny net (trained image tower, dropout 0.3, random levels) on the raw sample stream: its final
    weights, the number of steps per epoch and the number of steps this fit ran."""
    torch.manual_seed(0)  # the same initial weights in every run
    net = tiny_net(train_image_encoder=True, dropout=0.3)
    module = ClipItaModule(net, InfoNCELoss(temperature=0.1), lr=1e-2, encoder_lr=1e-2, scheduler="none")
    assert module.hparams.train_category_level == "random"
    dm = CatalogueDataModule(
        work_dir=str(tmp_path / "work"), sample_products=80, shard_size=20, batch_size=8, num_workers=0,
        use_features=False, encoders=net,
    )  # fmt: skip
    counter = CountSteps()
    callbacks = [counter]
    if every:
        callbacks.append(
            L.pytorch.callbacks.ModelCheckpoint(tmp_path / name, every_n_train_steps=every, save_top_k=-1)
        )
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=bool(every), callbacks=callbacks, limit_val_batches=0, num_sanity_val_steps=0,
        default_root_dir=tmp_path / name,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|val_dataloader).*")
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
    return weights, trainer.num_training_batches, counter.steps


def test_step_seeds_differ_by_seed_epoch_and_batch() -> None:
    seeds = {step_seed(s, e, b) for s in (0, 1) for e in (0, 1, 2) for b in range(50)}
    assert len(seeds) == 2 * 3 * 50 and all(0 <= x < 2**63 for x in seeds)


@pytest.mark.slow
def test_a_fine_tune_resumed_mid_epoch_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")  # as seed_everything sets it
    straight, per_epoch, steps = fit(tmp_path, "straight", every=3)
    assert per_epoch > 3 and steps == EPOCHS * per_epoch  # step 3 is in the middle of the first epoch
    checkpoint = next((tmp_path / "straight").glob("epoch=0-step=3.ckpt"))
    resumed, _, resumed_steps = fit(tmp_path, "resumed", ckpt_path=str(checkpoint))
    assert resumed_steps == steps - 3  # it ran from the checkpoint on
    assert straight.keys() == resumed.keys()
    different = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    assert different == []
