from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.losses import InfoNCELoss, LogitScale, MultiPositiveInfoNCELoss, positive_mask


def _hand_info_nce(p, c, tau, lam):
    """Bidirectional InfoNCE written out element by element."""
    n = p.shape[0]
    sim = [[float(p[i] @ c[j]) / tau for j in range(n)] for i in range(n)]
    p2c = sum(-sim[i][i] + math.log(sum(math.exp(sim[i][j]) for j in range(n))) for i in range(n)) / n
    c2p = sum(-sim[j][j] + math.log(sum(math.exp(sim[i][j]) for i in range(n))) for j in range(n)) / n
    return lam * p2c + (1 - lam) * c2p


def test_info_nce_matches_hand_computation():
    torch.manual_seed(0)
    p = F.normalize(torch.randn(3, 4), dim=-1)
    c = F.normalize(torch.randn(3, 4), dim=-1)
    loss = InfoNCELoss(lambda_weight=0.3, temperature=0.5, learnable_temperature=False)
    assert loss(p, c).item() == pytest.approx(_hand_info_nce(p, c, 0.5, 0.3), rel=1e-5)


def test_two_by_two_closed_form():
    loss = InfoNCELoss(temperature=1.0, learnable_temperature=False)
    assert loss(torch.eye(2), torch.eye(2)).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_multi_positive_equals_info_nce_when_categories_are_unique():
    torch.manual_seed(1)
    p = F.normalize(torch.randn(4, 8), dim=-1)
    c = F.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.tensor([[0, 4], [1, 5], [2, 6], [3, 7]])
    targets = ids[:, 1]
    one_hot = InfoNCELoss(temperature=0.1, learnable_temperature=False)(p, c)
    multi = MultiPositiveInfoNCELoss(temperature=0.1, learnable_temperature=False)(
        p, c, target_ids=targets, product_category_ids=ids
    )
    assert multi.item() == pytest.approx(one_hot.item(), rel=1e-6)


def test_multi_positive_differs_only_where_categories_repeat():
    torch.manual_seed(2)
    p = F.normalize(torch.randn(4, 8), dim=-1)
    c = F.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.tensor([[0, 4], [0, 4], [1, 5], [2, 6]])  # products 0 and 1 share category 4
    loss = MultiPositiveInfoNCELoss(temperature=0.1, learnable_temperature=False, lambda_weight=1.0)
    p2c, _, _ = loss.logits(p, c)
    per_row_one_hot = F.cross_entropy(p2c, torch.arange(4), reduction="none")
    mask = positive_mask(ids[:, 1], ids)
    targets = mask.float() / mask.float().sum(1, keepdim=True)
    per_row_multi = -(targets * torch.log_softmax(p2c, 1)).sum(1)
    assert torch.allclose(per_row_one_hot[2:], per_row_multi[2:])  # unique categories: identical
    assert not torch.allclose(per_row_one_hot[:2], per_row_multi[:2])  # repeated category: differs
    total = loss(p, c, target_ids=ids[:, 1], product_category_ids=ids)
    assert total.item() == pytest.approx(per_row_multi.mean().item(), rel=1e-6)


def test_relevant_positives_include_ancestors():
    ids = torch.tensor([[0, 2], [0, 3], [1, 4]])
    targets = torch.tensor([0, 3, 4])  # product 0 paired with the root "0", others with leaves
    mask = positive_mask(targets, ids, "relevant")
    assert mask.tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    same = positive_mask(targets, ids, "same_category")
    assert same.tolist() == [[True, False, False], [False, True, False], [False, False, True]]


def test_temperature_is_validated_and_clamped():
    with pytest.raises(ValueError, match="-0.1"):
        LogitScale(temperature=-0.1)
    scale = LogitScale(temperature=0.07, max_scale=100.0)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert scale().item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match="lambda"):
        InfoNCELoss(lambda_weight=1.5)


def test_hierarchical_targets_grade_ancestors():
    from lightning_modules.losses import hierarchical_targets

    paths = torch.tensor([[0, 2, 5], [1, 3, -1]])
    w = hierarchical_targets(torch.tensor([5, 2, 0, 3, 1]), paths, 0.5)
    assert w.tolist() == [[1.0, 0.5, 0.25, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.5]]
    assert hierarchical_targets(torch.tensor([5, 2]), paths, 0.0).tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_hierarchical_loss_without_parents_or_table_equals_multi_positive():
    from lightning_modules.losses import HierarchicalInfoNCELoss

    torch.manual_seed(3)
    p = F.normalize(torch.randn(4, 8), dim=-1)
    c = F.normalize(torch.randn(4, 8), dim=-1)
    ids = torch.tensor([[0, 4], [0, 4], [1, 5], [2, 6]])
    kwargs = dict(temperature=0.1, learnable_temperature=False)
    multi = MultiPositiveInfoNCELoss(positives="same_category", **kwargs)(
        p, c, target_ids=ids[:, 1], product_category_ids=ids
    )
    hier = HierarchicalInfoNCELoss(parent_weight=0.0, table_weight=0.0, **kwargs)(
        p, c, target_ids=ids[:, 1], product_category_ids=ids
    )
    assert hier.item() == pytest.approx(multi.item(), rel=1e-6)


def test_hierarchical_table_term_adds_the_seen_category_classifier():
    from lightning_modules.losses import HierarchicalInfoNCELoss

    torch.manual_seed(4)
    p = F.normalize(torch.randn(3, 8), dim=-1)
    c = F.normalize(torch.randn(3, 8), dim=-1)
    table = F.normalize(torch.randn(5, 8), dim=-1)
    ids = torch.tensor([[0, 2], [0, 3], [1, 4]])
    table_ids = torch.arange(5)
    base = HierarchicalInfoNCELoss(
        temperature=0.5, learnable_temperature=False, table_weight=0.0, parent_weight=0.0
    )
    with_table = HierarchicalInfoNCELoss(
        temperature=0.5, learnable_temperature=False, table_weight=1.0, parent_weight=0.0
    )
    args = dict(target_ids=ids[:, 1], product_category_ids=ids)
    expected = F.cross_entropy(2.0 * p @ table.T, ids[:, 1])  # leaf-only targets: plain classification
    got = with_table(p, c, table_embeddings=table, table_ids=table_ids, **args) - base(p, c, **args)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="table_embeddings"):
        with_table(p, c, **args)
