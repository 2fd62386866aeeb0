"""The top-K metric math, checked against torchmetrics' functional retrieval metrics.

How ties are compared (see ``retrieval_functional``'s module docstring):

* tie-free scores: every metric equals torchmetrics exactly;
* ties whose members share a relevance label: the result is tie-order invariant, so again exactly equal;
* ties with mixed labels: torchmetrics' order is unspecified (``topk``/``argsort`` are not stable), so we hand it
  scores that encode *our* tie rule (rank-based, unique) and require equality; nDCG is tie-averaged in both and is
  compared on the raw tied scores.
"""

from __future__ import annotations

import pytest
import torch
from ranking_agreement import reference_order
from torchmetrics.functional.retrieval import (
    retrieval_average_precision,
    retrieval_normalized_dcg,
    retrieval_precision,
    retrieval_r_precision,
    retrieval_recall,
    retrieval_reciprocal_rank,
)

from lightning_modules.metrics.retrieval_functional import (
    average_precision_at_k,
    ndcg_at_k,
    precision_at_k,
    precision_ceiling_at_k,
    r_precision,
    recall_at_k,
    reciprocal_rank,
    tie_averaged_gains,
)

KS = (1, 3, 5, 10)


def ranked(scores: torch.Tensor, target: torch.Tensor, depth: int | None = None):
    """(rel_topk, scores_topk, R) of each row under our tie rule."""
    order = torch.tensor(reference_order(scores))[:, :depth]
    return target.gather(1, order), scores.gather(1, order), target.sum(dim=1)


def rank_encoded(scores: torch.Tensor) -> torch.Tensor:
    """Unique positive scores that order items exactly as our tie rule does (for torchmetrics' unstable sorts)."""
    n = scores.shape[1]
    order = torch.tensor(reference_order(scores))
    enc = torch.empty_like(scores)
    enc.scatter_(1, order, torch.arange(n, 0, -1, dtype=scores.dtype).expand_as(scores).contiguous())
    return enc


def random_case(seed: int, q: int = 12, n: int = 40, ties: bool = False, density: float = 0.2):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(q, n, generator=g) + 0.05  # positive: torchmetrics zeroes targets of preds <= 0
    if ties:
        scores = (scores * 4).round() / 4 + 0.05
    target = torch.rand(q, n, generator=g) < density
    target[0] = False  # R == 0
    target[1] = False
    target[1, torch.randint(n, (2,), generator=g)] = True  # R small (< k)
    return scores, target


def ours(rel: torch.Tensor, r: torch.Tensor, scores_topk: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {"r_precision": r_precision(rel, r), "mrr": reciprocal_rank(rel)}
    for k in KS:
        out[f"p@{k}"] = precision_at_k(rel, k)
        out[f"map@{k}"] = average_precision_at_k(rel, r, k)
        out[f"recall@{k}"] = recall_at_k(rel, r, k)
        out[f"ndcg@{k}"] = ndcg_at_k(rel, r, k, scores_topk=scores_topk)
    return out


def theirs(
    preds: torch.Tensor, target: torch.Tensor, mrr_top_k: int | None = None
) -> dict[str, torch.Tensor]:
    rows: dict[str, list[torch.Tensor]] = {}

    def add(name: str, value: torch.Tensor) -> None:
        rows.setdefault(name, []).append(value.float())

    for p, t in zip(preds, target, strict=True):
        add("r_precision", retrieval_r_precision(p, t))
        add("mrr", retrieval_reciprocal_rank(p, t, top_k=mrr_top_k))
        for k in KS:
            add(f"p@{k}", retrieval_precision(p, t, top_k=k))
            add(f"map@{k}", retrieval_average_precision(p, t, top_k=k))
            add(f"recall@{k}", retrieval_recall(p, t, top_k=k))
            add(f"ndcg@{k}", retrieval_normalized_dcg(p, t, top_k=k))
    return {k: torch.stack(v) for k, v in rows.items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], names=None) -> None:
    for name in names or a:
        torch.testing.assert_close(
            a[name], b[name], rtol=0, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_torchmetrics_without_ties(seed: int) -> None:
    scores, target = random_case(seed)
    rel, s, r = ranked(scores, target)
    assert_same(ours(rel, r, s), theirs(scores, target))


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_torchmetrics_on_label_homogeneous_ties(seed: int) -> None:
    """Ties only among items with the same label: any tie order gives the same value, so compare raw scores."""
    g = torch.Generator().manual_seed(seed)
    scores = ((torch.rand(10, 60, generator=g) * 8).round() + 1) / 8  # 9 distinct values, many ties
    label_of_value = torch.rand(10, 10, generator=g) < 0.4
    target = label_of_value.gather(1, (scores * 8).long())
    target[0] = False
    assert (scores[:, None, :] == scores[:, :, None]).sum() > 60 * 10  # ties exist
    rel, s, r = ranked(scores, target)
    assert_same(ours(rel, r, s), theirs(scores, target))


@pytest.mark.parametrize("seed", range(5))
def test_metrics_with_mixed_label_ties_match_torchmetrics_under_our_tie_rule(seed: int) -> None:
    scores, target = random_case(seed, ties=True, density=0.4)
    rel, s, r = ranked(scores, target)
    mine = ours(rel, r, s)
    # nDCG averages over tie groups in both implementations: compare on the raw tied scores.
    assert_same(mine, theirs(scores, target), names=[f"ndcg@{k}" for k in KS])
    # everything else depends on the tie order; torchmetrics gets scores that encode ours.
    others = [n for n in mine if not n.startswith("ndcg")]
    assert_same(mine, theirs(rank_encoded(scores), target), names=others)


def test_tie_order_matters_and_we_take_the_lower_index() -> None:
    scores = torch.tensor([[0.5, 0.5, 0.1]])
    target = torch.tensor([[False, True, False]])
    rel, s, r = ranked(scores, target)
    assert rel.tolist() == [[False, True, False]]
    assert precision_at_k(rel, 1).item() == 0.0
    assert reciprocal_rank(rel).item() == 0.5
    # nDCG@1 sees the tie: the expected gain of rank 1 is 1/2.
    assert ndcg_at_k(rel, r, 1, scores_topk=s).item() == pytest.approx(0.5)
    assert ndcg_at_k(rel, r, 1, scores_topk=s).item() == pytest.approx(
        retrieval_normalized_dcg(scores[0], target[0], top_k=1).item()
    )


@pytest.mark.parametrize("seed", range(3))
def test_truncated_ranking_caps(seed: int) -> None:
    """With only the top K kept: P/AP/nDCG/recall@k (k <= K) are exact, MRR is MRR@K, R-precision exact if R <= K."""
    scores, target = random_case(seed, n=60, density=0.3)
    depth = 10
    rel, s, r = ranked(scores, target, depth=depth)
    mine = ours(rel, r, s)
    ref = theirs(scores, target, mrr_top_k=depth)
    assert_same(mine, ref, names=[n for n in mine if n != "r_precision"])
    full_rel, _, _ = ranked(scores, target)
    small = r <= depth
    torch.testing.assert_close(mine["r_precision"][small], ref["r_precision"][small])
    big = ~small
    assert big.any()
    expected = full_rel[big, :depth].float().sum(1) / r[big]  # hits@K / R: the documented lower bound
    torch.testing.assert_close(mine["r_precision"][big], expected)
    assert (mine["r_precision"][big] <= ref["r_precision"][big] + 1e-6).all()


def test_rankings_shorter_than_k_are_padded_as_misses() -> None:
    rel = torch.tensor([[True, True]])
    r = torch.tensor([2])
    assert precision_at_k(rel, 5).item() == pytest.approx(0.4)
    assert recall_at_k(rel, r, 5).item() == 1.0
    assert ndcg_at_k(rel, r, 5).item() == pytest.approx(1.0)
    assert average_precision_at_k(rel, r, 5).item() == 1.0


def test_average_precision_normalisations() -> None:
    rel = torch.tensor([[True, False, False, False, False], [False, False, False, False, False]])
    r = torch.tensor([5, 3])
    assert average_precision_at_k(rel, r, 5).tolist() == [1.0, 0.0]  # torchmetrics: / hits retrieved
    assert average_precision_at_k(rel, r, 5, normalization="min_r_k").tolist() == pytest.approx(
        [0.2, 0.0]
    )  # / min(R, k)
    assert average_precision_at_k(rel, r, 1, normalization="min_r_k").tolist() == [1.0, 0.0]
    with pytest.raises(ValueError):
        average_precision_at_k(rel, r, 5, normalization="bogus")  # type: ignore[arg-type]


def test_precision_ceiling_bounds_precision() -> None:
    scores, target = random_case(7, density=0.05)
    rel, _, r = ranked(scores, target)
    for k in KS:
        ceiling = precision_ceiling_at_k(r, k)
        assert (precision_at_k(rel, k) <= ceiling + 1e-7).all()
        perfect = torch.sort(target.float(), dim=1, descending=True).values.bool()
        torch.testing.assert_close(precision_at_k(perfect, k), ceiling)


def test_tie_averaged_gains() -> None:
    rel = torch.tensor([[True, False, False, True, True]])
    scores = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]])
    assert tie_averaged_gains(rel, scores)[0].tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3, 1.0])
