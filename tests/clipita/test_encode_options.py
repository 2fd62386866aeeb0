"""``clipita encode`` takes its batch size and workers from the fit config's ``data`` section unless given: the
options are declared once, on the DataModule, and the command does what a fit's own encoding does (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

import clipita.encode as encode_module
import datamodules.feature_encoding as feature_encoding

REPO = Path(__file__).resolve().parents[2]


class Stop(Exception):
    """Raised by the stand-in job once it has seen its options (nothing is encoded)."""


@pytest.mark.parametrize(("given", "expected"), [({}, (7, 1)), ({"batch_size": 5, "num_workers": 0}, (5, 0))])
def test_encode_reads_its_options_from_the_config_unless_given(given, expected, tmp_path, monkeypatch):
    seen: dict[str, int] = {}

    def job(*args, batch_size, num_workers, **kwargs):
        seen.update(batch_size=batch_size, num_workers=num_workers)
        raise Stop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(feature_encoding, "EncodeJob", job)
    overrides = tiny_overrides(
        {"data.work_dir": str(tmp_path / "work"), "data.encode_batch_size": 7, "data.encode_workers": 1}
    )
    with pytest.raises(Stop):
        encode_module.encode(str(REPO / "experiments" / "quickstart.yaml"), overrides, **given)
    assert (seen["batch_size"], seen["num_workers"]) == expected


def test_the_encode_options_are_declared_once():
    """The DataModule's flat keys and the job's arguments default to ``EncodeOptions``; the DataModule hands its
    own on (``encode_options``: what its setup and ``clipita encode`` both read)."""
    import inspect

    from datamodules.catalogue_datamodule import CatalogueDataModule

    dm_defaults = inspect.signature(CatalogueDataModule.__init__).parameters
    assert dm_defaults["encode_batch_size"].default == feature_encoding.ENCODE_DEFAULTS.batch_size
    assert dm_defaults["encode_workers"].default == feature_encoding.ENCODE_DEFAULTS.num_workers
    for function in (feature_encoding.EncodeJob.__init__, feature_encoding.encode_features):
        parameters = inspect.signature(function).parameters
        assert parameters["batch_size"].default == feature_encoding.ENCODE_DEFAULTS.batch_size
        assert parameters["num_workers"].default == feature_encoding.ENCODE_DEFAULTS.num_workers
    dm = CatalogueDataModule(encode_batch_size=5, encode_workers=3, num_workers=1)
    assert dm.encode_options == feature_encoding.EncodeOptions(batch_size=5, num_workers=3)
