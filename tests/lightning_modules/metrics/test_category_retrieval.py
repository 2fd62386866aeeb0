"""CategoryRetrievalMetrics: equal to torchmetrics per query, batch- and rank-invariant, constant-size state."""

from __future__ import annotations

import random

import pytest
import torch
from torchmetrics.functional.retrieval import (
    retrieval_average_precision,
    retrieval_normalized_dcg,
    retrieval_precision,
    retrieval_r_precision,
    retrieval_recall,
    retrieval_reciprocal_rank,
)

from clipita_core.tree import CategoryTree
from lightning_modules.metrics import CategoryRetrievalMetrics, product_leaves

DIM = 8


def catalogue(seed: int, n: int = 120, rounded: bool = False):
    """A random 3-level tree; ~15% of products are labelled at an internal node (their path stops early)."""
    rng = random.Random(seed)
    leaves = [
        (f"T{a}", f"M{a}{b}", f"L{a}{b}{c}")
        for a in range(3)
        for b in range(2)
        for c in range(rng.randint(1, 3))
    ]
    paths = []
    for _ in range(n):
        path = rng.choice(leaves)
        paths.append(path[: rng.choice([1, 2])] if rng.random() < 0.15 else path)
    tree = CategoryTree.from_paths(leaves + paths)
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(len(tree), DIM, generator=g)
    products = torch.randn(n, DIM, generator=g)
    if rounded:  # integer vectors: exact score ties everywhere
        queries, products = queries.round(), products.round()
    category_ids = torch.as_tensor(tree.ancestor_matrix(paths))
    depth = torch.as_tensor(tree.depth)
    is_leaf = torch.zeros(len(tree), dtype=torch.bool)
    is_leaf[tree.leaves] = True
    groups = {"general": depth == 1, "level-2": depth == 2, "specific": is_leaf}
    return tree, queries, products, category_ids, groups


def make_metric(queries, groups, **kwargs) -> CategoryRetrievalMetrics:
    kwargs.setdefault("ks", (1, 3, 5))
    kwargs.setdefault("max_rank", 1000)
    kwargs.setdefault("ndcg_ks", (5,))
    kwargs.setdefault("recall_ks", (5,))
    metric = CategoryRetrievalMetrics(**kwargs)
    metric.set_queries(queries, groups)
    return metric


def relevance_matrix(category_ids: torch.Tensor, num_queries: int, relevance: str) -> torch.Tensor:
    """[Q, N] bool, built the slow obvious way."""
    target = torch.zeros(num_queries, category_ids.shape[0], dtype=torch.bool)
    for p, row in enumerate(category_ids.tolist()):
        path = [c for c in row if c >= 0]
        for c in path if relevance == "hierarchical" else path[-1:]:
            target[c, p] = True
    return target


def torchmetrics_per_query(scores: torch.Tensor, target: torch.Tensor, ks=(1, 3, 5), k_other=5):
    """Reference per-query values. Scores are turned into unique positive ranks that encode the tie rule."""
    order = torch.tensor([sorted(range(len(r)), key=lambda i: (-r[i], i)) for r in scores.tolist()])
    n = scores.shape[1]
    preds = torch.empty_like(scores).scatter_(
        1, order, torch.arange(n, 0, -1).float().expand(len(scores), n).clone()
    )
    out: dict[str, list[float]] = {}
    for p, t in zip(preds, target, strict=True):
        vals = {"r_precision": retrieval_r_precision(p, t), "mrr": retrieval_reciprocal_rank(p, t)}
        for k in ks:
            vals[f"p@{k}"] = retrieval_precision(p, t, top_k=k)
            vals[f"map@{k}"] = retrieval_average_precision(p, t, top_k=k)
        vals[f"ndcg@{k_other}"] = retrieval_normalized_dcg(p, t, top_k=k_other)
        vals[f"recall@{k_other}"] = retrieval_recall(p, t, top_k=k_other)
        for name, v in vals.items():
            out.setdefault(name, []).append(float(v))
    return {k: torch.tensor(v) for k, v in out.items()}


def assert_outputs_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, equal_nan=True, msg=f"{name} differs")


@pytest.mark.parametrize("relevance", ["hierarchical", "strict"])
@pytest.mark.parametrize("seed", range(3))
def test_per_query_values_match_torchmetrics(seed: int, relevance: str) -> None:
    tree, queries, products, category_ids, groups = catalogue(seed)
    metric = make_metric(queries, groups, relevance=relevance)
    metric.update(products, category_ids)
    per_query = metric.compute_per_query()
    target = relevance_matrix(category_ids, len(tree), relevance)
    assert torch.equal(per_query["num_relevant"], target.sum(1))
    reference = torchmetrics_per_query(queries @ products.T, target)
    has = target.any(1)
    assert (~has).any() if relevance == "strict" else has.all()
    for name, ref in reference.items():
        torch.testing.assert_close(per_query[name][has], ref[has], atol=1e-6, rtol=0, msg=name)
        assert per_query[name][~has].isnan().all()

    out = metric.compute()
    for group, mask in {"all": torch.ones(len(tree), dtype=torch.bool), **groups}.items():
        keep = mask & has
        assert out[f"{group}/num_queries"].item() == keep.sum().item()
        for name, ref in reference.items():
            expected = ref[keep].mean() if keep.any() else torch.tensor(float("nan"))
            torch.testing.assert_close(out[f"{group}/{name}"], expected, atol=1e-6, rtol=0, equal_nan=True)
    assert {
        "all/p@1_ceiling",
        "all/map@5",
        "all/r_precision",
        "all/mrr",
        "all/ndcg@5",
        "all/recall@5",
    } <= set(out)


@pytest.mark.parametrize("rounded", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_one_batch_equals_many_uneven_batches(seed: int, rounded: bool) -> None:
    _, queries, products, category_ids, groups = catalogue(seed, rounded=rounded)
    whole = make_metric(queries, groups, max_rank=7)
    whole.update(products, category_ids)
    pieces = make_metric(queries, groups, max_rank=7, chunk_size=5, query_chunk_size=7)
    cuts = [0, 1, 2, 13, 14, 50, 51, 99, 120]
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        pieces.update(products[a:b], category_ids[a:b])
    assert_outputs_equal(whole.compute(), pieces.compute())
    assert_outputs_equal(whole.compute_per_query(), pieces.compute_per_query())
    (s1, i1, r1), (s2, i2, r2) = whole.ranking(), pieces.ranking()
    assert torch.equal(i1, i2) and torch.equal(r1, r2)
    torch.testing.assert_close(s1, s2)  # BLAS may round a [Q, 120] and a [Q, 5] matmul differently


@pytest.mark.parametrize("rounded", [False, True])
def test_large_chunks_with_block_pruning_match_full_sort(rounded: bool) -> None:
    """Chunks long enough for select_topk's block pruning (after the first chunk): ranking = full sort."""
    tree, queries, products, category_ids, groups = catalogue(8, n=2500, rounded=rounded)
    metric = make_metric(queries, groups, max_rank=6, chunk_size=600)
    for part in torch.arange(2500).split(900):
        metric.update(products[part], category_ids[part])
    full = queries @ products.T
    expected = torch.tensor([sorted(range(2500), key=lambda i: (-r[i], i))[:6] for r in full.tolist()])
    _, index, relevant = metric.ranking()
    assert torch.equal(index, expected)
    target = relevance_matrix(category_ids, len(tree), "hierarchical")
    assert torch.equal(relevant, target.gather(1, expected))


def test_update_scores_equals_update() -> None:
    _, queries, products, category_ids, groups = catalogue(5, rounded=True)
    by_embedding = make_metric(queries, groups, max_rank=10)
    by_embedding.update(products, category_ids)
    by_scores = make_metric(queries, groups, max_rank=10, chunk_size=17)
    scores = queries @ products.T
    by_scores.update_scores(scores[:, :60], category_ids[:60])
    by_scores.update_scores(scores[:, 60:], category_ids[60:])
    before = by_scores.compute()
    assert_outputs_equal(by_embedding.compute(), before)
    # one more relevant product, ranked last: R grows, recall drops -- unless compute() served a stale cache
    by_scores.update_scores(scores[:, :1] - 100.0, category_ids[:1])
    assert by_scores.compute()["all/recall@5"] < before["all/recall@5"]


def test_state_size_does_not_grow_with_products() -> None:
    _, queries, products, category_ids, groups = catalogue(0, n=400)
    metric = make_metric(queries, groups, max_rank=20)

    def state_bytes() -> int:
        return sum(v.numel() * v.element_size() for v in metric.metric_state.values())

    metric.update(products[:10], category_ids[:10])
    small = state_bytes()
    for start in range(10, 400, 30):
        metric.update(products[start : start + 30], category_ids[start : start + 30])
    assert state_bytes() == small == len(queries) * 20 * (4 + 8 + 1) + len(queries) * 8 + 8
    assert metric.num_products.item() == 400


def test_strict_and_hierarchical_differ_exactly_on_internal_queries() -> None:
    tree, queries, products, category_ids, groups = catalogue(11, n=200)
    values = {}
    for relevance in ("hierarchical", "strict"):
        metric = make_metric(queries, groups, relevance=relevance)
        metric.update(products, category_ids)
        values[relevance] = metric.compute_per_query()
    leaves = groups["specific"]
    for name, hier in values["hierarchical"].items():
        torch.testing.assert_close(
            hier[leaves], values["strict"][name][leaves], rtol=0, atol=0, equal_nan=True
        )
    r_h, r_s = values["hierarchical"]["num_relevant"], values["strict"]["num_relevant"]
    assert (r_s[~leaves] < r_h[~leaves]).all()  # every internal node has products below it
    labelled_here = torch.bincount(product_leaves(category_ids), minlength=len(tree))
    assert torch.equal(r_s, labelled_here)
    assert not torch.equal(values["hierarchical"]["map@5"][~leaves], values["strict"]["map@5"][~leaves])


@pytest.mark.parametrize("rounded", [False, True])
def test_two_ranks_merged_equal_one_process(rounded: bool) -> None:
    _, queries, products, category_ids, groups = catalogue(3, rounded=rounded)
    single = make_metric(queries, groups, max_rank=9)
    single.update(products, category_ids)

    # DistributedSampler-style interleaving: rank r gets products r, r + 2, ...; the global index keeps ties exact.
    ranks = [make_metric(queries, groups, max_rank=9) for _ in range(2)]
    for r, metric in enumerate(ranks):
        idx = torch.arange(r, len(products), 2)
        for part in idx.split(13):
            metric.update(products[part], category_ids[part], product_index=part)

    merged = make_metric(queries, groups, max_rank=9)
    merged.merge_state(ranks[0])
    merged.merge_state(ranks[1])
    assert merged.top_scores.shape == (len(queries), 9)  # folded back: state stays [Q, K]
    assert_outputs_equal(single.compute(), merged.compute())

    # What DDP's sync hands compute(): each "cat" state stacked [world, Q, K], each "sum" state summed.
    stacked = make_metric(queries, groups, max_rank=9)
    for name in ("top_scores", "top_index", "top_relevant"):
        setattr(stacked, name, torch.stack([getattr(m, name) for m in ranks]))
    for name in ("num_relevant", "num_products"):
        setattr(stacked, name, sum(getattr(m, name) for m in ranks))
    stacked._update_count = 1  # as after real updates (silences "compute before update")
    assert_outputs_equal(single.compute(), stacked.compute())


def test_max_rank_caps_r_precision_and_mrr() -> None:
    _, queries, products, category_ids, groups = catalogue(2)
    full = make_metric(queries, groups, max_rank=1000)
    capped = make_metric(queries, groups, max_rank=5)
    full.update(products, category_ids)
    capped.update(products, category_ids)
    a, b = full.compute_per_query(), capped.compute_per_query()
    for name in ("p@1", "p@5", "map@5", "ndcg@5", "recall@5"):
        torch.testing.assert_close(a[name], b[name], equal_nan=True)
    assert (b["r_precision"] <= a["r_precision"] + 1e-7).all()
    small = a["num_relevant"] <= 5
    torch.testing.assert_close(a["r_precision"][small], b["r_precision"][small], equal_nan=True)
    assert (b["mrr"] <= a["mrr"] + 1e-7).all()


def test_gallery_smaller_than_max_rank_and_groups() -> None:
    tree, queries, products, category_ids, groups = catalogue(4, n=6)
    metric = make_metric(queries, {"empty": torch.zeros(len(tree), dtype=torch.bool), **groups}, max_rank=50)
    metric.update(products, category_ids)
    out = metric.compute()
    assert out["empty/num_queries"].item() == 0 and out["empty/p@1"].isnan()
    assert out["all/num_queries"].item() == (metric.num_relevant > 0).sum().item()
    scores, index, _ = metric.ranking()
    assert torch.isinf(scores[:, 6:]).all() and (index[:, :6] < 6).all()


def test_reset_keeps_queries_and_forward_only_updates() -> None:
    _, queries, products, category_ids, groups = catalogue(6)
    metric = make_metric(queries, groups, max_rank=10)
    metric.update(products, category_ids)
    first = metric.compute()
    metric.reset()
    assert metric.num_products.item() == 0 and metric.top_scores.shape == (len(queries), 10)
    assert metric(products, category_ids) is None
    assert_outputs_equal(first, metric.compute())


def test_errors() -> None:
    metric = CategoryRetrievalMetrics(max_rank=10)
    with pytest.raises(RuntimeError, match="set_queries"):
        metric.update(torch.randn(2, 4), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="max_rank"):
        CategoryRetrievalMetrics(ks=(1, 50), max_rank=10)
    with pytest.raises(ValueError, match="relevance"):
        CategoryRetrievalMetrics(relevance="loose")  # type: ignore[arg-type]
    metric.set_queries(torch.randn(3, 4))
    with pytest.raises(ValueError, match="category_ids"):
        metric.update(torch.randn(2, 4), torch.zeros(3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="setting"):
        metric.set_queries(torch.randn(3, 4), {"bad": torch.ones(4, dtype=torch.bool)})


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _, queries, products, category_ids, groups = catalogue(3, rounded=True)
        metric = make_metric(queries, groups, max_rank=9)
        part = torch.arange(rank, len(products), world)
        metric.update(products[part], category_ids[part], product_index=part)
        result = {"compute": metric.compute(), "per_query": metric.compute_per_query()}
        assert metric.top_scores.shape == (len(queries), 9)  # unsynced again after compute
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_real_ddp_gloo_two_ranks_equal_one_process(tmp_path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    _, queries, products, category_ids, groups = catalogue(3, rounded=True)
    single = make_metric(queries, groups, max_rank=9)
    single.update(products, category_ids)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert_outputs_equal(single.compute(), result["compute"])
        assert_outputs_equal(single.compute_per_query(), result["per_query"])
