"""The LightningDataModule: catalogue -> shards -> (feature cache) -> train/val/test loaders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from clipita_core.manifest import Manifest
from clipita_core.paths import CategoryText
from clipita_core.protocol import EvalProtocol
from clipita_core.tree import CategoryTree
from clipita_core.vocabulary import SPLITS
from datamodules.augmentation import make_augmentation
from datamodules.epoch_sampler import EpochSeededSampler
from datamodules.feature_encoding import ENCODE_DEFAULTS, EncodeOptions, encode_features
from datamodules.feature_split import FeatureSplit
from datamodules.lexical_store import document_counts, shard_token_rows
from datamodules.manifest import load_manifest
from datamodules.sample_catalogue.generate import cached_sample_catalogue, sample_catalogue_ready, sample_key
from datamodules.shard_request import request_matches, shard_for_request, wait_for_shards
from datamodules.splits import SPLIT_DEFAULTS, SPLIT_RULES, SplitOptions, split_options_doc

SAMPLE = "sample"


class CatalogueDataModule(L.LightningDataModule):
    """Shards a catalogue, caches frozen-encoder features, and serves batches for fit/validate/test/predict.

    The DataModule knows nothing of the model: the encoders are handed to it (``encoders``: any object with
    ``.image_encoder`` and ``.text_encoder``, e.g. the ClipIta network; the CLI links the model's network to it).
    They are needed only to build the feature cache (every rank of the job encodes its share of the shards in
    ``setup``) and for the raw path's image transform.

    Everything it builds lives under ``work_dir`` and is reused on the next run while still valid: the shards (while
    the catalogue path and split options are unchanged) and the feature cache (while the encoders and the shards'
    content hash are unchanged).

    Args:
        catalogue: a catalogue schema YAML (see ``experiments/catalogues/``) or ``"sample"`` for the built-in generated
            sample catalogue.
        work_dir: where shards and feature caches are written.
        batch_size: training batch size per device (the number of in-batch negatives per rank).
        eval_batch_size: validation/test/predict batch size.
        num_workers: DataLoader worker processes (also the processes checking the images when the catalogue is
            sharded).
        use_features: train on cached frozen-encoder features (seconds on a CPU) instead of raw images/text. Needs
            frozen encoders; set False to fine-tune encoders on raw shards.
        shard_size: products per shard.
        {split_options}
        sample_products: size of the built-in sample catalogue.
        sample_titles: titles of the built-in sample: ``signal`` (they name the category, with noise), ``noise``
            (no category signal) or ``none`` (no titles).
        encode_batch_size: images per encoder forward pass when building the feature cache
            (:class:`datamodules.feature_encoding.EncodeOptions`, also ``clipita encode``'s default).
        epoch_samples: raw-shard training only: samples per epoch across all ranks (default: the train split size).
        sampler: ``random`` (uniform shuffling) or ``category_balanced`` (products drawn with probability
            proportional to ``count(leaf) ** -balance_power``, so rare categories are seen as often as common ones
            when ``balance_power = 1``). Feature path only.
        balance_power: strength of the category balancing (0 = uniform over products).
        encode_workers: image-decoding worker processes per rank while building the feature cache (also
            ``clipita encode``'s default).
        augmentation: raw-shard training only: ``crop_flip`` (a random resized crop of at least ``crop_min_scale``
            of the image's area, resized back to the tower's ``image_size``, and a horizontal flip; drawn per
            sample from ``(split_seed, epoch, rank, worker, sample)``, so a resumed run augments as the
            uninterrupted one) or ``none``. Applied to the image tower's own transform (its resolution is
            ``model.net.image_size``); evaluation is never augmented.
        crop_min_scale: smallest crop area of ``crop_flip``, as a fraction of the image (1.0: flip only).
        train_image_size: raw-shard training only: the training images' side after the crop (None: the tower's
            ``image_size``); lower trains faster, while validation, test and serving stay at the tower's size.
        encoders: the object holding the frozen towers (``.image_encoder`` may be None for text-only models). When
            it also has a lexical signal (``.lexical``, not None: an object with ``tokenize(texts)``,
            ``num_buckets`` and ``tokenizer_id``), each product's hashed title + attribute tokens are stored beside
            the features, batches carry ``lexical_tokens`` and :attr:`lexical_statistics` counts the training
            split; without one nothing lexical is encoded or read.
    """

    def __init__(
        self,
        catalogue: str = SAMPLE,
        work_dir: str = "work/sample",
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        use_features: bool = True,
        shard_size: int = 1000,
        split_seed: int = SPLIT_DEFAULTS.seed,
        val_fraction: float = SPLIT_DEFAULTS.val_fraction,
        test_fraction: float = SPLIT_DEFAULTS.test_fraction,
        unseen_fraction: float = SPLIT_DEFAULTS.unseen_fraction,
        pseudo_novel_fraction: float = SPLIT_DEFAULTS.pseudo_novel_fraction,
        sample_products: int = 600,
        sample_titles: Literal["signal", "noise", "none"] = "signal",
        encode_batch_size: int = ENCODE_DEFAULTS.batch_size,
        epoch_samples: int | None = None,
        sampler: Literal["random", "category_balanced"] = "random",
        balance_power: float = 0.5,
        encode_workers: int = ENCODE_DEFAULTS.num_workers,
        augmentation: Literal["crop_flip", "none"] = "crop_flip",
        crop_min_scale: float = 0.8,
        train_image_size: int | None = None,
        encoders: Any = None,
    ) -> None:
        super().__init__()
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for in-batch negatives, got {batch_size}")
        if catalogue != SAMPLE and not Path(catalogue).is_file():
            raise FileNotFoundError(
                f"catalogue schema {catalogue!r} does not exist (or use catalogue: sample)"
            )
        self.save_hyperparameters(ignore=["encoders"])  # a network is no hyperparameter (nor checkpoint data)
        self.encoders = encoders
        self.work_dir = Path(work_dir)
        # the split options, checked (a bad fraction fails here, not when the catalogue is sharded)
        self.split_options = SplitOptions(
            split_seed, val_fraction, test_fraction, unseen_fraction, pseudo_novel_fraction
        )
        make_augmentation(
            augmentation, crop_min_scale, train_image_size
        )  # bad values fail here, not in a worker
        if sample_titles not in ("signal", "noise", "none"):
            raise ValueError(f"sample_titles must be 'signal', 'noise' or 'none', got {sample_titles!r}")
        split_name = f"seed{split_seed}" + (f"-pn{pseudo_novel_fraction:g}" if pseudo_novel_fraction else "")
        self.shard_dir = self.work_dir / "shards" / split_name  # one split per seed, side by side
        self.features_root = self.work_dir / "features"
        self.manifest: Manifest | None = None
        self.tree: CategoryTree | None = None
        self.datasets: dict[str, Dataset] = {}
        self._lexical_statistics: dict | None = None
        self._train_stream: Any = None  # the raw path's training loader (a ShardLoader), for its position
        self._train_stream_state: dict | None = None  # a checkpoint's position, for the next training loader

    # ---------------------------------------------------------------------------------------------- building
    def catalogue_path(self, generate: bool = True) -> str | None:
        """The catalogue schema sharded: the user's, or the built-in sample's (generated under ``work_dir`` when
        missing or made with other options; with ``generate=False`` None then, so a waiting rank never writes)."""
        h = self.hparams
        if h.catalogue != SAMPLE:
            return h.catalogue
        if not generate:
            return sample_catalogue_ready(self.work_dir, h.sample_products, h.sample_titles)
        return cached_sample_catalogue(self.work_dir, h.sample_products, h.sample_titles)

    def _shard_request(self, catalogue: str) -> dict:
        h, split = self.hparams, self.split_options
        request = {
            "catalogue": str(Path(catalogue).resolve()),
            "shard_size": h.shard_size,
            "seed": split.seed,
            "val_fraction": split.val_fraction,
            "test_fraction": split.test_fraction,
            "unseen_fraction": split.unseen_fraction,
            **({"pseudo_novel_fraction": split.pseudo_novel_fraction} if split.pseudo_novel_fraction else {}),
            "split_rules": SPLIT_RULES,  # shards split under older rules are split again
        }
        if h.catalogue == SAMPLE:  # a regenerated sample (another size or title mode) is another catalogue
            request["sample"] = sample_key(h.sample_products, h.sample_titles)
        return request

    def shards_ready(self) -> bool:
        """Whether :attr:`shard_dir` holds the shards of this DataModule's request (:mod:`datamodules.shard_request`)."""
        # polled by waiting ranks: they never generate the sample (that raced the rank that does)
        catalogue = self.catalogue_path(generate=False)
        return catalogue is not None and request_matches(self.shard_dir, self._shard_request(catalogue))

    def ensure_shards(self, wait: bool = False, timeout_s: float = 24 * 3600) -> Manifest:
        """Shard the catalogue unless shards made with the same request are already there and intact.

        ``wait=True`` (ranks other than 0 of a job launched all at once) waits for rank 0's shards instead.
        """
        if wait:
            wait_for_shards(self.shards_ready, self.shard_dir, timeout_s)
        catalogue = self.catalogue_path()
        request = self._shard_request(catalogue)
        return shard_for_request(catalogue, self.shard_dir, request, self.hparams.num_workers)

    def towers(self) -> tuple[Any, Any]:
        """``(image_encoder, text_encoder)`` of the ``encoders`` object (a clear error when none was given)."""
        holder = self.encoders
        if holder is None or not hasattr(holder, "text_encoder"):
            raise ValueError(
                "the DataModule needs `encoders` (an object with .image_encoder and .text_encoder, e.g. the ClipIta "
                "network) to build the feature cache or to transform raw images; pass encoders=<network>"
            )
        return getattr(holder, "image_encoder", None), holder.text_encoder

    @property
    def encode_options(self) -> EncodeOptions:
        """How this DataModule encodes its feature cache (``data.encode_batch_size``, ``data.encode_workers``): what
        a fit's setup and ``clipita encode`` both use."""
        return EncodeOptions(self.hparams.encode_batch_size, self.hparams.encode_workers)

    def lexical_tokenizer(self) -> Any:
        """The encoders' lexical signal (its ``tokenize``), or None when the model has none."""
        return getattr(self.encoders, "lexical", None)

    @property
    def lexical_statistics(self) -> dict | None:
        """BM25 corpus statistics of the TRAINING split's token rows (``{"doc_freq", "num_docs", "avg_len"}``,
        plain numpy data for ``LexicalSignal.set_statistics``), or None without a lexical signal. Counted once per
        DataModule by a streaming bincount: of the token store (``FeatureSplit.lexical_statistics``), or on the raw
        path of the training shards' records tokenized as raw batches are (the same rows, the same counts)."""
        tokenizer = self.lexical_tokenizer()
        train = self.datasets.get("train")
        raw = not self.hparams.use_features and self.manifest is not None
        if tokenizer is None or not (isinstance(train, FeatureSplit) or raw):
            return None
        if self._lexical_statistics is None:
            if isinstance(train, FeatureSplit):
                self._lexical_statistics = train.lexical_statistics(int(tokenizer.num_buckets))
            else:
                urls = self.manifest.shard_urls(self.shard_dir, "train")
                rows = shard_token_rows(tokenizer, urls, self.attribute_names)
                self._lexical_statistics = document_counts(rows, int(tokenizer.num_buckets))
        return self._lexical_statistics

    def prepare_data(self) -> None:
        self.ensure_shards()  # local rank 0 only; the features are encoded by every rank in setup

    def _rank(self) -> tuple[int, int, Any]:
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return 0, 1, None
        return trainer.global_rank, trainer.world_size, trainer.strategy.barrier

    def _feature_device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def read_catalogue(self, wait: bool | None = None) -> Manifest:
        """Shard the catalogue if needed and load its manifest and category tree (no image is encoded): what
        :attr:`modalities_present` and the other metadata read. Idempotent.

        Args:
            wait: wait for another rank's shards instead of sharding (default: unless this is rank 0).
        """
        if self.manifest is None:
            if not self.shards_ready():  # setup without prepare_data (a bare DataModule)
                self.ensure_shards(wait=self._rank()[0] != 0 if wait is None else wait)
            self.manifest = load_manifest(str(self.shard_dir), check_hashes=False)
            self.tree = CategoryTree.from_json(self.manifest.tree_paths)
        return self.manifest

    @property
    def catalogue_name(self) -> str:
        """The catalogue's name (its schema's ``name``; the file stem before the manifest is read)."""
        if self.manifest is not None:
            return str(self.manifest.catalogue_name or self.hparams.catalogue)
        return SAMPLE if self.hparams.catalogue == SAMPLE else Path(self.hparams.catalogue).stem

    def setup(self, stage: str | None = None) -> None:
        self.read_catalogue()
        if self.hparams.use_features and not self.datasets:
            image_encoder, text_encoder = self.towers()
            rank, world_size, barrier = self._rank()
            device = self._feature_device()
            for tower in (image_encoder, text_encoder):
                if tower is not None:
                    tower.to(device)
            stores = encode_features(
                str(self.shard_dir),
                self.manifest,
                str(self.features_root),
                image_encoder,
                text_encoder,
                batch_size=self.encode_options.batch_size,
                num_workers=self.encode_options.num_workers,
                rank=rank,
                world_size=world_size,
                barrier=barrier,
                progress=os.environ.get("CLIPITA_QUIET") is None,
                tokenizer=self.lexical_tokenizer(),
            )
            for split in SPLITS:
                info = self.manifest.split(split)
                shards = [(name, int(info.shard_files[name].count)) for name in info.shards]
                self.datasets[split] = FeatureSplit(stores, shards, self.tree)

    # ---------------------------------------------------------------------------------------------- metadata
    @property
    def attribute_names(self) -> list[str]:
        return self.manifest.attribute_names if self.manifest is not None else []

    def protocol(self, text_style: CategoryText) -> EvalProtocol:
        """The evaluation protocol of this split (its queries in ``text_style``, settings, and seen / novel /
        unseen categories), built from the manifest (:meth:`EvalProtocol.from_manifest`)."""
        return EvalProtocol.from_manifest(self.read_catalogue(), text_style)

    @property
    def modalities_present(self) -> list[str]:
        """Modalities at least one product of the catalogue has (``image`` always; ``title``, ``attributes``,
        ``description`` when some product has one), from the manifest."""
        return self.manifest.modalities_present if self.manifest is not None else []

    @property
    def modality_counts(self) -> dict[str, dict[str, int]]:
        """Per modality, how many products have it and how many lack it (``{}`` for old manifests)."""
        return self.manifest.modalities if self.manifest is not None else {}

    def split_size(self, split: str) -> int:
        return self.manifest.count(split)

    # ------------------------------------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The raw training stream's position (``{"train_stream": {"epoch", "batches", ...}}``), kept by Lightning
        in every checkpoint; ``{}`` on the feature path (whose sampler replays from the trainer's epoch)."""
        if self._train_stream is None:
            return {}
        return {"train_stream": self._train_stream.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the raw training stream where the checkpoint was written: the next training loader starts at
        that batch of that epoch (or at the next epoch when that one was done). Lightning restores a stateful
        loader itself only when it resumes inside an epoch; this also covers a checkpoint written at an epoch's
        end, after which the stream must go on with the next epoch rather than start again at epoch 0."""
        self._train_stream_state = state_dict.get("train_stream")

    # ----------------------------------------------------------------------------------------------- loaders
    def _raw_loader(self, split: str, training: bool) -> Any:
        from datamodules.shard_pipeline import build_shard_pipeline

        image_encoder, _ = self.towers()
        if image_encoder is None:
            raise ValueError("the raw path needs an image encoder (its transform decodes the shards' images)")
        transform = image_encoder.transform
        batch_size = self.hparams.batch_size if training else self.hparams.eval_batch_size
        loader = build_shard_pipeline(
            self.manifest.shard_urls(self.shard_dir, split),
            transform,
            self.tree,
            batch_size,
            training=training,
            epoch_samples=self.hparams.epoch_samples or self.split_size(split),
            seed=self.hparams.split_seed,
            num_workers=self.hparams.num_workers,
            augmentation=make_augmentation(
                self.hparams.augmentation, self.hparams.crop_min_scale, self.hparams.train_image_size
            )
            if training
            else None,
            tokenizer=self.lexical_tokenizer(),  # the BM25 signal's token rows, as on the feature path
            attribute_names=self.attribute_names,
        )
        if training:
            if self._train_stream_state is not None:
                loader.load_state_dict(self._train_stream_state)
                self._train_stream_state = None
            self._train_stream = loader
        return loader

    def _loader(self, split: str, training: bool) -> DataLoader:
        if not self.hparams.use_features:
            return self._raw_loader(split, training)
        dataset = self.datasets[split]
        rank, world_size, _ = self._rank()
        if training and len(dataset) < self.hparams.batch_size * world_size:
            raise ValueError(
                f"the train split has {len(dataset)} products, fewer than one global batch: batch_size="
                f"{self.hparams.batch_size} x {world_size} rank(s)"
            )
        sampler = None
        if training:
            weights = None
            if self.hparams.sampler == "category_balanced":
                leaves = dataset.category_nodes  # each product's own node (its leaf)
                counts = torch.bincount(leaves, minlength=len(self.tree)).float()
                weights = counts[leaves] ** -self.hparams.balance_power
            sampler = EpochSeededSampler(  # global batches as on one process, each rank its block of them
                len(dataset),
                seed=self.hparams.split_seed,
                weights=weights,
                batch_size=self.hparams.batch_size,
                rank=rank,
                world_size=world_size,
            )
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size if training else self.hparams.eval_batch_size,
            shuffle=False,
            sampler=sampler,
            drop_last=training,  # equal batch shapes on every rank for the gathered contrastive loss
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", training=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", training=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", training=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", training=False)


# the split options' help (``--data.split_seed`` ...), declared once on SplitOptions
CatalogueDataModule.__doc__ = split_options_doc(CatalogueDataModule.__doc__, {"seed": "split_seed"})
