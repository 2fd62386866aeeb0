"""An evaluation protocol's queries as a network sees them: the query texts and paths in table order, their frozen
text-tower features (encoded once per protocol), and the seen categories' ids (the loss's table negatives)."""

from __future__ import annotations

import torch
from torch import nn

from clipita_core.paths import CategoryPath
from clipita_core.protocol import EvalProtocol

from .model import ClipIta


class QueryTable(nn.Module):
    """The category table of :class:`~clipita_core.protocol.EvalProtocol`, encoded for one network.

    Its tensors are buffers, so they follow the LightningModule's device; none is saved in a checkpoint (they are
    rebuilt from the protocol). Empty until :meth:`fill`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.paths: list[CategoryPath] = []
        self.register_buffer("text_features", torch.zeros(0), persistent=False)
        self.register_buffer("seen_ids", torch.zeros(0, dtype=torch.long), persistent=False)

    def fill(self, protocol: EvalProtocol, net: ClipIta) -> None:
        """Take ``protocol``'s queries and encode every query text once with ``net``'s text tower."""
        device = self.text_features.device
        self.texts, self.paths = protocol.query_texts, protocol.query_paths
        with torch.no_grad():
            self.text_features = net.text_encoder(self.texts).to(device)
        self.seen_ids = torch.as_tensor(protocol.seen_ids, dtype=torch.long, device=device)

    def frozen_features(self, net: ClipIta) -> torch.Tensor | None:
        """The text features the queries are embedded from: the frozen ones, or None while ``net``'s text tower
        trains (the texts then go through it)."""
        return None if net.text_encoder.trainable else self.text_features

    def category_embeddings(self, net: ClipIta, ids: torch.Tensor | None = None) -> torch.Tensor:
        """``net``'s category embeddings of table rows ``ids`` (all rows when None): the training targets."""
        features = self.frozen_features(net)
        if features is None:
            texts = self.texts if ids is None else [self.texts[i] for i in ids.tolist()]
            return net.encode_category_texts(texts)
        return net.encode_category(features if ids is None else features[ids])

    def query_vectors(self, net: ClipIta) -> torch.Tensor:
        """``net``'s retrieval vectors of every row, by its one query encoder (:meth:`ClipIta.encode_query_texts`):
        rows outside its trained set are novel."""
        return net.encode_query_texts(self.texts, self.paths, text_features=self.frozen_features(net))
