"""WiSE-FT over the whole network when stage 2 starts from stage 1 (``model.init_from``): the start side is the network
as loaded, so ``alpha = 0`` serves exactly the stage-1 model; the checkpoint keeps the heads' start side and
``load_model`` applies the same mix; older checkpoints (without it) mix the towers only; and ``choose_alpha`` with too
few pseudo-novel queries falls back to the highest ``alpha`` the seen validation allows."""

from __future__ import annotations

import pytest
import torch
from synthetic_catalogue import TRAIN_PATHS, UNSEEN_PATHS, SyntheticDataModule, products, tiny_net, trainer

from clipita_core.weights import WISE_FT_ALPHA
from lightning_modules import ClipItaModule, InfoNCELoss, load_model
from lightning_modules.checkpointing import START_KEY
from lightning_modules.wise_ft import choose_alpha, describe, head_state, tower_state

PATHS = TRAIN_PATHS + UNSEEN_PATHS


def test_too_few_novel_queries_pick_the_highest_alpha_the_seen_validation_allows():
    grid = [1.0, 0.5, 0.0]
    seen = torch.tensor([[0.8, 0.6, 0.7, 0.9]] * 3)
    seen[0] = 0.0  # the fine-tuned towers collapse on the trained leaves
    alpha, detail = choose_alpha(grid, seen, torch.tensor([[0.9]] * 3), min_queries=5)
    assert alpha == 0.5 and detail["seen_allowed"] == [0.5, 0.0]
    assert "fewer than 5" in detail["reason"] and "1 SE of the best seen" in detail["reason"]
    alpha, _ = choose_alpha(grid, torch.tensor([[0.8, 0.6, 0.7, 0.9]] * 3), torch.zeros(3, 0), min_queries=5)
    assert alpha == 1.0  # the seen leaves do not mind: the fine-tuned model


def fit(tmp_path, name: str, net, **module_args) -> tuple[ClipItaModule, str]:
    module = ClipItaModule(net, InfoNCELoss(temperature=0.1), lr=5e-2, scheduler="none", **module_args)
    run = trainer(tmp_path / name, max_steps=2, limit_val_batches=1, val_check_interval=2)
    run.fit(module, datamodule=SyntheticDataModule(net, raw=True))
    path = str(tmp_path / f"{name}.ckpt")
    run.save_checkpoint(path)
    return module, path


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Stage 1 (heads on frozen named towers), then stage 2 from it (top image blocks + heads, WiSE-FT)."""
    tmp_path = tmp_path_factory.mktemp("stages")
    torch.manual_seed(0)
    weights = (
        tmp_path / "pretrained.pth"
    )  # named pretrained weights: the towers' start side is rebuilt from them
    torch.save(tiny_net().image_encoder.backbone.state_dict(), weights)
    _, first = fit(tmp_path, "stage1", tiny_net(image_weights=str(weights)))
    net = tiny_net(train_image_blocks=2, image_weights=str(weights))
    second, ckpt = fit(tmp_path, "stage2", net, init_from=first, wise_ft=True, wise_ft_grid=[0.0, 0.5, 1.0])
    second.net.eval()
    return first, second, ckpt, tmp_path


def vectors(net) -> tuple[torch.Tensor, torch.Tensor]:
    """The product vectors of a fixed batch and the query vectors of every category path."""
    with torch.no_grad():
        return net.encode_product_for_retrieval(products(PATHS, seed=7)), net.encode_query_paths(PATHS)


def force_alpha(module: ClipItaModule, alpha: float) -> None:
    module.restore_fine_tuned()
    module.net.scorer.weights = module.net.scorer.weights.merged({WISE_FT_ALPHA: alpha})
    module.apply_wise_ft()  # what test and predict call


def test_alpha_zero_serves_exactly_the_network_stage_two_started_from(stages):
    first, second, _, _ = stages
    stage1 = load_model(first)
    fine_tuned = {**tower_state(second.net), **head_state(second.net)}
    start = second.wise_ft.start_heads
    assert start and set(start) == set(head_state(second.net))
    assert "whole network" in describe(second.net.retrieval)
    moved = [k for k in start if not torch.equal(start[k], fine_tuned[k])]
    assert moved, "stage 2 left the heads as stage 1 trained them"
    force_alpha(second, 0.0)
    try:
        own = second.net.state_dict()
        weights = {
            k: v for k, v in stage1.state_dict().items() if v.is_floating_point()
        }  # not BN step counters
        assert weights.keys() >= set(start)
        for key, value in weights.items():
            assert torch.equal(value, own[key]), key
        for served, expected in zip(vectors(second.net), vectors(stage1), strict=True):
            assert torch.equal(served, expected)
    finally:
        second.restore_fine_tuned()
    own = second.net.state_dict()  # the fine-tuned weights are back, heads included
    for key, value in fine_tuned.items():
        assert torch.equal(own[key], value), key


def test_load_model_applies_the_whole_network_mix_from_the_checkpoint_alone(stages):
    _, second, ckpt, tmp_path = stages
    checkpoint = torch.load(ckpt, weights_only=True)
    assert set(checkpoint["clipita"][START_KEY]) == set(second.wise_ft.start_heads)
    checkpoint["clipita"]["retrieval"][WISE_FT_ALPHA] = 0.5
    torch.save(checkpoint, tmp_path / "half.ckpt")
    loaded = load_model(tmp_path / "half.ckpt")
    key = next(
        k for k, v in second.wise_ft.start_heads.items() if not torch.equal(v, second.net.state_dict()[k])
    )
    fine_tuned_head = second.net.state_dict()[key].clone()
    force_alpha(second, 0.5)
    try:
        served = second.net.state_dict()
        expected = torch.lerp(second.wise_ft.start_heads[key], fine_tuned_head, 0.5)
        assert torch.allclose(served[key], expected, atol=1e-6)  # the head is mixed, not kept
        for name, value in loaded.state_dict().items():
            if value.is_floating_point():
                assert torch.allclose(value, served[name], atol=1e-6), name
        for a, b in zip(vectors(loaded), vectors(second.net), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    finally:
        second.restore_fine_tuned()

    del checkpoint["clipita"][START_KEY]  # a checkpoint written before the whole-network mix: towers only
    torch.save(checkpoint, tmp_path / "old.ckpt")
    old = load_model(tmp_path / "old.ckpt")
    assert torch.equal(old.state_dict()[key], fine_tuned_head)
    towers = [k for k in tower_state(second.net)]
    assert all(torch.allclose(old.state_dict()[k], loaded.state_dict()[k]) for k in towers)


def test_a_module_restored_from_the_checkpoint_takes_its_heads_start_side(stages):
    """``clipita test --ckpt_path`` without ``init_from``: test mixes the heads as ``load_model`` does."""
    _, second, ckpt, tmp_path = stages
    net = tiny_net(train_image_blocks=2, image_weights=str(tmp_path / "pretrained.pth"))
    fresh = ClipItaModule(net, InfoNCELoss(), wise_ft=True, wise_ft_grid=[0.0, 0.5, 1.0])
    assert not fresh.wise_ft.start_heads
    fresh.on_load_checkpoint(torch.load(ckpt, weights_only=True))
    assert fresh.wise_ft.start_heads.keys() == second.wise_ft.start_heads.keys()
    for key, value in second.wise_ft.start_heads.items():
        assert torch.equal(fresh.wise_ft.start_heads[key], value), key


def test_an_adapting_stage_two_takes_its_start_side_after_the_deferred_load(stages):
    """``adapt_modalities``: the weights wait for the rebuilt network (``use_network``); so does the start side."""
    tmp_path = stages[3]
    weights = str(tmp_path / "pretrained.pth")
    _, first = fit(
        tmp_path, "image_only", tiny_net(modalities=["image"], adapt_modalities=True, image_weights=weights)
    )
    built = tiny_net(adapt_modalities=True, train_image_blocks=1, image_weights=weights)
    waiting = ClipItaModule(built, InfoNCELoss(), init_from=first, wise_ft=True)
    assert not waiting.wise_ft.start_heads  # nothing loaded yet
    rebuilt = tiny_net(
        modalities=["image"], adapt_modalities=True, train_image_blocks=1, image_weights=weights
    )
    waiting.use_network(rebuilt)
    stage1 = load_model(first).state_dict()
    assert waiting.wise_ft.start_heads.keys() == head_state(rebuilt).keys()
    for key, value in waiting.wise_ft.start_heads.items():
        assert torch.equal(value, stage1[key]), key


def test_alpha_zero_chosen_serves_the_start_networks_scorer_too(tmp_path):
    """The scorer a stage-2 fit chooses was chosen for the fine-tuned network; when validation picks ``alpha = 0``
    (the stage-1 network), the weights served are those stage 1's run chose for it."""
    from clipita_core.weights import SEEN_TITLE_WEIGHT
    from lightning_modules.checkpointing import KEY

    torch.manual_seed(0)
    weights = tmp_path / "pretrained.pth"
    torch.save(tiny_net().image_encoder.backbone.state_dict(), weights)
    _, first = fit(tmp_path, "stage1", tiny_net(image_weights=str(weights)))
    checkpoint = torch.load(first, map_location="cpu", weights_only=False)
    checkpoint[KEY]["retrieval"] = {
        **checkpoint[KEY]["retrieval"],
        SEEN_TITLE_WEIGHT: 0.75,
    }  # stage 1's choice
    torch.save(checkpoint, first)
    net = tiny_net(train_image_blocks=2, image_weights=str(weights))
    second, _ = fit(tmp_path, "stage2", net, init_from=first, wise_ft=True, wise_ft_grid=[0.0])
    served = second.net.scorer.weights
    assert served.alpha == 0.0 and served.value(SEEN_TITLE_WEIGHT) == 0.75
    assert second.net.retrieval["wise_ft"]["scorer"] == "the start network's (init_from)"
