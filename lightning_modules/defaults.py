"""An option's default, read from the one signature that declares it.

An option passed down through layers (``model.net.image_size`` -> :class:`ImageEncoder` ``image_size``,
``model.loss.temperature`` -> :class:`LogitScale` ``temperature``) has its default written once, in the lowest
signature; the layers above take it from there (``image_size: int = IMAGE_TOWER["image_size"]``), so the config
and ``--help`` show the same default and the two cannot drift.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import MappingProxyType
from typing import Any


def signature_defaults(function: Callable[..., Any]) -> MappingProxyType[str, Any]:
    """``{parameter: default}`` of the parameters of ``function`` (or a class's ``__init__``) that have one."""
    parameters = inspect.signature(function).parameters.values()
    return MappingProxyType(
        {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    )
