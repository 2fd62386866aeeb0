"""Baselines by name: a new baseline is one scoring function (its own file) plus one :data:`BASELINES` entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clipita_core.registry import Registry

from .bm25 import bm25_chunks
from .harness import evaluate_scores
from .image_zero_shot import image_zero_shot_chunks
from .random_scores import random_chunks
from .title_zero_shot import title_zero_shot_chunks


@dataclass(frozen=True)
class Baseline:
    """One registered baseline.

    Attributes:
        score: ``(gallery, **options)`` -> the scores of every category query against every test product: ``[Q, c]``
            product blocks in gallery order (memory independent of the gallery) or the whole ``Tensor [Q, N]``; it
            raises :class:`~.harness.BaselineNotRun` when it cannot run here.
        reads: the product text fields it reads (the leaderboard's leakage warning names the rows reading leaked
            text).
    """

    score: Callable[..., Any]
    reads: tuple[str, ...] = ()


BASELINES: Registry[Baseline] = Registry(
    "baseline",
    {
        "random": Baseline(random_chunks),  # streamed: [Q, c] blocks
        "bm25": Baseline(bm25_chunks, reads=("title",)),  # streamed: [Q, c] blocks from sparse scores
        "title_zero_shot": Baseline(title_zero_shot_chunks, reads=("title",)),  # streamed: [Q, c] blocks
        "image_zero_shot": Baseline(image_zero_shot_chunks),  # streamed: one [Q, b] block per image batch
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
    scores = BASELINES[kind].score(gallery, **(options or {}))
    return evaluate_scores(scores, gallery)
