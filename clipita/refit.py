"""Refit after choosing the scorer: ``refit_after_choice: true`` in a ``clipita fit`` config.

``refit_after_choice: true`` in a fit config (the adaptive recipe) makes one fit two: the first, with pseudo-novel
validation (``data.pseudo_novel_fraction``), chooses the scorer (:mod:`lightning_modules.scorer_choice`); the
second trains again from scratch on *every* training leaf (``pseudo_novel_fraction`` 0, the same seed, epochs and
test split) and keeps that choice instead of re-choosing (:meth:`ClipItaModule.keep_scorer`), so the leaves held out
to choose the scorer are no longer novel to the model that is tested, indexed and searched. It lives here, at the
level that builds Trainers and DataModules, and not in a callback: the second fit needs a new split (a new
DataModule) and a fresh network, optimiser and schedule, which a callback inside the first ``trainer.fit`` cannot
give. ``clipita fit`` and :func:`clipita.experiment.fit_and_test` both call :func:`refit_after_choice`.

A stage 2 (``model.init_from``) refits from stage 1's refit (:func:`refit_start`); when its fit chose WiSE-FT
``alpha = 0`` (serve the start network), that refit would train a side it never serves, so it trains no step and its
checkpoint is the start network with the kept choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from clipita_core.weights import WISE_FT_ALPHA

NAMED_LOGGERS = ("CSVLogger", "TensorBoardLogger")  # loggers with a save_dir/name/version run folder


REFIT_OVERRIDES: tuple[str, ...] = ("--data.pseudo_novel_fraction", "0")


def chosen_retrieval(module: Any, best_checkpoint: str | None) -> dict[str, Any]:
    """The scorer choice a test of this fit would use: the best checkpoint's retrieval record (the module's own
    when there is no checkpoint)."""
    if not best_checkpoint:
        return dict(module.net.retrieval)
    from lightning_modules.checkpointing import read_record

    checkpoint = torch.load(best_checkpoint, map_location="cpu", weights_only=True)
    return dict(read_record(checkpoint, best_checkpoint).get("retrieval", {}))


def refit_version_overrides(trainer: Any) -> list[str]:
    """Send the refit's logs and checkpoints to a sibling run folder ``<version>_refit`` of the first fit's."""
    logger = trainer.logger
    if logger is None or type(logger).__name__ not in NAMED_LOGGERS:
        return []
    version = logger.version
    name = f"version_{version}_refit" if isinstance(version, int) else f"{version}_refit"
    return ["--trainer.logger.init_args.version", name]


def fit_args(args: Sequence[str], subcommand: str | None = None) -> list[str]:
    """Command-line tokens of a fit, less the subcommand and the fit-only ``--ckpt_path`` (a refit starts fresh)."""
    out, tokens, i = [], list(args), 0
    if subcommand and subcommand in tokens:
        tokens.remove(subcommand)
    while i < len(tokens):
        if tokens[i] == "--ckpt_path":
            i += 2
            continue
        if not tokens[i].startswith("--ckpt_path="):
            out.append(tokens[i])
        i += 1
    return out


def refit_start(init_from: str | None) -> Path | None:
    """Where a stage 2's refit starts: stage 1's refit, when the stage-1 run it started from refit (a sibling
    ``<version>_refit`` run folder with a checkpoint; its tested one). The stage-2 fit validated against stage 1's
    choice run, whose network never trained on the pseudo-novel leaves; the refit chooses nothing, so it can start
    from the stage-1 network that trained on every leaf, and a WiSE-FT ``alpha`` of 0 then serves exactly stage 1's
    refit (the head-only recipe's served model). None: start where the fit started."""
    if not init_from:
        return None
    from lightning_modules.checkpointing import tested_checkpoint

    run = Path(init_from).parent.parent  # <run>/checkpoints/<name>.ckpt
    sibling = run.with_name(f"{run.name}_refit")
    return tested_checkpoint(sibling) if sibling.is_dir() else None


def refit_after_choice(
    args: Sequence[str], module: Any, trainer: Any, datamodule: Any
) -> tuple[Any, Any, Any]:
    """Train again on every training leaf, keeping the scorer the fit just made chose; returns the new
    ``(trainer, module, datamodule)``.

    The refit's objects come from :func:`clipita.factory.build`; ``args`` are the first fit's command-line tokens (config + overrides, no subcommand); the refit adds
    ``--data.pseudo_novel_fraction 0`` and a ``<version>_refit`` run folder; a stage 2 (``model.init_from``) refits from
    stage 1's refit when there is one (:func:`refit_start`). Its validation still logs
    ``val/chosen/*`` (under the kept weights), so the config's checkpoint monitor works unchanged.
    """
    from clipita.factory import build
    from clipita.modalities import check_modalities

    if not getattr(module.hparams, "choose_scorer", False):
        raise ValueError("refit_after_choice needs model.choose_scorer: true (there is no choice to keep)")
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else None
    record = chosen_retrieval(module, best or None)
    held = datamodule.manifest.pseudo_novel_categories if datamodule.manifest is not None else []
    if not held:
        print(
            "refit_after_choice: no pseudo-novel leaf was held out (data.pseudo_novel_fraction 0): no refit"
        )
        return trainer, module, datamodule
    start = refit_start(getattr(module.hparams, "init_from", None))
    stage = ["--model.init_from", str(start)] if start else []
    serves_start = start is not None and record.get(WISE_FT_ALPHA) == 0.0
    no_training = (
        ["--trainer.limit_train_batches", "0", "--trainer.num_sanity_val_steps", "0"] if serves_start else []
    )
    built = build(list(args) + list(REFIT_OVERRIDES) + refit_version_overrides(trainer) + stage + no_training)
    refit_trainer, refit_module, refit_dm = built.trainer, built.module, built.datamodule
    check_modalities(refit_module, refit_dm, wait=refit_trainer.global_rank != 0)
    refit_module.keep_scorer(record)
    refit_trainer.fit(refit_module, datamodule=refit_dm)
    if serves_start:
        _keep_start(refit_trainer)
        refit_module.print(
            f"refit: WiSE-FT alpha 0 was chosen, so the refit serves stage 1's refit {start} as it is (no training "
            "step: its fine-tuned side would never be served)"
        )
    else:
        refit_module.print(
            f"refit on every training leaf ({len(held)} pseudo-novel leaves back in training), scorer kept"
            + (f"; started from stage 1's refit {start}" if start else "")
        )
    return refit_trainer, refit_module, refit_dm


def _keep_start(trainer: Any) -> None:
    """The refit that trained nothing (WiSE-FT alpha 0 from stage 1's refit) still leaves the checkpoint a refit
    leaves: ``last.ckpt`` in its run folder, recorded as the checkpoint callback's best, so the test, ``clipita
    index`` and the leaderboard's public block load it as they load a trained refit's."""
    callback = trainer.checkpoint_callback
    if callback is None or not callback.dirpath:
        return
    path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    trainer.save_checkpoint(str(path))
    callback.best_model_path = callback.last_model_path = str(path)
