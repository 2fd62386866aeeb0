"""Two gloo ranks: the gathered contrastive losses and the gradients DDP applies equal the single-process loss on the
concatenated batch (InfoNCE, multi-positive, hierarchical with the all-seen-categories table term).

What DDP applies: each rank's loss is the mean over its own rows against the global batch; the embeddings'
gradients flow back through the all-gather to the rank that made them (summed over every rank's loss), and DDP then
averages the parameter gradients over ranks. So ``mean_r loss_r`` must equal the single-process loss, a rank's
embedding gradient divided by the world size must equal the single-process gradient of those rows, and gradients of
tensors every rank holds (the temperature, the table embeddings) averaged over ranks must equal the single-process
ones.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.losses import HierarchicalInfoNCELoss, InfoNCELoss, MultiPositiveInfoNCELoss

WORLD = 2
PER_RANK = 4


def make_loss(name: str) -> torch.nn.Module:
    common = dict(temperature=0.1, learnable_temperature=True, lambda_weight=0.3)
    if name == "info_nce":
        return InfoNCELoss(**common)
    if name == "multi_positive":
        return MultiPositiveInfoNCELoss(positives="relevant", **common)
    return HierarchicalInfoNCELoss(parent_weight=0.5, table_weight=0.7, **common)


def global_batch() -> dict[str, torch.Tensor]:
    """8 products over 2 ranks; categories repeat across ranks (cross-rank positives for the multi-positive rules)."""
    g = torch.Generator().manual_seed(0)
    n = WORLD * PER_RANK
    paths = torch.tensor(
        [[0, 2], [0, 3], [1, 4], [1, 5], [0, 2], [1, 4], [0, 3], [1, 5]]
    )  # table ids, 2 levels
    level = torch.tensor([1, 0, 1, 1, 1, 0, 1, 0])  # the level each product is paired with this step
    return {
        "products": F.normalize(torch.randn(n, 8, generator=g), dim=-1),
        "categories": F.normalize(torch.randn(n, 8, generator=g), dim=-1),
        "product_category_ids": paths,
        "target_ids": paths.gather(1, level.unsqueeze(1)).squeeze(1),
        "table_embeddings": F.normalize(torch.randn(6, 8, generator=g), dim=-1),
        "table_ids": torch.arange(6),
    }


def loss_and_grads(name: str, batch: dict[str, torch.Tensor], rows: slice) -> dict[str, torch.Tensor]:
    """The loss of ``rows`` (against whatever the loss gathers) and the gradients of every input."""
    loss_fn = make_loss(name)
    products = batch["products"][rows].clone().requires_grad_(True)
    categories = batch["categories"][rows].clone().requires_grad_(True)
    table = batch["table_embeddings"].clone().requires_grad_(True)
    loss = loss_fn(
        products,
        categories,
        target_ids=batch["target_ids"][rows],
        product_category_ids=batch["product_category_ids"][rows],
        table_embeddings=table,
        table_ids=batch["table_ids"],
    )
    loss.backward()
    return {
        "loss": loss.detach(),
        "products": products.grad,
        "categories": categories.grad,
        "table": torch.zeros_like(table) if table.grad is None else table.grad,
        "log_scale": loss_fn.logit_scale.log_scale.grad,
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        batch = global_batch()
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        result = {
            name: loss_and_grads(name, batch, rows) for name in ("info_nce", "multi_positive", "hierarchical")
        }
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("gathered_loss")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["info_nce", "multi_positive", "hierarchical"])
def test_gathered_loss_and_gradients_equal_the_single_process_loss(ranks, name):
    single = loss_and_grads(name, global_batch(), slice(None))
    per_rank = [r[name] for r in ranks]
    assert not torch.allclose(per_rank[0]["loss"], per_rank[1]["loss"])  # the ranks really saw different rows
    mean_loss = torch.stack([r["loss"] for r in per_rank]).mean()
    assert torch.allclose(mean_loss, single["loss"], atol=1e-6), (mean_loss, single["loss"])
    for key in ("products", "categories"):  # each rank's own rows, after DDP's average over ranks
        applied = torch.cat([r[key] for r in per_rank]) / WORLD
        assert torch.allclose(applied, single[key], atol=1e-6), key
    for key in ("log_scale", "table"):  # held by every rank: DDP averages them
        applied = torch.stack([r[key] for r in per_rank]).mean(dim=0)
        assert torch.allclose(applied, single[key], atol=1e-6), key
    if name != "hierarchical":
        assert torch.count_nonzero(single["table"]) == 0  # only the hierarchical loss uses the table
