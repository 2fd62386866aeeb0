"""Every option below the network is declared once: the head options by :class:`HeadConfig`, the tower options by
the encoders, the temperature options by :class:`LogitScale`; the layers above take their defaults from there, and
what a user sets on the top layer reaches the module that uses it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from torch import nn

from lightning_modules.components.fusion import create_fusion
from lightning_modules.components.image_encoder import ImageEncoder
from lightning_modules.components.projection_head import HEAD, HeadConfig, MLPHead
from lightning_modules.components.text_encoder import TextEncoder
from lightning_modules.losses import LOSSES, LogitScale
from lightning_modules.model import ClipIta

# ClipIta's tower options -> the encoder that declares each, under the same name (one name down the stack)
TOWER_OPTIONS = {
    "image_model": ImageEncoder,
    "image_weights": ImageEncoder,
    "image_size": ImageEncoder,
    "image_mean": ImageEncoder,
    "image_std": ImageEncoder,
    "train_image_encoder": ImageEncoder,
    "train_image_blocks": ImageEncoder,
    "gradient_checkpointing": ImageEncoder,
    "text_model": TextEncoder,
    "text_max_length": TextEncoder,
    "train_text_encoder": TextEncoder,
    "train_text_layers": TextEncoder,
}
SCALE_OPTIONS = {
    "temperature": "temperature",
    "learnable_temperature": "learnable",
    "max_logit_scale": "max_scale",
}


def defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()}


def test_clipita_shows_the_head_defaults_of_head_config():
    net = defaults(ClipIta)
    for field in dataclasses.fields(HeadConfig):
        assert net[field.name] == getattr(HEAD, field.name) == field.default, field.name
    assert net["category_head"] == HEAD.head_type == "mlp"
    assert (HEAD.hidden_dim, HEAD.num_hidden_layers, HEAD.dropout) == (512, 2, 0.1)  # the paper's head


def test_clipita_shows_the_tower_defaults_of_the_encoders():
    net = defaults(ClipIta)
    for option, encoder in TOWER_OPTIONS.items():
        assert net[option] == defaults(encoder)[option], option
    assert net["image_size"] == 224 and net["text_max_length"] == 64


def test_every_loss_shows_the_temperature_defaults_of_logit_scale():
    scale = defaults(LogitScale)
    assert scale["temperature"] == 0.07
    for loss in (LOSSES[name] for name in LOSSES):
        for option, name in SCALE_OPTIONS.items():
            assert defaults(loss)[option] == scale[name], (loss.__name__, option)


def test_the_default_head_is_built_from_head_config():
    head = create_fusion("concat", {"image": 4, "title": 3}, embed_dim=5).head
    assert isinstance(head, MLPHead)
    linears = [m for m in head.net if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [HEAD.hidden_dim] * HEAD.num_hidden_layers + [5]
    assert {m.p for m in head.net if isinstance(m, nn.Dropout)} == {HEAD.dropout}


def test_clipita_passes_its_head_options_to_every_head():
    net = ClipIta(
        modalities=["title"],
        embed_dim=8,
        hidden_dim=7,
        num_hidden_layers=1,
        dropout=0.3,
        category_head="linear",
    )
    fused = net.fusion.head
    assert [m.out_features for m in fused.net if isinstance(m, nn.Linear)] == [7, 8]
    assert {m.p for m in fused.net if isinstance(m, nn.Dropout)} == {0.3}
    assert isinstance(net.category_head, nn.Linear) and net.category_head.out_features == 8
    assert net.config["hidden_dim"] == 7 and net.config["category_head"] == "linear"


def _help_entries(out: str) -> dict[str, str]:
    """``{option: its help text, unwrapped}`` from an argparse help page."""
    entries: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line.startswith("  --"):
            name = line.split()[0]
            entries[name] = line
        elif name is not None and line.startswith("    "):
            entries[name] += " " + line.strip()
        else:
            name = None
    return entries


def test_fit_help_shows_the_declared_defaults(capsys):
    from clipita.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    entries = _help_entries(capsys.readouterr().out)
    expected = {
        "--model.net.hidden_dim": HEAD.hidden_dim,
        "--model.net.num_hidden_layers": HEAD.num_hidden_layers,
        "--model.net.dropout": HEAD.dropout,
        "--model.net.head_type": HEAD.head_type,
        "--model.net.category_head": HEAD.head_type,
        "--model.net.image_size": defaults(ImageEncoder)["image_size"],
        "--model.net.image_model": defaults(ImageEncoder)["image_model"],
        "--model.net.text_max_length": defaults(TextEncoder)["text_max_length"],
    }
    for option, value in expected.items():
        assert f"default: {value})" in entries[option], (option, entries[option])


def test_every_tower_option_keeps_its_name_down_the_stack():
    """An encoder's options are the network's, under the same name: no option is renamed between the layers."""
    net = defaults(ClipIta)
    for encoder in (ImageEncoder, TextEncoder):
        own = set(defaults(encoder))
        assert own <= set(net), sorted(own - set(net))
    assert set(TOWER_OPTIONS) == set(defaults(ImageEncoder)) | set(defaults(TextEncoder))
