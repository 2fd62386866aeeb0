"""The ``clipita`` command: LightningCLI subcommands (fit/validate/test/predict) plus the project's own commands.

    clipita fit --config experiments/clip_ita.yaml [--trainer.devices 2 --trainer.strategy ddp ...]
    clipita test --config experiments/clip_ita.yaml --ckpt_path runs/clip_ita/.../checkpoints/last.ckpt
    clipita shard experiments/catalogues/fashion.yaml work/fashion/shards
    clipita encode experiments/clip_ita.yaml

Project commands are plain library functions; their typed signatures and docstrings are their ``--help`` (through
jsonargparse). A target named ``main`` instead takes the raw argument list (for commands with positional/short
options, like ``clipita search "Footwear > Shoes" -k 10``).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Callable

# the offline encoders load from local folders; never let a library wander off to a hub unasked
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # the frozen encoders, on purpose

# command -> (target, what it does: one line of `clipita --help`)
PROJECT_COMMANDS: dict[str, tuple[str, str]] = {
    "shard": (
        "datamodules.sharding:shard_catalogue",
        "split a catalogue into WebDataset shards + manifest.json",
    ),
    "encode": ("clipita.encode:encode", "encode every product once with a fit config's frozen encoders"),
    "leaderboard": (
        "clipita.leaderboard:leaderboard",
        "score models and baselines over split seeds, with tests",
    ),
    "sweep": ("clipita.sweep.command:sweep", "run an Optuna study over a fit config's options"),
    "index": ("clipita.retrieval.index:index", "embed a catalogue's products with a trained checkpoint"),
    "search": ("clipita.retrieval.search:main", "rank indexed products for a category name"),
    "gallery": ("clipita.retrieval.gallery:gallery", "HTML page comparing several indexes' top results"),
}
LIGHTNING_COMMANDS: dict[str, str] = {
    "fit": "train a model from a config (LightningCLI; --test_after_fit tests the best checkpoint)",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split",
    "predict": "product embeddings of the test split from a checkpoint, in memory (`clipita index` writes them)",
}
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, OSError)  # OSError: missing files too


def _load(target: str) -> Callable:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def make_cli(args: list[str] | None = None) -> None:
    """Run a LightningCLI subcommand (fit/validate/test/predict) over ``ClipItaModule`` and
    ``CatalogueDataModule``: the ``clipita`` command's own; apps build objects with :func:`clipita.factory.build`,
    which parses with the same parser (:class:`clipita.factory.ConfigParserCLI`)."""
    from clipita.factory import CLI_KWARGS, ConfigParserCLI, cli_classes

    class ClipitaCLI(ConfigParserCLI):
        def check_catalogue(self) -> None:
            """A model reading a modality the whole catalogue lacks stops here, before any image is encoded."""
            from clipita.modalities import check_modalities

            check_modalities(self.model, self.datamodule, wait=self.trainer.global_rank != 0)

        def before_validate(self) -> None:
            self.check_catalogue()

        def before_test(self) -> None:
            self.check_catalogue()

        def before_predict(self) -> None:
            self.check_catalogue()

        def before_fit(self) -> None:
            """Check the catalogue's modalities; then ``--ckpt_path last``: checkpoints live in versioned run
            folders (``runs/<name>/version_N/checkpoints``), which Lightning's own lookup (the *new* version's
            folder) cannot see; resolve it to the newest ``last.ckpt`` of this run name."""
            self.check_catalogue()
            config = self.config_init[self.subcommand]
            if config.get("ckpt_path") != "last":
                return
            from lightning.pytorch.callbacks import ModelCheckpoint

            from lightning_modules.checkpointing import find_last_checkpoint

            fixed = any(
                isinstance(cb, ModelCheckpoint) and cb.dirpath is not None for cb in self.trainer.callbacks
            )
            root = getattr(self.trainer.logger, "root_dir", None)
            if not fixed and root:
                found = find_last_checkpoint(root)
                if found is not None:
                    config["ckpt_path"] = str(found)

        def after_fit(self) -> None:
            config = self.config.get(self.subcommand, {})
            trainer, model, datamodule = self.trainer, self.model, self.datamodule
            if config.get("refit_after_choice"):
                from clipita.refit import fit_args, refit_after_choice

                tokens = fit_args(sys.argv[1:] if args is None else args, self.subcommand)
                trainer, model, datamodule = refit_after_choice(tokens, model, trainer, datamodule)
            if config.get("test_after_fit"):
                ckpt = (
                    "best"
                    if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path
                    else None
                )
                trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)

    ClipitaCLI(*cli_classes(), args=args, **CLI_KWARGS)


def usage() -> str:
    lines = {**LIGHTNING_COMMANDS, **{name: help for name, (_, help) in PROJECT_COMMANDS.items()}}
    return (
        "usage: clipita [--debug] <command> ...\n\n"
        + "".join(f"  {name:<12} {help}\n" for name, help in lines.items())
        + "\n`clipita <command> --help` documents every option; --debug (or CLIPITA_DEBUG=1) shows tracebacks."
    )


def main(argv: list[str] | None = None) -> None:
    """Run one command; a user's mistake (bad schema, missing file or column, bad value) ends in one line naming it
    and exit status 1, with the traceback only under ``--debug`` or ``CLIPITA_DEBUG=1``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("CLIPITA_DEBUG", "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        _run(argv)
    except USER_ERRORS as error:
        if debug:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"clipita: error: {message}", file=sys.stderr)
        raise SystemExit(1) from None


def _run(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    command = argv[0]
    if command in PROJECT_COMMANDS:
        target = _load(PROJECT_COMMANDS[command][0])
        if target.__name__ == "main":
            target(argv[1:])
            return
        from jsonargparse import CLI

        CLI(target, args=argv[1:], prog=f"clipita {command}")
        return
    if command not in LIGHTNING_COMMANDS:
        raise SystemExit(f"clipita: unknown command {command!r}\n\n{usage()}")
    make_cli(argv)


if __name__ == "__main__":
    main()
