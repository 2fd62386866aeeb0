"""The streamed BM25 and random baselines: ``[Q, c]`` product blocks, never a ``[Q, N]`` matrix (issue 14)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from clipita.baselines import (
    TestGallery,
    bm25_chunks,
    bm25_scores,
    evaluate_scores,
    random_chunks,
    random_scores,
    run_baseline,
)
from clipita.baselines.bm25 import _tokenize, bm25_sparse
from clipita_core.tree import CategoryTree

random_module = importlib.import_module(
    "clipita.baselines.random_scores"
)  # the package's name is the function

LEAVES = [
    ("Footwear", "Shoes", "Sports Shoes"),
    ("Footwear", "Shoes", "Casual Shoes"),
    ("Footwear", "Sandals", "Flat Sandals"),
    ("Accessories", "Watches", "Analog Watches"),
    ("Accessories", "Watches", "Digital Watches"),
    ("Accessories", "Wallets", "Wallets"),
    ("Apparel", "Topwear", "Shirts"),
    ("Apparel", "Topwear", "Tshirts"),
]
WORDS = ["blue", "red", "men", "women", "leather", "cotton", "slim", "black", "gold", "classic", "sports"]


def generated_gallery(num_products: int = 300, seed: int = 0) -> TestGallery:
    """A gallery of ``num_products`` titled products: a leaf word or two plus random filler words."""
    rng = np.random.default_rng(seed)
    tree = CategoryTree.from_paths(LEAVES)
    leaves = torch.zeros(len(tree), dtype=torch.bool)
    leaves[tree.leaves] = True
    paths, titles = [], []
    for _ in range(num_products):
        path = LEAVES[rng.integers(len(LEAVES))]
        words = list(rng.choice(WORDS, size=rng.integers(1, 5)))
        if rng.random() < 0.7:  # most titles name their category, some a neighbour's, some nothing
            words.append(path[-1] if rng.random() < 0.8 else LEAVES[rng.integers(len(LEAVES))][1])
        rng.shuffle(words)
        paths.append(path)
        titles.append(" ".join(words).title())
    return TestGallery(
        tree=tree,
        query_texts=tree.texts("leaf"),
        query_text_features=torch.randn(len(tree), 4, generator=torch.Generator().manual_seed(seed)),
        settings={"all": torch.ones(len(tree), dtype=torch.bool), "specific": leaves},
        product_ids=[f"p{i}" for i in range(num_products)],
        titles=titles,
        category_ids=torch.from_numpy(tree.ancestor_matrix(paths)),
        metric_kwargs={"ks": (1, 5, 10), "max_rank": 20},
        split_seed=0,
    )


def dense_bm25(queries, documents, k1=1.5, b=0.75, method="lucene", stemmer="plural") -> torch.Tensor:
    """The ``[Q, N]`` computation the baseline made before streaming (the reference the blocks must equal)."""
    import bm25s

    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(_tokenize(documents, stemmer), show_progress=False)
    out = np.zeros((len(queries), len(documents)), dtype=np.float32)
    for i, tokens in enumerate(_tokenize(queries, stemmer)):
        tokens = [t for t in tokens if t]
        if tokens:
            out[i] = retriever.get_scores(tokens)
    return torch.from_numpy(out)


def assert_same_result(a, b) -> None:
    assert torch.equal(a.ranking, b.ranking)
    assert a.per_query.keys() == b.per_query.keys()
    for name, values in a.per_query.items():
        assert torch.equal(values.isnan(), b.per_query[name].isnan()), name
        assert torch.equal(values.nan_to_num(), b.per_query[name].nan_to_num()), name
    assert a.metrics == pytest.approx(b.metrics, nan_ok=True, rel=0, abs=0)


@pytest.mark.parametrize(("method", "stemmer"), [("lucene", "plural"), ("robertson", "none")])
def test_bm25_blocks_equal_the_dense_matrix(method, stemmer):
    gallery = generated_gallery()
    dense = dense_bm25(gallery.query_texts, gallery.titles, method=method, stemmer=stemmer)
    assert (dense != 0).any(dim=1).sum() >= 6  # most categories match some title
    matrix = bm25_sparse(gallery.query_texts, gallery.titles, method=method, stemmer=stemmer)
    assert matrix.nnz == int((dense != 0).sum()) < dense.numel() // 2  # only the matches are held
    blocks = list(bm25_chunks(gallery, chunk_size=7, method=method, stemmer=stemmer))
    assert {b.shape[1] for b in blocks[:-1]} == {7} and blocks[-1].shape[1] == gallery.num_products % 7
    assert torch.equal(torch.cat(blocks, dim=1), dense)
    assert torch.equal(bm25_scores(gallery, method=method, stemmer=stemmer), dense)
    streamed = evaluate_scores(iter(blocks), gallery)
    assert_same_result(streamed, evaluate_scores(dense, gallery))
    assert_same_result(run_baseline("bm25", gallery, {"method": method, "stemmer": stemmer}), streamed)


def test_random_blocks_are_reproducible_and_independent_of_the_chunk_size(monkeypatch):
    monkeypatch.setattr(random_module, "RANDOM_BLOCK", 64)  # several seeded blocks in a small gallery
    gallery = generated_gallery(num_products=300)
    whole = random_scores(gallery, seed=3)
    assert whole.shape == (gallery.num_queries, gallery.num_products)
    assert torch.equal(whole, random_scores(gallery, seed=3))
    for chunk_size in (1, 7, 64, 100, 1000):
        blocks = list(random_chunks(gallery, seed=3, chunk_size=chunk_size))
        assert max(b.shape[1] for b in blocks) == min(chunk_size, gallery.num_products)
        assert torch.equal(torch.cat(blocks, dim=1), whole), chunk_size
    assert not torch.equal(whole[:, :64], whole[:, 64:128])  # each block its own draw
    assert not torch.equal(whole, random_scores(gallery, seed=4))
    gallery.split_seed = 1
    assert not torch.equal(whole, random_scores(gallery, seed=3))
    gallery.split_seed = 0
    a = run_baseline("random", gallery, {"seed": 3})
    assert_same_result(a, evaluate_scores(whole, gallery))
    assert_same_result(a, evaluate_scores(random_chunks(gallery, seed=3, chunk_size=5), gallery))


def test_random_scores_are_at_chance_level():
    """Mean P@10 over queries and seeds is the relevant fraction of the gallery (what a random ranking gets)."""
    gallery = generated_gallery(num_products=400)
    precision = []
    for seed in range(20):
        result = run_baseline("random", gallery, {"seed": seed})
        precision.append(result.per_query["p@10"])
    observed = torch.stack(precision).mean(dim=0)
    chance = result.per_query["num_relevant"].float() / gallery.num_products
    assert torch.allclose(observed, chance, atol=0.12), (observed, chance)
    assert abs(observed.mean() - chance.mean()) < 0.03


class FakeClip(torch.nn.Module):
    """A stand-in image-text model: text = a hashed bag of characters, image = its mean colour and a few pixels."""

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1)
        return torch.cat([images.mean(dim=(2, 3)), flat[:, :5]], dim=1)


def fake_open_clip(model: str, pretrained: str | None):
    def preprocess(image):
        return torch.from_numpy(np.asarray(image.resize((4, 4)), dtype=np.float32) / 255.0).permute(2, 0, 1)

    def tokenizer(texts):
        out = torch.zeros(len(texts), 8)
        for i, text in enumerate(texts):
            for ch in text:
                out[i, ord(ch) % 8] += 1.0
        return out

    return FakeClip(), preprocess, tokenizer


def test_image_zero_shot_streams_one_block_per_image_batch(tmp_path, monkeypatch):
    """The image-text baseline reads the test shards once, in gallery order, and yields one [Q, b] block per batch:
    no [N, D] image matrix, no [Q, N] scores; the blocks are the whole cosine matrix."""
    import io

    import torch.nn.functional as F
    import webdataset as wds
    from PIL import Image

    from clipita.baselines import image_zero_shot as module
    from datamodules.records import ShardRecord, encode_sample

    gallery = generated_gallery(num_products=23)
    images = []
    with wds.TarWriter(str(tmp_path / "test-000000.tar"), encoder=False) as sink:
        for i, product_id in enumerate(gallery.product_ids):
            buffer = io.BytesIO()
            Image.new("RGB", (6, 6), (i * 11 % 256, i * 37 % 256, i * 71 % 256)).save(buffer, format="JPEG")
            images.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
            record = ShardRecord(id=product_id, category=("A",), title="", attributes={}, split="test")
            sink.write(encode_sample(record, buffer.getvalue()))
    gallery.shard_urls = [str(tmp_path / "test-000000.tar")]
    monkeypatch.setattr(module, "_load_open_clip", fake_open_clip)

    blocks = list(module.image_zero_shot_chunks(gallery, model="fake", batch_size=5))
    assert [b.shape[1] for b in blocks] == [5, 5, 5, 5, 3]
    net, preprocess, tokenizer = fake_open_clip("fake", None)
    queries = F.normalize(
        net.encode_text(tokenizer([f"a photo of {t}." for t in gallery.query_texts])), dim=-1
    )
    products = F.normalize(net.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1)
    torch.testing.assert_close(torch.cat(blocks, dim=1), queries @ products.T)
    result = run_baseline("image_zero_shot", gallery, {"model": "fake", "batch_size": 4})
    assert result.ranking.shape[0] == gallery.num_queries

    gallery.product_ids = list(reversed(gallery.product_ids))  # shards out of step with the gallery: named
    with pytest.raises(ValueError, match="is not the gallery's product 0"):
        list(module.image_zero_shot_chunks(gallery, model="fake"))
