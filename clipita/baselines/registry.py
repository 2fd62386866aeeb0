"""Baselines by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clipita_core.registry import Registry

from .bm25 import bm25_chunks
from .harness import evaluate_scores
from .image_zero_shot import image_zero_shot_chunks
from .random_scores import random_chunks
from .title_zero_shot import title_zero_shot_chunks

BASELINES: Registry[Callable[..., Any]] = Registry(
    "baseline",
    {
        "random": random_chunks,  # streamed: [Q, c] blocks
        "bm25": bm25_chunks,  # streamed: [Q, c] blocks from sparse scores
        "title_zero_shot": title_zero_shot_chunks,  # streamed: [Q, c] blocks
        "image_zero_shot": image_zero_shot_chunks,  # streamed: one [Q, b] block per image batch
    },
)


def run_baseline(kind: str, gallery: Any, options: dict[str, Any] | None = None):
    """Score ``gallery`` with baseline ``kind`` and evaluate it in the retrieval harness.

    Args:
        kind: a name in :data:`BASELINES`.
        gallery: a :class:`~.gallery.TestGallery`.
        options: keyword options of the baseline function (e.g. ``{"k1": 1.2}`` for ``bm25``).

    Returns:
        A :class:`~.harness.BaselineResult`.

    Raises:
        ValueError: unknown ``kind``.
        BaselineNotRun: the baseline cannot run here.
    """
    scores = BASELINES[kind](gallery, **(options or {}))
    return evaluate_scores(scores, gallery)
