"""Chunked, pruned top-k under the tie rule (score descending, then index ascending), checked against a plain-Python
full sort (:mod:`lightning_modules.metrics.ranking`)."""

from __future__ import annotations

import pytest
import torch
from ranking_agreement import reference_order

from lightning_modules.metrics.ranking import (
    PAD_INDEX,
    ranking_order,
    running_topk,
    select_topk,
    truncate_ranking,
)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64])
def test_running_topk_equals_full_sort_with_ties(seed: int, chunk_size: int) -> None:
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(5, 4, generator=g).round()
    products = torch.randn(23, 4, generator=g).round()  # integer vectors: many exact ties
    full = queries @ products.T
    expected = torch.tensor(reference_order(full))
    for k in (1, 4, 23, 30):
        scores, index = running_topk(queries, products, k=k, chunk_size=chunk_size)
        assert index.shape == (5, min(k, 23))
        assert torch.equal(index, expected[:, :k])
        assert torch.equal(scores, full.gather(1, expected[:, :k]))


def test_running_topk_offset_and_float16() -> None:
    queries = torch.randn(3, 8).half()
    products = torch.randn(50, 8).half()
    scores, index = running_topk(queries, products, k=5, chunk_size=16, index_offset=100)
    full = queries.float() @ products.float().T
    assert scores.dtype == torch.float32
    assert torch.equal(index - 100, torch.tensor(reference_order(full))[:, :5])


def test_scores_stay_float32_under_autocast() -> None:
    queries, products = torch.randn(3, 8), torch.randn(40, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores, index = running_topk(queries, products, k=4)
    assert scores.dtype == torch.float32
    assert torch.equal(index, torch.tensor(reference_order(queries @ products.T))[:, :4])


@pytest.mark.parametrize("seed", range(3))
def test_select_topk_picks_lowest_index_among_boundary_ties(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 3, (20, 50), generator=g).float()
    expected = torch.tensor(reference_order(scores))
    for k in (1, 5, 17, 49, 50, 60):
        values, positions = select_topk(scores, k)
        assert torch.equal(positions, expected[:, :k])
        assert torch.equal(values, scores.gather(1, positions))


@pytest.mark.parametrize("seed", range(4))
def test_select_topk_with_floor_is_exact_above_the_floor(seed: int) -> None:
    """Block pruning: every item scoring >= floor is returned, in exact tie-rule order, ahead of the rest."""
    g = torch.Generator().manual_seed(seed)
    n, k = 2003, 12  # not a multiple of the block: the tail columns are always candidates
    scores = (torch.randn(30, n, generator=g) * 20).round() / 20  # ties, also at the floor
    index = torch.randperm(n, generator=g)  # tie-break key unrelated to column order
    floor = scores.kthvalue(n - 8, dim=1).values  # ~9 items per row reach the floor (more with ties)
    block_max = (
        scores[:, : n // 16 * 16].reshape(30, 16, -1).amax(1)
    )  # strided blocks, as select_topk cuts them
    assert (block_max >= floor[:, None]).sum(1).max() * 16 <= n // 4  # the pruned path runs
    values, positions = select_topk(scores, k, index=index, floor=floor)
    assert torch.equal(values, scores.gather(1, positions))
    for row in range(30):
        s, key = scores[row].tolist(), index.tolist()
        expected = sorted((i for i in range(n) if s[i] >= floor[row]), key=lambda i: (-s[i], key[i]))[:k]
        assert positions[row, : len(expected)].tolist() == expected
        assert (values[row, len(expected) :] < floor[row]).all()


@pytest.mark.parametrize("seed", range(3))
def test_running_topk_with_pruning_equals_full_sort(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    queries = (torch.randn(7, 6, generator=g) * 2).round()
    products = (torch.randn(3000, 6, generator=g) * 2).round()  # integer scores: heavy ties
    full = queries @ products.T
    scores, index = running_topk(queries, products, k=9, chunk_size=700)
    expected = torch.tensor(reference_order(full))[:, :9]
    assert torch.equal(index, expected)
    assert torch.equal(scores, full.gather(1, expected))


def test_select_topk_uses_given_index_for_ties() -> None:
    scores = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    _, positions = select_topk(scores, 2, index=torch.tensor([30, 10, 20, 0]))
    assert positions.tolist() == [[1, 2]]


def test_truncate_ranking_merges_and_pads_lose_ties() -> None:
    scores = torch.tensor([[0.5, float("-inf"), 0.9, float("-inf")]])
    index = torch.tensor([[4, PAD_INDEX, 2, 7]])
    flags = torch.tensor([[True, False, False, True]])
    s, i, f = truncate_ranking(scores, index, flags, k=3)
    assert i.tolist() == [[2, 4, 7]]  # the real product scored -inf beats the empty slot
    assert f.tolist() == [[False, True, True]]
    assert ranking_order(scores, index[0]).tolist() == [[2, 0, 3, 1]]
