from __future__ import annotations

import pytest
import torch

from lightning_modules import ClipIta, create_model
from lightning_modules.components import AttributePooling, check_modalities
from lightning_modules.losses import MultiPositiveInfoNCELoss
from lightning_modules.product_features import raw_attribute_features


@pytest.fixture(scope="module")
def text_encoder():
    from lightning_modules.components import TextEncoder

    return TextEncoder()


def _feature_batch(n=6, a=3, di=1280, dt=384):
    torch.manual_seed(0)
    mask = torch.rand(n, a) > 0.3
    mask[0] = False  # a product with no attribute at all
    return {
        "image_features": torch.randn(n, di),
        "title_features": torch.randn(n, dt),
        "attribute_features": torch.randn(n, a, dt),
        "attribute_mask": mask,
        "category_ids": torch.tensor([[0, 2, 5], [0, 2, 6], [0, 3, 7], [1, 4, 8], [1, 4, 8], [1, 4, 9]]),
    }


@pytest.mark.parametrize("fusion", ["concat", "weighted_sum", "gated"])
@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_every_trainable_parameter_receives_a_gradient(fusion, pooling):
    model = ClipIta(
        image_weights="none",
        fusion=fusion,
        attribute_pooling=pooling,
        learnable_fusion_weights=True,
        category_head="mlp",
        dropout=0.0,
    )
    loss_fn = MultiPositiveInfoNCELoss(temperature=0.1)
    batch = _feature_batch()
    products = model.encode_product(batch)
    targets = batch["category_ids"][:, -1]
    categories = model.encode_category(torch.randn(10, 384)[targets])
    loss = loss_fn(products, categories, target_ids=targets, product_category_ids=batch["category_ids"])
    loss.backward()
    trainable = [
        (n, p)
        for n, p in list(model.named_parameters()) + list(loss_fn.named_parameters())
        if p.requires_grad
    ]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None or not torch.any(p.grad != 0)]
    assert no_grad == []
    frozen = [n for n, p in model.named_parameters() if n.startswith(("image_encoder", "text_encoder"))]
    assert frozen and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)


def test_raw_inputs_and_cached_features_give_the_same_embedding():
    model = ClipIta(image_weights="none", dropout=0.0).eval()
    model.attribute_names = ["colour", "gender"]
    raw = {
        "image": torch.randn(2, 3, 64, 64),
        "title": ["Aurora Men Blue Running Sneaker", "Lumen Women Red Tote"],
        "attributes": [{"colour": "Blue"}, {}],
    }
    with torch.no_grad():
        cached = {
            "image_features": model.image_encoder(raw["image"]),
            "title_features": model.text_encoder(raw["title"]),
        }
        cached["attribute_features"], cached["attribute_mask"] = raw_attribute_features(
            raw["attributes"], model.attribute_names, model.text_encoder
        )
        assert cached["attribute_mask"].tolist() == [[True, False], [False, False]]
        assert torch.allclose(model.encode_product(raw), model.encode_product(cached), atol=1e-5)


def test_modalities_select_the_fused_inputs():
    clip_i = ClipIta(modalities=["image"], image_weights="none")
    title_only = ClipIta(modalities=["title"])
    assert title_only.image_encoder is None
    assert clip_i.fusion.modalities == ["image"]
    with pytest.raises(ValueError, match="'colour'"):
        check_modalities(["image", "colour"])


def test_mean_pooling_ignores_missing_attributes():
    pool = AttributePooling(2)
    x = torch.tensor([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]]])
    out = pool(x, torch.tensor([[True, True, False]]))
    assert out.tolist() == [[2.0, 3.0]]
    assert pool(x, torch.tensor([[False, False, False]])).tolist() == [[0.0, 0.0]]


def test_residual_category_head_starts_as_identity():
    model = ClipIta(modalities=["title"], category_head="residual", embed_dim=384)
    features = torch.randn(3, 384)
    assert torch.allclose(model.encode_category(features, normalize=False), features)
    with pytest.raises(ValueError, match="in_dim == out_dim"):
        ClipIta(modalities=["title"], category_head="residual", embed_dim=128)


def test_zero_shot_weight_mixes_in_the_title_embedding():
    model = ClipIta(
        modalities=["image"],
        image_weights="none",
        embed_dim=384,
        category_head="identity",
        zero_shot_weight=1e6,
    ).eval()
    batch = {"image_features": torch.randn(2, 1280), "title_features": torch.randn(2, 384)}
    with torch.no_grad():
        out = model.encode_product(batch)
    expected = torch.nn.functional.normalize(batch["title_features"], dim=-1)
    assert torch.allclose(out, expected, atol=1e-4)  # a huge weight leaves the zero-shot title embedding
    with pytest.raises(ValueError, match="embed_dim"):
        ClipIta(modalities=["title"], embed_dim=256, zero_shot_weight=0.5)


def test_non_finite_inputs_are_reported_with_their_product_ids():
    from lightning_modules.finite_inputs import check_finite

    batch = {"product_id": ["a", "b", "c"], "image_features": torch.randn(3, 8)}
    check_finite(batch, "train")
    batch["image_features"][1, 3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"image_features.*\['b'\]"):
        check_finite(batch, "train")


def test_routing_scores_novel_categories_by_the_zero_shot_title_match():
    import torch.nn.functional as F

    model = ClipIta(
        modalities=["image", "title"],
        image_weights="none",
        embed_dim=384,
        category_head="residual",
        zero_shot_weight=1.0,
        route_novel_categories=True,
    ).eval()
    batch = {"image_features": torch.randn(5, 1280), "title_features": torch.randn(5, 384)}
    names = torch.randn(3, 384)
    novel = torch.tensor([False, True, False])
    with torch.no_grad():
        products = model.encode_product_for_retrieval(batch)
        queries = model.scorer.encode_query(names, novel)
        scores = queries @ products.T
        trained = model.encode_category(names) @ model.encode_product(batch).T
    zero_shot = F.normalize(names, dim=-1) @ F.normalize(batch["title_features"], dim=-1).T
    assert products.shape == (5, 768)
    assert torch.allclose(scores[~novel], trained[~novel], atol=1e-5)
    assert torch.allclose(scores[novel], zero_shot[novel], atol=1e-5)


def test_named_recipes_build_the_network_from_python(tmp_path):
    net = create_model("clip_ita_plus", image_weights="none")
    assert net.config["category_head"] == "residual" and net.config["route_novel_categories"]
    assert net.config["image_weights"] == "none"  # the override wins
    assert ClipIta(**net.config).config == net.config  # the config rebuilds it
    with pytest.raises(FileNotFoundError, match="no_such_recipe"):
        create_model("no_such_recipe")


def test_novel_means_outside_the_trained_set_by_path_or_else_by_text():
    model = ClipIta(modalities=["title"])
    assert model.novel_mask(["Gloves"]).tolist() == [False]  # no trained set known: nothing is novel
    model.set_trained_categories([("Accessories",), ("Accessories", "Gloves")])
    paths = [("Accessories", "Gloves"), ("Apparel", "Gloves"), None]
    assert model.novel_mask(["Gloves", "Gloves", "Scarves"], paths).tolist() == [False, True, True]
    assert model.novel_mask(["Gloves", "Accessories", "Scarves"]).tolist() == [False, False, True]


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_image_evidence_head_and_every_parameter_receive_a_gradient(fusion):
    """With ``image_evidence`` the image-only head is trained by its own contrastive term against the same category
    tower: summing both views' losses (as the LightningModule does) reaches every trainable parameter."""
    model = ClipIta(
        image_weights="none", fusion=fusion, category_head="mlp", dropout=0.0, image_evidence=True
    )
    loss_fn = MultiPositiveInfoNCELoss(temperature=0.1)
    batch = _feature_batch()
    views = model.encode_product_views(batch)
    assert set(views) == {"product", "image"}
    assert torch.allclose(views["product"], model.encode_product(batch), atol=1e-6)
    targets = batch["category_ids"][:, -1]
    categories = model.encode_category(torch.randn(10, 384)[targets])
    loss = sum(
        loss_fn(v, categories, target_ids=targets, product_category_ids=batch["category_ids"])
        for v in views.values()
    )
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("image_head.") for n, _ in trainable)
    assert [n for n, p in trainable if p.grad is None or not torch.any(p.grad != 0)] == []


def test_image_evidence_needs_the_image_modality():
    with pytest.raises(ValueError, match="image_evidence needs the 'image' modality"):
        ClipIta(modalities=["title"], image_evidence=True)
