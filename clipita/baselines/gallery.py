"""The test gallery and query table a baseline is scored on: exactly what ``ClipItaModule.test`` evaluates."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clipita_core.tree import CategoryTree
from datamodules.shard_io import iter_shard_records, iter_shard_samples


@dataclass
class TestGallery:
    """One split seed's test gallery and category queries, in the order the LightningModule tests them.

    Attributes:
        tree: the category table; query ``i`` is ``tree.paths[i]``.
        query_texts: the text each category is encoded from (the module's ``category_text`` style).
        query_text_features: ``[Q, Dt]`` frozen text-encoder features of ``query_texts``.
        settings: ``{group: BoolTensor [Q]}`` the module's settings (``all``, ``general``, ``level-N``,
            ``specific``, ``specific_seen``, ``specific_unseen``).
        product_ids: test products in loader order (the metric's product index).
        titles: their titles, same order.
        category_ids: ``[N, L]`` ancestor table ids per product (``-1`` padded).
        title_features: ``[N, Dt]`` frozen-encoder title features held in memory (small or hand-made galleries;
            None when they are streamed from ``features`` or there is no feature cache).
        features: the test split's feature store (``datamodules.feature_split.FeatureSplit``) the title features are
            streamed from in chunks (:meth:`title_feature_chunks`), never loaded whole; None without a cache.
        shard_urls: the test shards (raw images for image-text baselines).
        metric_kwargs: the module's test-metric options (``ks``, ``max_rank``, ``relevance``...).
        split_seed: the DataModule's split seed.
        leakage: the shard manifest's leakage-guard report (``{}`` when unknown).
    """

    tree: CategoryTree
    query_texts: list[str]
    query_text_features: torch.Tensor
    settings: dict[str, torch.Tensor]
    product_ids: list[str]
    titles: list[str]
    category_ids: torch.Tensor
    title_features: torch.Tensor | None = None
    features: Any = None
    shard_urls: list[str] = field(default_factory=list)
    metric_kwargs: dict[str, Any] = field(default_factory=dict)
    split_seed: int = 0
    leakage: dict[str, Any] = field(default_factory=dict)

    __test__ = False  # not a pytest test class, whatever its name

    @property
    def num_queries(self) -> int:
        return len(self.query_texts)

    @property
    def num_products(self) -> int:
        return len(self.product_ids)

    @property
    def has_titles(self) -> bool:
        """Whether any test product has a title (an image-only catalogue or a folder tree has none)."""
        return any(self.titles)

    @property
    def has_title_features(self) -> bool:
        """Whether cached title features exist (in memory or in the feature store)."""
        return self.title_features is not None or (
            self.features is not None and "title" in getattr(self.features, "columns", {})
        )

    def title_feature_chunks(self, chunk_size: int = 65536) -> Iterator[torch.Tensor]:
        """The test products' title features in gallery order, ``[c, Dt]`` float32 ``chunk_size`` rows at a time
        (read from the feature store chunk by chunk: memory independent of the gallery size)."""
        if not self.has_title_features:
            raise ValueError("no cached title features (data.use_features: true builds them)")
        for start in range(0, self.num_products, chunk_size):
            stop = min(self.num_products, start + chunk_size)
            if self.title_features is not None:
                yield self.title_features[start:stop].float()
            else:
                yield torch.from_numpy(self.features.read("title", np.arange(start, stop))).float()

    def records(self) -> Iterator[dict]:
        """The raw test records (``__key__``, ``jpg`` bytes, ``json`` bytes) in gallery order."""
        yield from iter_shard_samples(self.shard_urls)

    @classmethod
    def from_modules(cls, module: Any, datamodule: Any) -> TestGallery:
        """Read the gallery off a ``ClipItaModule`` given its protocol and a set-up ``CatalogueDataModule``.

        Args:
            module: the LightningModule after ``set_protocol`` (its protocol's settings and its query table's
                frozen text features are the queries).
            datamodule: the DataModule after ``setup`` (its ``datasets["test"]`` is the gallery).
        """
        dataset = datamodule.datasets["test"]
        urls = datamodule.manifest.shard_urls(datamodule.shard_dir, "test")
        titles: dict[str, str] = {}
        for record, _ in iter_shard_records(urls):  # the record codec: original id, "" when there is no title
            titles[record.id] = record.title
        product_ids = list(dataset.product_id)
        missing = [p for p in product_ids if p not in titles]
        if missing:
            raise ValueError(f"test products {missing[:5]} are not in the test shards {urls}")
        metric = module.metrics["test"]
        return cls(
            tree=datamodule.tree,
            query_texts=list(module.queries.texts),
            query_text_features=module.queries.text_features.detach().float().cpu(),
            settings={k: torch.from_numpy(v) for k, v in module.protocol.settings.items()},
            product_ids=product_ids,
            titles=[titles[p] for p in product_ids],
            category_ids=dataset.category_ids.clone(),
            features=dataset if "title" in getattr(dataset, "columns", {}) else None,  # streamed, not loaded
            shard_urls=urls,
            metric_kwargs={
                "ks": metric.ks,
                "max_rank": metric.max_rank,
                "relevance": metric.relevance,
                "ndcg_ks": metric.ndcg_ks,
                "recall_ks": metric.recall_ks,
                "ap_normalization": metric.ap_normalization,
            },
            split_seed=int(datamodule.hparams.split_seed),
            leakage=datamodule.manifest.leakage if datamodule.manifest is not None else {},
        )


def load_test_gallery(config: str | None, overrides: Sequence[str] = ()) -> TestGallery:
    """Build the module and DataModule of a ``clipita fit`` config and read their test gallery, without training.

    The DataModule shards (or reuses shards) and loads the feature cache exactly as ``clipita fit`` would; the
    module takes its protocol (and encodes the category names with its frozen text tower). Nothing is fitted.

    Args:
        config: a ``clipita fit`` YAML (None for the defaults).
        overrides: ``--key value`` pairs as on the command line, e.g. ``["--data.split_seed", "1"]``.
    """
    from clipita.factory import build, config_args

    built = build(config_args(config, overrides))
    module, datamodule = built.module, built.datamodule  # the DataModule got the network's towers by the link
    datamodule.trainer = (
        built.trainer
    )  # its features are encoded on the Trainer's device, as in `clipita fit`
    datamodule.prepare_data()
    datamodule.setup("test")
    module.set_protocol(datamodule.protocol(module.net.category_text))
    return TestGallery.from_modules(module, datamodule)
