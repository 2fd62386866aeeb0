"""Test-wide guards (CPU only, hubs offline, no socket beyond loopback) and the one tiny training config.

Test modules import the tiny-config helpers directly (``from conftest import tiny_overrides``): ``tests/`` is on the
path and this is the only ``conftest.py``."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
FASHION = REPO.parent / "shared" / "datasets" / "fashion-product-images"


class NetworkBlocked(RuntimeError):
    """A test tried to reach a non-loopback address."""


def _is_loopback(address) -> bool:
    if isinstance(address, tuple):
        host = address[0]
    else:  # AF_UNIX path
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS: blocked


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise NetworkBlocked(f"tests may not use the network: connect to {address!r} blocked")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise NetworkBlocked(f"tests may not use the network: connect to {address!r} blocked")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in (None, "localhost") and not _is_loopback((host,)):
        raise NetworkBlocked(f"tests may not use the network: name lookup of {host!r} blocked")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo


def pytest_configure(config):
    """Load the hypothesis profile before test modules are imported: ``fuzz`` when asked for by
    ``HYPOTHESIS_PROFILE=fuzz`` or by selecting the fuzz-marked tests (``-m fuzz``), else the derandomised ``ci``."""
    import hypothesis_profiles

    markexpr = config.getoption("markexpr", default="") or ""
    wants_fuzz = "fuzz" in markexpr and "not fuzz" not in markexpr
    hypothesis_profiles.load("fuzz" if wants_fuzz else None)


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not (FASHION / "styles.csv").is_file():
        pytest.skip(f"the fashion catalogue is not at {FASHION}")
    return FASHION


# ---------------------------------------------------------------------------------------- the tiny config
# The one tiny training config of the test suite (the built-in sample catalogue, small images, small batches):
# every test that fits, sweeps or indexes starts from it. Keys are the config's dotted paths.
TINY: dict[str, Any] = {
    "data.catalogue": "sample",
    "data.sample_products": 160,
    "data.batch_size": 16,
    "model.net.image_size": 64,
    "data.train_image_size": None,  # train at the tower's size (the fine-tune recipe trains at 160 px)
    "trainer.accelerator": "cpu",
    "trainer.enable_progress_bar": False,
}


def _cli_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def tiny_config(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`TINY` plus ``extra`` (dotted key -> value), e.g. ``tiny_config({"trainer.max_epochs": 2})``."""
    return {**TINY, **(extra or {})}


def tiny_overrides(extra: Mapping[str, Any] | None = None) -> list[str]:
    """The tiny config as ``clipita fit`` command-line overrides (``["--data.catalogue", "sample", ...]``)."""
    out: list[str] = []
    for key, value in tiny_config(extra).items():
        out += [f"--{key}", _cli_value(value)]
    return out


def apply_tiny(config: dict[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Set the tiny config into a loaded ``clipita fit`` YAML dict (in place; returned for convenience)."""
    for key, value in tiny_config(extra).items():
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


@pytest.fixture
def tiny_model_overrides() -> list[str]:
    """The tiny config as command-line overrides (see :func:`tiny_overrides`)."""
    return tiny_overrides()
