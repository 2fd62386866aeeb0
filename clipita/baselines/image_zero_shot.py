"""The image zero-shot baseline: a pretrained image-text model (CLIP) scoring product images against category
prompts, no training. Runs only when such a model is configured and loads; otherwise it is reported as not run."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from datamodules.records import sample_id

from .gallery import TestGallery
from .harness import BaselineNotRun

NO_MODEL = "no image-text model offline"


def _load_open_clip(model: str, pretrained: str | None):
    try:
        import open_clip
    except ImportError as err:
        raise BaselineNotRun(f"{NO_MODEL} (open_clip is not installed)") from err
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained)
        tokenizer = open_clip.get_tokenizer(model)
    except Exception as err:  # noqa: BLE001 - no weights offline, unknown name...: the row is not run, said why
        raise BaselineNotRun(f"{NO_MODEL} ({model}/{pretrained} did not load: {err})") from err
    return net.eval(), preprocess, tokenizer


def image_zero_shot_chunks(
    gallery: TestGallery,
    model: str | None = None,
    pretrained: str | None = None,
    prompt: str = "a photo of {}.",
    batch_size: int = 64,
    device: str = "cpu",
) -> Iterator[torch.Tensor]:
    """``[Q, b]`` blocks, in gallery order, of the cosine between the CLIP text embedding of
    ``prompt.format(category text)`` and each product image: one block per ``batch_size`` images read from the raw
    test shards, so memory is independent of the gallery (no ``[N, D]`` image matrix, no ``[Q, N]`` scores).

    The model is loaded when this is called (so a missing one is reported before any image is read); the images are
    read and encoded as the blocks are consumed.

    Args:
        gallery: the test gallery (its raw test shards are read for the images, in gallery order).
        model: an ``open_clip`` model name, e.g. ``ViT-B-32``; None = not configured (the row is not run).
        pretrained: an ``open_clip`` pretrained tag or a local weights file, e.g. ``openai``.
        prompt: the text template a category name is put into.
        batch_size: images per forward pass (and products per block).
        device: where the model runs.

    Raises:
        BaselineNotRun: no model configured, ``open_clip`` missing, or the weights cannot be loaded offline.
    """
    if model is None:
        raise BaselineNotRun(NO_MODEL)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net, preprocess, tokenizer = _load_open_clip(model, pretrained)
    net = net.to(device)
    with torch.no_grad():
        texts = tokenizer([prompt.format(t) for t in gallery.query_texts]).to(device)
        queries = F.normalize(net.encode_text(texts).float(), dim=-1)
    return _image_blocks(gallery, net, preprocess, queries, batch_size, device)


@torch.no_grad()
def _image_blocks(
    gallery: TestGallery, net: Any, preprocess: Any, queries: torch.Tensor, batch_size: int, device: str
) -> Iterator[torch.Tensor]:
    from PIL import Image

    batch: list[torch.Tensor] = []
    row = 0
    for sample in gallery.records():
        product_id = sample_id(sample)
        if row >= gallery.num_products or gallery.product_ids[row] != product_id:
            expected = gallery.product_ids[row] if row < gallery.num_products else "the end of the gallery"
            raise ValueError(
                f"test shard record {product_id!r} is not the gallery's product {row} ({expected!r}): the shards "
                "changed since the gallery was read"
            )
        row += 1
        batch.append(preprocess(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))
        if len(batch) == batch_size:
            yield _block(net, queries, batch, device)
    if batch:
        yield _block(net, queries, batch, device)


def _block(net: Any, queries: torch.Tensor, batch: list[torch.Tensor], device: str) -> torch.Tensor:
    images = F.normalize(net.encode_image(torch.stack(batch).to(device)).float(), dim=-1)
    batch.clear()
    return (queries @ images.T).cpu()


def image_zero_shot_scores(gallery: TestGallery, **options: Any) -> torch.Tensor:
    """The whole ``[Q, N]`` matrix of :func:`image_zero_shot_chunks` (small galleries; the leaderboard streams)."""
    chunks = list(image_zero_shot_chunks(gallery, **options))
    return torch.cat(chunks, dim=1) if chunks else torch.zeros(gallery.num_queries, 0)
