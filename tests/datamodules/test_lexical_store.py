"""The lexical token store: with a lexical tokenizer handed over, each product's hashed title + attribute tokens
are stored per shard (resumable, reused across split seeds), batches carry ``lexical_tokens`` and the training
split's BM25 statistics are counted; without one nothing lexical is built."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from sample_shards import shard_two_seeds

from clipita_core.tree import CategoryTree
from datamodules.feature_encoding import encode_features
from datamodules.feature_reuse import read_shard_records
from datamodules.feature_split import FeatureSplit
from datamodules.features import IDS, LEXICAL_TOKENS
from datamodules.lexical_store import document_counts, lexical_texts, shard_token_rows
from datamodules.sharding import SPLITS, load_manifest
from lightning_modules.components import TextEncoder
from lightning_modules.lexical import LexicalSignal, document_statistics


class CountingTokenizer(LexicalSignal):
    """The real tokenizer, counting the texts it is asked to tokenize."""

    def __init__(self) -> None:
        super().__init__(num_buckets=4096)
        self.texts = 0

    def tokenize(self, texts):
        self.texts += len(texts)
        return super().tokenize(texts)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    return shard_two_seeds(tmp_path_factory.mktemp("lexical"))


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder()


def _encode(shard_dir, root, text_encoder, tokenizer):
    return encode_features(
        str(shard_dir),
        load_manifest(str(shard_dir)),
        root,
        None,
        text_encoder,
        batch_size=8,
        num_workers=0,
        progress=False,
        tokenizer=tokenizer,
    )


def _splits(stores, shard_dir) -> dict[str, FeatureSplit]:
    manifest = load_manifest(str(shard_dir))
    tree = CategoryTree.from_json(manifest.tree_paths)
    out = {}
    for split in SPLITS:
        info = manifest.split(split)
        out[split] = FeatureSplit(stores, [(n, info.shard_files[n].count) for n in info.shards], tree)
    return out


def _expected_rows(shard_dir, split, tokenizer) -> dict[str, list[int]]:
    manifest = load_manifest(str(shard_dir))
    names = manifest.attribute_names
    out = {}
    for shard in manifest.split(split).shards:
        records, _ = read_shard_records(str(shard_dir / shard))
        texts = lexical_texts([r.title for r in records], [dict(r.attributes) for r in records], names)
        for record, row in zip(records, LexicalSignal.tokenize(tokenizer, texts), strict=True):
            out[record.id] = row.tolist()
    return out


def test_batches_carry_the_products_tokens_and_the_statistics_are_the_training_splits(
    catalogue, tmp_path, text_encoder
):
    shard_dir = catalogue / "shards" / "seed0"
    tokenizer = CountingTokenizer()
    stores = _encode(shard_dir, tmp_path / "features", text_encoder, tokenizer)
    assert {s.kind for s in stores} == {"text", "lexical"} and tokenizer.texts == 90
    splits = _splits(stores, shard_dir)
    for split, dataset in splits.items():
        batch = dataset.batch(np.arange(len(dataset)))
        tokens = batch[LEXICAL_TOKENS]
        assert tokens.dtype == torch.long and tokens.shape[0] == len(dataset)
        want = _expected_rows(shard_dir, split, tokenizer)
        for pid, row in zip(batch["product_id"], tokens.tolist(), strict=True):
            assert [t for t in row if t >= 0] == want[pid] and want[pid], pid
            assert row[len(want[pid]) :] == [-1] * (len(row) - len(want[pid]))
        # row items (the DataLoader path) have the split's one width, so they collate
        items = dataset.__getitems__([0, len(dataset) - 1])
        assert items[0][LEXICAL_TOKENS].shape == items[1][LEXICAL_TOKENS].shape == tokens.shape[1:]

    train = splits["train"]
    stats = train.lexical_statistics(tokenizer.num_buckets, chunk_size=7)
    reference = document_statistics(list(_expected_rows(shard_dir, "train", tokenizer).values()), 4096)
    np.testing.assert_array_equal(stats["doc_freq"], reference["doc_freq"])
    assert stats["num_docs"] == reference["num_docs"] == len(train)
    assert stats["avg_len"] == pytest.approx(reference["avg_len"])
    tokenizer.set_statistics(stats)
    assert tokenizer.fitted
    with pytest.raises(Exception, match="num_buckets"):
        train.lexical_statistics(16)


def test_a_killed_encode_resumes_the_missing_token_shard_only(catalogue, tmp_path, text_encoder):
    shard_dir = catalogue / "shards" / "seed0"
    stores = _encode(shard_dir, tmp_path / "features", text_encoder, CountingTokenizer())
    lexical = next(s for s in stores if s.kind == "lexical")
    name, count, _ = lexical.shards[0]
    before = np.load(lexical.path(name, LEXICAL_TOKENS))
    lexical.path(name, IDS).unlink()
    (lexical.folder / "complete.json").unlink()
    tokenizer = CountingTokenizer()
    again = _encode(shard_dir, tmp_path / "features", text_encoder, tokenizer)
    assert tokenizer.texts == count and all(s.is_complete() for s in again)
    np.testing.assert_array_equal(np.load(lexical.path(name, LEXICAL_TOKENS)), before)


def test_another_split_seed_copies_the_token_rows(catalogue, tmp_path, text_encoder):
    root = tmp_path / "features"
    _encode(catalogue / "shards" / "seed0", root, text_encoder, CountingTokenizer())
    seed1 = catalogue / "shards" / "seed1"
    tokenizer = CountingTokenizer()
    reused = _encode(seed1, root, text_encoder, tokenizer)
    assert tokenizer.texts == 0
    fresh = _encode(seed1, tmp_path / "fresh", text_encoder, CountingTokenizer())
    for split in SPLITS:
        got, want = _splits(reused, seed1)[split], _splits(fresh, seed1)[split]
        a, b = got.batch(np.arange(len(got))), want.batch(np.arange(len(want)))
        assert a["product_id"] == b["product_id"]
        assert torch.equal(a[LEXICAL_TOKENS], b[LEXICAL_TOKENS]), split


def test_without_a_tokenizer_nothing_lexical_is_built(catalogue, tmp_path, text_encoder):
    shard_dir = catalogue / "shards" / "seed0"
    stores = _encode(shard_dir, tmp_path / "features", text_encoder, None)
    assert [s.kind for s in stores] == ["text"]
    assert not list((tmp_path / "features").glob("lexical-*"))
    train = _splits(stores, shard_dir)["train"]
    assert LEXICAL_TOKENS not in train.batch([0, 1])
    assert train.lexical_statistics(4096) is None


def test_the_datamodule_hands_statistics_over_only_with_a_lexical_signal(tmp_path, text_encoder):
    from datamodules.catalogue_datamodule import CatalogueDataModule

    def datamodule(lexical):
        encoders = types.SimpleNamespace(image_encoder=None, text_encoder=text_encoder, lexical=lexical)
        dm = CatalogueDataModule(
            work_dir=str(tmp_path / "work"), sample_products=60, batch_size=4, encoders=encoders
        )
        dm.setup("fit")
        return dm

    plain = datamodule(None)
    assert plain.lexical_statistics is None
    assert LEXICAL_TOKENS not in next(iter(plain.train_dataloader()))

    dm = datamodule(LexicalSignal(num_buckets=4096))
    stats = dm.lexical_statistics
    assert stats["num_docs"] == dm.split_size("train") and stats["doc_freq"].shape == (4096,)
    batch = next(iter(dm.train_dataloader()))
    assert batch[LEXICAL_TOKENS].shape[0] == 4 and (batch[LEXICAL_TOKENS] >= 0).any()


def test_raw_image_batches_carry_the_token_stores_rows(catalogue, tmp_path, text_encoder):
    """The raw path (images decoded from the shards: what fine-tuning trains and tests on) tokenizes each product's
    title + attribute values itself; its ``lexical_tokens`` are the token store's rows for the same products."""
    from datamodules.shard_pipeline import build_shard_pipeline

    shard_dir = catalogue / "shards" / "seed0"
    manifest = load_manifest(str(shard_dir))
    tree = CategoryTree.from_json(manifest.tree_paths)
    tokenizer = LexicalSignal(num_buckets=4096)
    splits = _splits(_encode(shard_dir, tmp_path / "features", text_encoder, tokenizer), shard_dir)
    names = manifest.attribute_names
    assert names, "the sample must have attributes for this test to cover their values"

    def rows(batch) -> dict[str, list[int]]:
        return {
            pid: [t for t in row if t >= 0]
            for pid, row in zip(batch["product_id"], batch[LEXICAL_TOKENS].tolist(), strict=True)
        }

    def transform(image):
        return torch.zeros(3, 4, 4)

    for split in ("train", "test"):
        store = rows(splits[split].batch(np.arange(len(splits[split]))))
        urls = manifest.shard_urls(shard_dir, split)
        raw: dict[str, list[int]] = {}
        for batch in build_shard_pipeline(
            urls, transform, tree, 7, training=False, tokenizer=tokenizer, attribute_names=names
        ):
            assert batch[LEXICAL_TOKENS].dtype == torch.long and batch[LEXICAL_TOKENS].shape[0] == len(
                batch["product_id"]
            )
            raw.update(rows(batch))
        assert raw == store and all(store.values()), split
        # the raw path's BM25 statistics (its shards' records, no image decoded) are the token store's
        counted = document_counts(shard_token_rows(tokenizer, urls, names), tokenizer.num_buckets)
        stored = splits[split].lexical_statistics(tokenizer.num_buckets)
        np.testing.assert_array_equal(counted["doc_freq"], stored["doc_freq"])
        assert (counted["num_docs"], counted["avg_len"]) == (stored["num_docs"], stored["avg_len"]) != (0, 0)
    # attribute values count: without the names the rows are shorter (the comparison above can fail)
    batch = next(iter(build_shard_pipeline(urls, transform, tree, 7, training=False, tokenizer=tokenizer)))
    assert any(len(r) < len(store[p]) for p, r in rows(batch).items())
    # without a tokenizer (a model with no lexical signal) raw batches carry no tokens, as feature batches
    batch = next(iter(build_shard_pipeline(urls, transform, tree, 7, training=False)))
    assert LEXICAL_TOKENS not in batch
