"""The image zero-shot baseline: a pretrained image-text model (CLIP) scoring product images against category
prompts, no training. Runs only when such a model is configured and loads; otherwise it is reported as not run."""

from __future__ import annotations

import io

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


@torch.no_grad()
def image_zero_shot_scores(
    gallery: TestGallery,
    model: str | None = None,
    pretrained: str | None = None,
    prompt: str = "a photo of {}.",
    batch_size: int = 64,
    device: str = "cpu",
) -> torch.Tensor:
    """``[Q, N]`` cosine between the CLIP text embedding of ``prompt.format(category text)`` and each product image.

    Args:
        gallery: the test gallery (its raw test shards are read for the images).
        model: an ``open_clip`` model name, e.g. ``ViT-B-32``; None = not configured (the row is not run).
        pretrained: an ``open_clip`` pretrained tag or a local weights file, e.g. ``openai``.
        prompt: the text template a category name is put into.
        batch_size: images per forward pass.
        device: where the model runs.

    Raises:
        BaselineNotRun: no model configured, ``open_clip`` missing, or the weights cannot be loaded offline.
    """
    if model is None:
        raise BaselineNotRun(NO_MODEL)
    from PIL import Image

    net, preprocess, tokenizer = _load_open_clip(model, pretrained)
    net = net.to(device)
    texts = tokenizer([prompt.format(t) for t in gallery.query_texts]).to(device)
    queries = F.normalize(net.encode_text(texts).float(), dim=-1)
    order = {p: i for i, p in enumerate(gallery.product_ids)}
    products = torch.zeros(gallery.num_products, queries.shape[1])
    batch: list[torch.Tensor] = []
    rows: list[int] = []

    def flush() -> None:
        if batch:
            images = torch.stack(batch).to(device)
            products[rows] = F.normalize(net.encode_image(images).float(), dim=-1).cpu()
            batch.clear()
            rows.clear()

    for sample in gallery.records():
        rows.append(order[sample_id(sample)])
        batch.append(preprocess(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))
        if len(batch) == batch_size:
            flush()
    flush()
    return queries.cpu() @ products.T
