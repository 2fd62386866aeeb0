"""clipita's model library: encoders, fusion, heads, losses, metrics, the CLIP-ITA model and its Lightning wrapper.

    >>> from lightning_modules import load_model
    >>> net = load_model("runs/clip_ita_plus/version_0/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> queries = net.encode_query_paths([("Footwear", "Shoes", "Sports Shoes")])  # doctest: +SKIP

Public API (``ClipItaModule`` is imported lazily: retrieval alone never imports Lightning): :class:`ClipIta` (the network), :func:`load_model` (a checkpoint -> ``ClipIta``, no Lightning needed),
:func:`create_model` (a named recipe of ``experiments/`` -> an untrained ``ClipIta``), :class:`ClipItaModule` (the
LightningModule that trains it), the losses and :class:`CategoryRetrievalMetrics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .checkpointing import CheckpointFormatError, load_model
from .factory import create_model
from .losses import HierarchicalInfoNCELoss, InfoNCELoss, MultiPositiveInfoNCELoss
from .metrics import CategoryRetrievalMetrics
from .model import ClipIta

if TYPE_CHECKING:
    from .clip_ita_module import ClipItaModule

__version__ = "0.1.0"


def __getattr__(name: str):
    """``ClipItaModule`` is imported on first use, so loading a model for retrieval does not import Lightning."""
    if name == "ClipItaModule":
        from .clip_ita_module import ClipItaModule

        return ClipItaModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CategoryRetrievalMetrics",
    "CheckpointFormatError",
    "ClipIta",
    "ClipItaModule",
    "HierarchicalInfoNCELoss",
    "InfoNCELoss",
    "MultiPositiveInfoNCELoss",
    "create_model",
    "load_model",
]
