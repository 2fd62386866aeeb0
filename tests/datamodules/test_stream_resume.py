"""Resuming the raw training stream in the middle of an epoch gives the batches (ids and augmented pixels) the
uninterrupted run gives from there: on the loader itself (0 and 2 workers), and through Lightning checkpoints of
the real DataModule written mid-epoch and at an epoch's end."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from test_augmentation import ramped
from test_shard_pipeline import TREE, write_shards

from datamodules.augmentation import CropFlip
from datamodules.catalogue_datamodule import CatalogueDataModule
from datamodules.shard_pipeline import build_shard_pipeline
from datamodules.training_stream import batches_before, stream_share

SIZES = [9, 14, 11]
BATCH = 4
SAMPLES = sum(SIZES)  # 34 -> 9 batches per epoch


def make_loader(
    urls: list[str], num_workers: int, resampled: bool = True, rank: int = 0, world_size: int = 1
):
    return build_shard_pipeline(
        urls, ramped, TREE, BATCH, training=True, epoch_samples=SAMPLES * world_size, shuffle_buffer=6, seed=3,
        num_workers=num_workers, resampled=resampled, augmentation=CropFlip(0.5), rank=rank, world_size=world_size,
    )  # fmt: skip


def fingerprint(batch: dict) -> tuple:
    return tuple(batch["product_id"]), batch["image"].clone()


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )


def test_stream_shares_and_skips_add_up() -> None:
    for num_batches in (1, 7, 9):
        for streams in (1, 2, 3):
            assert sum(stream_share(num_batches, s, streams) for s in range(streams)) == num_batches
            for first in range(num_batches + 1):
                assert sum(batches_before(first, s, streams) for s in range(streams)) == first


@pytest.mark.parametrize(
    ("num_workers", "resampled", "rank", "world_size"),
    [(0, True, 0, 1), (2, True, 0, 1), (2, False, 0, 1), (2, True, 1, 2)],
)
def test_a_loader_resumed_mid_epoch_gives_the_uninterrupted_batches(
    tmp_path: Path, num_workers: int, resampled: bool, rank: int, world_size: int
) -> None:
    """Rank 1 of 2 resumes from the same (epoch, batch) state as rank 0 (rank 0 writes the checkpoint)."""
    urls, _ = write_shards(tmp_path, SIZES)
    reference = make_loader(urls, num_workers, resampled, rank, world_size)
    epochs = [[fingerprint(b) for b in reference] for _ in range(2)]
    assert len(epochs[0]) == len(reference) == 9
    assert not same(epochs[0], epochs[1])
    for epoch, first in [(0, 3), (0, 4), (1, 5), (0, 9)]:
        resumed = make_loader(urls, num_workers, resampled, rank, world_size)
        resumed.load_state_dict({"epoch": epoch, "batches": first, "num_batches": 9})
        rest = [fingerprint(b) for b in resumed]
        if first == 9:  # the checkpoint was written after the epoch's last batch: the next epoch, whole
            assert same(rest, epochs[epoch + 1])
            continue
        assert same(rest, epochs[epoch][first:]), (epoch, first)
        if epoch == 0:
            assert same([fingerprint(b) for b in resumed], epochs[1])  # and the epoch after it, whole


def test_the_state_counts_the_batches_handed_out(tmp_path: Path) -> None:
    urls, _ = write_shards(tmp_path, SIZES)
    loader = make_loader(urls, 0)
    assert loader.state_dict() == {"epoch": 0, "batches": 0, "num_batches": 9}
    iterator = iter(loader)
    for _ in range(4):
        next(iterator)
    assert loader.state_dict()["epoch"] == 0 and loader.state_dict()["batches"] == 4
    list(iterator)
    list(loader)  # epoch 1, whole
    assert loader.state_dict() == {"epoch": 1, "batches": 9, "num_batches": 9}
    loader.load_state_dict({"epoch": 1, "batches": 2, "num_batches": 9})
    assert loader.state_dict()["batches"] == 2  # the next iteration's start, before it runs
    assert len(list(loader)) == 7


def test_another_epoch_length_resumes_at_the_next_epoch_with_a_warning(tmp_path: Path) -> None:
    urls, _ = write_shards(tmp_path, SIZES)
    reference = make_loader(urls, 0)
    list(reference)
    epoch1 = [fingerprint(b) for b in reference]
    resumed = make_loader(urls, 0)
    with pytest.warns(UserWarning, match="batches per epoch"):
        resumed.load_state_dict({"epoch": 0, "batches": 5, "num_batches": 17})
    assert same([fingerprint(b) for b in resumed], epoch1)


class Recorder(L.LightningModule):
    """Records every training batch's ids and image sum; a linear layer so there is something to optimise."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.seen: list[tuple[int, tuple[str, ...], float]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append((self.global_step, tuple(batch["product_id"]), float(batch["image"].sum())))
        return self.layer(batch["image"].mean(dim=(2, 3))).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def sample_datamodule(work_dir: Path) -> CatalogueDataModule:
    """The raw path of the real DataModule over the built-in sample (the 'tower' is a picklable test transform)."""
    towers = SimpleNamespace(image_encoder=SimpleNamespace(transform=ramped), text_encoder=object())
    return CatalogueDataModule(
        work_dir=str(work_dir), sample_products=160, shard_size=40, batch_size=8, num_workers=2,
        use_features=False, encoders=towers,
    )  # fmt: skip


def fit(work_dir: Path, root: Path, ckpt_path: str | None = None, every: int = 0) -> Recorder:
    callbacks = []
    if every:  # mid-epoch checkpoints every `every` steps, and one at each epoch's end
        callbacks += [
            L.pytorch.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1),
            L.pytorch.callbacks.ModelCheckpoint(dirpath=root, every_n_epochs=1, save_top_k=-1),
        ]
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=bool(every), callbacks=callbacks, default_root_dir=root,
    )  # fmt: skip
    module = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error", L.pytorch.utilities.warnings.PossibleUserWarning)  # "not resumable"
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        trainer.fit(module, datamodule=sample_datamodule(work_dir), ckpt_path=ckpt_path)
    return module


@pytest.mark.slow
def test_lightning_resumes_the_datamodule_stream_mid_epoch_and_after_an_epoch_end(tmp_path: Path) -> None:
    straight = fit(tmp_path / "work", tmp_path / "ckpt", every=5).seen
    per_epoch = len(straight) // 2
    assert [step for step, _, _ in straight] == list(range(2 * per_epoch)) and per_epoch > 6
    mid_second = next(s for s in range(per_epoch + 1, 2 * per_epoch) if s % 5 == 0)
    for step in (5, per_epoch, mid_second):  # mid epoch 0, the end of epoch 0, mid epoch 1
        checkpoint = next((tmp_path / "ckpt").glob(f"*step={step}.ckpt"))
        resumed = fit(tmp_path / "work", tmp_path / f"resumed{step}", ckpt_path=str(checkpoint)).seen
        assert [s for s, _, _ in resumed] == list(range(step, 2 * per_epoch))
        assert [ids for _, ids, _ in resumed] == [ids for _, ids, _ in straight[step:]], step
        assert [x for _, _, x in resumed] == pytest.approx([x for _, _, x in straight[step:]], rel=1e-6)
