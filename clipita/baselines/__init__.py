"""Score-based baselines for the leaderboard, evaluated in the same harness as the trained models.

Each baseline is a function ``(gallery, **options)`` scoring every category query against every test product,
as ``[Q, c]`` product blocks in gallery order (``*_chunks``: memory independent of the gallery) or, for small
galleries, the whole ``Tensor [Q, N]`` (``*_scores``); :func:`evaluate_scores` folds the scores into the project's
``CategoryRetrievalMetrics`` with the same query table, settings and test gallery the LightningModule is tested on.

    random            seeded uniform scores (the chance level of every metric)
    bm25              BM25 (``bm25s``) of the category name against product titles
    title_zero_shot   cosine of the frozen text encoder's category-name and title embeddings
    image_zero_shot   an image-text model (open_clip) scoring product images against category prompts; reported as
                      not run when no such model is configured or loadable offline
"""

from __future__ import annotations

from .bm25 import bm25_chunks, bm25_scores
from .gallery import TestGallery, load_test_gallery
from .harness import BaselineNotRun, BaselineResult, evaluate_scores
from .image_zero_shot import image_zero_shot_chunks, image_zero_shot_scores
from .random_scores import random_chunks, random_scores
from .registry import BASELINES, Baseline, run_baseline
from .title_zero_shot import title_zero_shot_chunks, title_zero_shot_scores

__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineNotRun",
    "BaselineResult",
    "TestGallery",
    "bm25_chunks",
    "bm25_scores",
    "evaluate_scores",
    "image_zero_shot_chunks",
    "image_zero_shot_scores",
    "load_test_gallery",
    "random_chunks",
    "random_scores",
    "run_baseline",
    "title_zero_shot_chunks",
    "title_zero_shot_scores",
]
