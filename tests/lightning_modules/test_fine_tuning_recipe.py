"""The fine-tuning recipe's parts: the top N blocks of each tower train (and nothing else of it), each trained
parameter sits in exactly one optimizer group at its layer-decayed rate, stage 2 starts from stage 1's weights
(``init_from``), WiSE-FT chooses and serves a mix, and trained towers never read frozen-tower features."""

from __future__ import annotations

import pytest
import torch
from synthetic_catalogue import SyntheticDataModule, tiny_net, trainer

from clipita_core.weights import WISE_FT_ALPHA, RetrievalWeights
from lightning_modules import ClipItaModule, InfoNCELoss, load_model
from lightning_modules.components.encoder_blocks import timm_layout
from lightning_modules.components.image_encoder import ImageEncoder
from lightning_modules.wise_ft import EVIDENCE_KEY, choose_alpha, tower_state


@pytest.mark.parametrize("blocks,layers", [(2, 1), (-1, 0)], ids=["top-blocks", "whole-image-tower"])
def test_trained_blocks_get_gradients_and_one_group_each_at_their_decayed_rate(tmp_path, blocks, layers):
    torch.manual_seed(0)
    net = tiny_net(train_image_blocks=blocks, train_text_layers=layers)
    module = ClipItaModule(net, InfoNCELoss(), lr=1e-2, encoder_lr=1e-3, layer_decay=0.5, scheduler="none")
    dm = SyntheticDataModule(net, raw=True)
    bn_before = {k: v.clone() for k, v in net.image_encoder.state_dict().items() if "running_mean" in k}
    trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, datamodule=dm)

    # gradients: every trainable parameter got one (one more backward on a fresh batch, grads kept)
    module.train()
    module.log = lambda *args, **kwargs: None  # outside the loop: nothing to log into
    module.zero_grad()
    module.training_step(dm.train_batches[0], 0).backward()
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert [n for n, p in trainable.items() if p.grad is None or not torch.any(p.grad != 0)] == []

    # the trained part of the image tower is exactly its top `blocks` units
    layout = timm_layout(net.image_encoder.backbone)
    units = {layout.unit_of(n) for n, p in net.image_encoder.backbone.named_parameters() if p.requires_grad}
    top = len(layout)
    assert units == set(range(top - (top if blocks == -1 else blocks), top))
    text_trained = [n for n, p in net.text_encoder.named_parameters() if p.requires_grad]
    assert bool(text_trained) == (layers != 0)
    assert not any("pooler" in n for n in text_trained)

    # groups: each trainable parameter in exactly one, frozen ones in none, rates decayed by depth
    groups = module.optimizers().optimizer.param_groups
    seen: dict[int, dict] = {}
    for group in groups:
        for p in group["params"]:
            assert id(p) not in seen, f"a parameter in two groups: {group['name']}, {seen[id(p)]['name']}"
            seen[id(p)] = group
    assert set(seen) == {id(p) for p in trainable.values()}
    frozen = [p for p in module.parameters() if not p.requires_grad]
    assert frozen and not any(id(p) in seen for p in frozen)
    for tower in ("image_encoder", "text_encoder"):
        for name, depth in getattr(net, tower).parameter_depths(prefix=f"{tower}.").items():
            group = seen[id(dict(net.named_parameters())[name])]
            assert (
                group["lr"] == pytest.approx(1e-3 * 0.5**depth) and group["name"] == f"{tower}/depth{depth}"
            )
    heads = [g for g in groups if g["name"] == "heads"]
    assert len(heads) == 1 and heads[0]["lr"] == 1e-2

    # BatchNorm of the frozen blocks kept its pretrained statistics and stays in eval mode while training
    frozen_units = set(range(top)) - units
    for key, value in net.image_encoder.state_dict().items():
        if "running_mean" in key and layout.unit_of(key.removeprefix("backbone.")) in frozen_units:
            assert torch.equal(value, bn_before[key]), key
    bns = [
        (n, m)
        for n, m in net.image_encoder.backbone.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]
    for name, bn in bns:
        assert bn.training == (layout.unit_of(name + ".weight") in units), name


def test_train_encoder_and_a_block_count_must_agree():
    with pytest.raises(ValueError, match="train_image_blocks is 2: set one"):
        tiny_net(train_image_encoder=True, train_image_blocks=2)
    with pytest.raises(ValueError, match="-1 \\(all\\), 0 \\(none\\) or N > 0"):
        tiny_net(train_image_blocks=-2)


def test_a_trained_towers_cache_key_carries_its_weights():
    frozen, tuned = tiny_net(), tiny_net(train_image_blocks=1)
    assert "weights_sha256" not in frozen.image_encoder.cache_key()
    before = tuned.image_encoder.cache_key()
    assert before["weights_sha256"] and {k: v for k, v in before.items() if k != "weights_sha256"} == (
        frozen.image_encoder.cache_key()
    )
    with torch.no_grad():
        next(p for p in tuned.image_encoder.parameters() if p.requires_grad).add_(0.01)
    assert tuned.image_encoder.cache_key()["weights_sha256"] != before["weights_sha256"]


class FeatureDataModule(SyntheticDataModule):
    """The synthetic catalogue declaring cached features, as ``data.use_features: true`` does."""

    def __init__(self, net) -> None:
        super().__init__(net, raw=True)
        self.save_hyperparameters({"use_features": True})


def test_trained_towers_refuse_cached_features_in_one_line(tmp_path):
    net = tiny_net(train_image_blocks=1)
    module = ClipItaModule(net, InfoNCELoss())
    with pytest.raises(ValueError, match="trains the image tower but data.use_features is true") as err:
        trainer(tmp_path, max_steps=1).fit(module, datamodule=FeatureDataModule(net))
    assert "\n" not in str(err.value)


def fit_stage(tmp_path, net, **module_args) -> tuple[ClipItaModule, str]:
    module = ClipItaModule(net, InfoNCELoss(temperature=0.1), lr=1e-2, scheduler="none", **module_args)
    dm = SyntheticDataModule(net, raw=True)
    fit = trainer(tmp_path, max_steps=2, limit_val_batches=1, val_check_interval=2)
    fit.fit(module, datamodule=dm)
    path = str(tmp_path / "stage.ckpt")
    fit.save_checkpoint(path)
    return module, path


def test_stage_two_starts_from_stage_one_weights_and_refuses_another_network(tmp_path):
    torch.manual_seed(0)
    stage1, ckpt = fit_stage(tmp_path, tiny_net())
    net = tiny_net(train_image_blocks=1, image_size=48)  # what stage 2 may change
    module = ClipItaModule(net, InfoNCELoss(), init_from=ckpt)
    for key, value in stage1.net.state_dict().items():
        assert torch.equal(value, module.net.state_dict()[key]), key
    with pytest.raises(ValueError, match=r"differs from model.net in embed_dim \(32 there, 16 here\)"):
        ClipItaModule(tiny_net(embed_dim=16), InfoNCELoss(), init_from=ckpt)


def test_an_adapting_stage_two_loads_into_the_network_rebuilt_for_the_catalogue(tmp_path):
    """The adaptive recipe's stage 1 on a catalogue without titles is an image-only network; the fine-tune recipe
    (``adapt_modalities``) is built with every modality and rebuilt for the catalogue later (``use_network``): the
    weights wait for that network, and without a rebuild the difference is refused when the fit sets up."""
    torch.manual_seed(0)
    stage1, ckpt = fit_stage(tmp_path, tiny_net(modalities=["image"], adapt_modalities=True))
    waiting = ClipItaModule(
        tiny_net(adapt_modalities=True, train_image_blocks=1), InfoNCELoss(), init_from=ckpt
    )
    rebuilt = tiny_net(modalities=["image"], adapt_modalities=True, train_image_blocks=1)
    waiting.use_network(rebuilt)  # what clipita.modalities.adapt_to_catalogue does
    for key, value in stage1.net.state_dict().items():
        assert torch.equal(value, rebuilt.state_dict()[key]), key
    never = ClipItaModule(tiny_net(adapt_modalities=True), InfoNCELoss(), init_from=ckpt, scheduler="none")
    with pytest.raises(ValueError, match=r"differs from model.net in modalities \(\['image'\] there"):
        trainer(tmp_path / "never", max_steps=1).fit(
            never, datamodule=SyntheticDataModule(never.net, raw=True)
        )
    with pytest.raises(ValueError, match=r"; modalities \(\['image'\] there"):  # no adapt_modalities: at once
        ClipItaModule(tiny_net(), InfoNCELoss(), init_from=ckpt)


def test_choose_alpha_prefers_fine_tuned_and_protects_novel_within_seen_noise():
    grid = [1.0, 0.5, 0.0]
    flat_seen = torch.tensor([[0.8, 0.6, 0.7, 0.9]] * 3)
    novel_better_pretrained = torch.tensor([[0.1, 0.2, 0.1, 0.0], [0.4, 0.5, 0.4, 0.5], [0.9, 0.8, 0.9, 1.0]])
    assert choose_alpha(grid, flat_seen, novel_better_pretrained)[0] == 0.0
    seen_collapses = flat_seen.clone()
    seen_collapses[2] = 0.0
    assert choose_alpha(grid, seen_collapses, novel_better_pretrained)[0] == 0.5
    assert choose_alpha(grid, flat_seen, torch.tensor([[0.1, 0.2, 0.1, 0.0]] * 3))[0] == 1.0  # no gain: keep
    alpha, detail = choose_alpha(grid, flat_seen, novel_better_pretrained[:, :2], min_queries=5)
    assert alpha == 1.0 and "fewer than 5" in detail["reason"]


def test_wise_ft_is_chosen_kept_in_the_checkpoint_and_applied_by_load_model(tmp_path):
    torch.manual_seed(0)
    weights = (
        tmp_path / "pretrained.pth"
    )  # named pretrained weights: WiSE-FT rebuilds the pretrained side from them
    torch.save(tiny_net().image_encoder.backbone.state_dict(), weights)
    net = tiny_net(train_image_blocks=2, image_weights=str(weights))
    pretrained = tower_state(net)
    module, ckpt = fit_stage(tmp_path, net, wise_ft=True, wise_ft_grid=[0.0, 0.5, 1.0], encoder_lr=0.05)
    record = module.net.retrieval
    alpha = record[WISE_FT_ALPHA]
    assert alpha in (0.0, 0.5, 1.0) and record[EVIDENCE_KEY]["novel_queries"] > 0
    assert len(record[EVIDENCE_KEY]["val_novel_map@10"]) == 3
    fine_tuned = tower_state(module.net)  # training leaves the fine-tuned weights in the module
    moved = [k for k in fine_tuned if not torch.equal(fine_tuned[k], pretrained[k])]
    assert moved, "fine-tuning left the tower as pretrained"

    loaded = load_model(ckpt)
    assert loaded.retrieval[WISE_FT_ALPHA] == alpha
    assert (
        RetrievalWeights.from_dict(record).to_dict() == dict(record) == dict(loaded.retrieval)
    )  # the real record
    for key in moved:
        expected = torch.lerp(pretrained[key], fine_tuned[key], alpha)
        assert torch.allclose(loaded.state_dict()[key], expected, atol=1e-6), key

    # the same mix whatever alpha was chosen: force one and load again
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["clipita"]["retrieval"][WISE_FT_ALPHA] = 0.5
    torch.save(checkpoint, tmp_path / "half.ckpt")
    half = load_model(tmp_path / "half.ckpt")
    key = moved[0]
    assert torch.allclose(half.state_dict()[key], 0.5 * (pretrained[key] + fine_tuned[key]), atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = ImageEncoder("test_efficientnet", "none", 32, train_image_blocks=2)
    checkpointed = ImageEncoder(
        "test_efficientnet", "none", 32, train_image_blocks=2, gradient_checkpointing=True
    )
    checkpointed.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 32, 32)
    grads = []
    for encoder in (plain, checkpointed):
        encoder.train()
        encoder(images).square().sum().backward()
        grads.append({n: p.grad for n, p in encoder.named_parameters() if p.requires_grad})
    assert checkpointed.backbone.grad_checkpointing and set(grads[0]) == set(grads[1])
    for name, grad in grads[0].items():
        assert grads[1][name] is not None and torch.allclose(grad, grads[1][name], atol=1e-5), name
