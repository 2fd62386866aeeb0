"""The random baseline: every metric at chance level, for the given gallery and query table."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .gallery import TestGallery

# products per independently seeded block of scores (fixed: the draw never depends on chunking)
RANDOM_BLOCK = 8192


def _seeded_blocks(gallery: TestGallery, seed: int) -> Iterator[np.ndarray]:
    """``[Q, <= RANDOM_BLOCK]`` uniform float32 blocks over products ``[j * RANDOM_BLOCK, (j + 1) * RANDOM_BLOCK)``,
    block ``j`` drawn from the seed sequence ``(seed, gallery.split_seed, j)``."""
    for j, start in enumerate(range(0, gallery.num_products, RANDOM_BLOCK)):
        width = min(RANDOM_BLOCK, gallery.num_products - start)
        rng = np.random.default_rng([seed, gallery.split_seed, j])
        yield rng.random((gallery.num_queries, width), dtype=np.float32)


def random_chunks(
    gallery: TestGallery, seed: int = 0, chunk_size: int = RANDOM_BLOCK
) -> Iterator[torch.Tensor]:
    """``[Q, c]`` blocks of uniform random scores in gallery order, reproducible from ``seed`` and the gallery's
    split seed: memory ``O(Q * (chunk_size + RANDOM_BLOCK))``, never ``Q x N``.

    The scores of products ``[j * RANDOM_BLOCK, (j + 1) * RANDOM_BLOCK)`` come from their own generator, seeded by
    ``(seed, split_seed, j)``, so the draw is the same whatever ``chunk_size`` the blocks are yielded in. (This
    draw differs from the one the whole ``[Q, N]`` matrix was drawn from before streaming; either is chance level.)

    Args:
        gallery: the test gallery.
        seed: base seed; combined with ``gallery.split_seed`` so each held-out split gets its own draw.
        chunk_size: products per yielded block.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _rechunk(_seeded_blocks(gallery, seed), chunk_size)


def _rechunk(blocks: Iterator[np.ndarray], chunk_size: int) -> Iterator[torch.Tensor]:
    """The columns of ``blocks`` regrouped into ``[Q, chunk_size]`` tensors (the last one narrower)."""
    pending: list[np.ndarray] = []
    width = 0
    for block in blocks:
        pending.append(block)
        width += block.shape[1]
        while width >= chunk_size:
            joined = np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
            yield torch.from_numpy(np.ascontiguousarray(joined[:, :chunk_size]))
            rest = joined[:, chunk_size:]
            pending, width = ([rest] if rest.shape[1] else []), rest.shape[1]
    if width:
        yield torch.from_numpy(np.ascontiguousarray(np.concatenate(pending, axis=1)))


def random_scores(gallery: TestGallery, seed: int = 0) -> torch.Tensor:
    """The whole ``[Q, N]`` matrix of :func:`random_chunks` (small galleries; the leaderboard streams the blocks).

    Args:
        gallery: the test gallery.
        seed: base seed; combined with ``gallery.split_seed`` so each held-out split gets its own draw.
    """
    chunks = list(random_chunks(gallery, seed=seed))
    return torch.cat(chunks, dim=1) if chunks else torch.zeros(gallery.num_queries, 0)
