"""The one factory (:func:`clipita.factory.build`) builds what ``clipita fit`` parses, and it is the only way the apps
build objects: ``make_cli`` (the command-line interface) is called by the ``clipita`` command alone."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import yaml
from conftest import tiny_overrides

from clipita.cli import main
from clipita.factory import build, config_args

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"


def printed_config(args: list[str], capsys) -> dict:
    """What ``clipita fit --print_config`` prints for these tokens."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


def _plain(value):
    """A YAML-comparable value (tuples as lists)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("recipe", ["quickstart", "clip_ita_adaptive"])
def test_build_makes_what_clipita_fit_prints(recipe, tmp_path, capsys):
    args = config_args(
        str(EXPERIMENTS / f"{recipe}.yaml"),
        [*tiny_overrides(), "--data.work_dir", str(tmp_path / "work"), "--trainer.max_epochs", "3"],
    )
    printed = printed_config(args, capsys)
    built = build(args)

    model = printed["model"]
    hparams = dict(built.module.hparams)
    for key, value in model.items():
        if key not in ("net", "loss"):
            assert _plain(hparams[key]) == value, key
    assert {k: _plain(v) for k, v in built.module.net.config.items()} == model["net"]
    assert model["net"]["image_size"] == 64  # the override reached the network
    loss = built.module.loss
    module_name, _, class_name = model["loss"]["class_path"].rpartition(".")
    assert type(loss) is getattr(importlib.import_module(module_name), class_name)
    assert _plain(loss.config) == model["loss"]["init_args"]

    data = {k: v for k, v in printed["data"].items() if k != "encoders"}
    # `_instantiator` is LightningCLI's own mark (it built the DataModule, as for `clipita fit`)
    dm_hparams = {k: _plain(v) for k, v in built.datamodule.hparams.items() if k != "_instantiator"}
    assert dm_hparams == data
    assert dm_hparams["sample_products"] == 160 and dm_hparams["work_dir"] == str(tmp_path / "work")
    assert built.datamodule.encoders is built.module.net  # the link model -> data.encoders

    assert built.trainer.max_epochs == printed["trainer"]["max_epochs"] == 3
    callbacks = {c["class_path"].rsplit(".", 1)[-1] for c in printed["trainer"]["callbacks"]}
    assert callbacks <= {type(c).__name__ for c in built.trainer.callbacks}
    for key in ("test_after_fit", "refit_after_choice", "seed_everything"):
        assert built.config.get(key) == printed[key], key


def test_build_rejects_an_unknown_key_like_clipita_fit():
    with pytest.raises(SystemExit):
        build(["--model.no_such_option", "1"])


def test_make_cli_is_called_only_by_the_clipita_command():
    """Apps build objects through clipita.factory.build; the CLI is the command's own (issue 21)."""
    callers = sorted(
        str(path.relative_to(REPO))
        for package in ("clipita", "clipita_core", "lightning_modules", "datamodules", "benchmarks")
        for path in (REPO / package).rglob("*.py")
        if re.search(r"\bmake_cli\s*\(", path.read_text(encoding="utf-8"))
    )
    assert callers == ["clipita/cli.py"]
    cli_text = (REPO / "clipita" / "cli.py").read_text(encoding="utf-8")
    calls = re.findall(r"^(?!\s*def ).*\bmake_cli\s*\(", cli_text, flags=re.MULTILINE)
    assert len(calls) == 1, calls  # main's, and no other


def test_the_evaluation_protocol_is_no_config_option(capsys):
    """The module takes a protocol like its network, but a fit config never sets it: the DataModule builds it from
    the shards (``ClipItaModule.setup``)."""
    assert "protocol" not in printed_config([], capsys)["model"]
    with pytest.raises(SystemExit):
        build(["--model.protocol", "null"])
    assert build([]).module.protocol is None
