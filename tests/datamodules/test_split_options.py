"""The split options are declared once (``datamodules.splits.SplitOptions``): the flat options of ``clipita shard``
and of the DataModule (``--data.split_seed`` ...) take their defaults, checks and help from it (issue 21)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from datamodules.catalogue_datamodule import CatalogueDataModule
from datamodules.sharding import shard_catalogue
from datamodules.splits import SPLIT_DEFAULTS, SplitOptions

FLAT_NAMES = {  # where the options are flat arguments, under which names
    shard_catalogue: {"seed": "seed"},
    CatalogueDataModule.__init__: {"seed": "split_seed"},
}


@pytest.mark.parametrize("function", list(FLAT_NAMES))
def test_flat_options_default_to_the_one_declaration(function):
    parameters = inspect.signature(function).parameters
    for field in dataclasses.fields(SplitOptions):
        name = FLAT_NAMES[function].get(field.name, field.name)
        assert parameters[name].default == field.default == getattr(SPLIT_DEFAULTS, field.name), name


@pytest.mark.parametrize("owner", [shard_catalogue, CatalogueDataModule])
def test_the_help_of_each_option_is_the_declared_one(owner):
    doc = owner.__doc__
    assert "{split_options}" not in doc
    assert (
        "split_seed: seed of the unseen-category choice" in doc or "seed: seed of the unseen-category" in doc
    )
    for field in ("val_fraction", "test_fraction", "unseen_fraction", "pseudo_novel_fraction"):
        assert f"        {field}: share of" in doc, field


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_fraction": 1.0}, "val_fraction must be in"),
        ({"unseen_fraction": -0.1}, "unseen_fraction must be in"),
        ({"pseudo_novel_fraction": 1.0}, "pseudo_novel_fraction must be in"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction must be < 1"),
    ],
)
def test_bad_options_fail_where_they_are_given(options, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        SplitOptions(**options)
    flat = {"split_seed" if k == "seed" else k: v for k, v in options.items()}
    with pytest.raises(ValueError, match=message):  # the DataModule checks them when built, not at shard time
        CatalogueDataModule(work_dir=str(tmp_path), **flat)


def test_the_datamodule_passes_its_options_through():
    dm = CatalogueDataModule(split_seed=3, unseen_fraction=0.3, pseudo_novel_fraction=0.25)
    assert dm.split_options == SplitOptions(seed=3, unseen_fraction=0.3, pseudo_novel_fraction=0.25)
    assert dm.shard_dir.name == "seed3-pn0.25"
