"""A tiny in-memory catalogue for library tests: a category tree, feature or raw batches, and a DataModule that
gives ``ClipItaModule.setup`` what the real one does (the evaluation protocol, the lexical statistics)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from clipita_core.protocol import EvalProtocol
from clipita_core.tree import CategoryTree
from lightning_modules import ClipIta

TRAIN_PATHS = [("Bags", "Totes"), ("Bags", "Wallets"), ("Shoes", "Boots"), ("Shoes", "Sneakers")]
UNSEEN_PATHS = [
    ("Shoes", "Sandals"),
    ("Watches", "Digital"),
]  # no training product: novel to the trained model
TREE = CategoryTree.from_paths(TRAIN_PATHS + UNSEEN_PATHS)
ATTRIBUTES = ["colour", "gender"]
UNSEEN_IDS = [TREE.index(p) for p in UNSEEN_PATHS]
TRAIN_IDS = sorted({i for p in TRAIN_PATHS for i in TREE.ancestor_ids(p)})


def synthetic_protocol(text_style: str = "leaf") -> EvalProtocol:
    """The synthetic catalogue's evaluation protocol (what a manifest of it would give)."""
    return EvalProtocol(TREE, text_style, TRAIN_IDS, (), UNSEEN_IDS, tuple(ATTRIBUTES))


def tiny_net(**overrides) -> ClipIta:
    """A small ClipIta: timm's ``test_efficientnet`` (random init) at 32 px and the offline MiniLM text tower."""
    args = dict(
        modalities=["image", "title"],
        image_model="test_efficientnet",
        image_weights="none",
        image_size=32,
        embed_dim=32,
        hidden_dim=32,
        dropout=0.0,
    )
    return ClipIta(**{**args, **overrides})


def products(paths: Sequence[tuple[str, ...]], seed: int) -> dict:
    """Raw product inputs for ``paths`` (one product each)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "product_id": [f"p{seed}-{i}" for i in range(len(paths))],
        "image": torch.randn(len(paths), 3, 32, 32, generator=g),
        "title": [f"{p[-1]} number {i}" for i, p in enumerate(paths)],
        "attributes": [{"colour": "Blue"} if i % 2 else {"gender": "Men"} for i in range(len(paths))],
        "category_ids": torch.as_tensor(TREE.ancestor_matrix(paths)),
    }


def as_features(net: ClipIta, batch: dict) -> dict:
    """The same batch as cached frozen-encoder features (what ``clipita encode`` stores)."""
    with torch.no_grad():
        out = {k: batch[k] for k in ("product_id", "category_ids")}
        out["title_features"] = net.text_encoder(batch["title"])
        if net.image_encoder is not None:
            out["image_features"] = net.image_encoder(batch["image"])
    return out


class SyntheticDataModule(L.LightningDataModule):
    """Two training batches over ``TRAIN_PATHS`` and one evaluation batch that also holds the unseen categories."""

    def __init__(self, net: ClipIta, raw: bool = False) -> None:
        super().__init__()
        train = [products(TRAIN_PATHS * 2, seed) for seed in (1, 2)]
        evaluation = products(TRAIN_PATHS + UNSEEN_PATHS, 3)
        self.raw_eval_batch = evaluation
        if not raw:
            train = [as_features(net, b) for b in train]
            evaluation = as_features(net, evaluation)
        self.train_batches, self.eval_batch = train, evaluation
        self.lexical_statistics: dict | None = None  # no lexical signal (see LexicalDataModule)

    def protocol(self, text_style: str) -> EvalProtocol:
        return synthetic_protocol(text_style)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader([self.eval_batch], batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def trainer(tmp_path, **kwargs) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    return L.Trainer(**{**args, **kwargs})


def lexical_rows(batch: dict) -> list:
    """Hashed token ids of each raw product's title and attribute values (what the token store holds)."""
    from clipita_core.tokens import lexical_tokens

    texts = [" ".join([t, *a.values()]) for t, a in zip(batch["title"], batch["attributes"], strict=True)]
    return lexical_tokens(texts)


class LexicalDataModule(SyntheticDataModule):
    """The synthetic catalogue with ``lexical_tokens`` in every batch and the training split's BM25 statistics
    (``lexical_statistics``), as the real DataModule gives a model with ``lexical_signal``."""

    def __init__(self, net: ClipIta) -> None:
        from lightning_modules.lexical import document_statistics, pad_tokens

        super().__init__(net)
        raw_train = [products(TRAIN_PATHS * 2, seed) for seed in (1, 2)]
        train_rows = []
        for batch, raw in zip(self.train_batches, raw_train, strict=True):
            rows = lexical_rows(raw)
            batch["lexical_tokens"] = pad_tokens(rows)
            train_rows += rows
        self.eval_batch["lexical_tokens"] = pad_tokens(lexical_rows(self.raw_eval_batch))
        self.lexical_statistics = document_statistics(train_rows)
