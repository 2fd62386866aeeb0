"""The one factory: a ``clipita fit`` config (+ ``--key value`` overrides) to its Trainer, module and DataModule.

Every app that needs objects from a fit config (experiment, refit, encode, baselines, the leaderboard's checkpoint
rows) calls :func:`build`; only the ``clipita`` command itself builds the command-line interface
(:func:`clipita.cli.make_cli`). Both parse with the same parser, :class:`ConfigParserCLI`: the same options and
defaults, the same ``class_path`` resolution, and the same link (``model`` -> ``data.encoders``: the DataModule gets
the network's frozen towers). The honest minimum is that :func:`build` is ``LightningCLI(run=False)`` wrapped here,
once: LightningCLI is what defines the parser (Trainer, module and DataModule signatures, config files, links), and
re-deriving it by hand would be a second definition to keep equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.cli import LightningCLI

# LightningCLI's own settings, shared by `clipita fit` and build(): runs land under runs/, the config is saved
CLI_KWARGS: dict[str, Any] = {
    "save_config_kwargs": {"overwrite": True},
    "trainer_defaults": {"default_root_dir": "runs"},
    "parser_kwargs": {"prog": "clipita"},
}


class ConfigParserCLI(LightningCLI):
    """The fit config's parser: LightningCLI's, plus the project's two fit options and the encoder link; the
    module's ``protocol`` is no option (the DataModule builds it from the shards: ``ClipItaModule.setup``)."""

    def add_core_arguments_to_parser(self, parser) -> None:
        """LightningCLI's own (Trainer, module, DataModule), the module's arguments less ``protocol``."""
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{k}": v for k, v in self.trainer_defaults.items() if k != "callbacks"})
        parser.add_class_arguments(
            self._model_class, "model", fail_untyped=False, sub_configs=True, skip={"protocol"}
        )
        parser.add_lightning_class_args(self._datamodule_class, "data")

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="after fit, evaluate the best checkpoint on the test split and print its metrics",
        )
        parser.add_argument(
            "--refit_after_choice",
            type=bool,
            default=False,
            help="after fit, train again on every training leaf (data.pseudo_novel_fraction 0) keeping the "
            "scorer the fit chose on its pseudo-novel validation (clipita.refit.refit_after_choice)",
        )
        # the DataModule gets the network's frozen towers (jsonargparse instantiates the model first)
        parser.link_arguments(
            "model", "data.encoders", compute_fn=lambda module: module.net, apply_on="instantiate"
        )


def cli_classes() -> tuple[type, type]:
    """The module and DataModule classes every fit config builds (imported late: they load torch and the towers)."""
    from datamodules.catalogue_datamodule import CatalogueDataModule
    from lightning_modules.clip_ita_module import ClipItaModule

    return ClipItaModule, CatalogueDataModule


@dataclass
class Built:
    """What a fit config builds: nothing is fitted, set up or encoded yet."""

    trainer: Any  # lightning.Trainer
    module: Any  # ClipItaModule, with its network
    datamodule: Any  # CatalogueDataModule, holding the network's frozen towers
    config: Any = None  # the parsed config, a jsonargparse Namespace (``config.get("refit_after_choice")``)


def build(args: Sequence[str] = ()) -> Built:
    """Build a fit config's Trainer, module and DataModule exactly as ``clipita fit`` would, without running.

    Args:
        args: command-line tokens without the subcommand, e.g.
            ``["--config", "experiments/clip_ita.yaml", "--trainer.max_epochs", "1"]``.
    """
    cli = ConfigParserCLI(*cli_classes(), args=list(args), run=False, **CLI_KWARGS)
    return Built(cli.trainer, cli.model, cli.datamodule, cli.config)


def config_args(config: str | None, overrides: Sequence[str] = ()) -> list[str]:
    """A fit config (None for the defaults) and its overrides as :func:`build`'s tokens."""
    return (["--config", str(config)] if config else []) + list(overrides)
