"""The perceptual loss evaluated in tiles equals the whole-image value."""

from __future__ import annotations

import pytest
import torch

from perceptual_loss import PerceptualLoss
from perceptual_loss.frozen import copy_frozen_weights
from perceptual_loss.tiling import core_bounds

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = {"backbone": "vgg11", "layers": ("relu1_1", "relu2_1", "relu3_2", "pool3"),
           "weights": None, "reduction": "none", "pixel_mse": 0.5}


def _pair(n=2, c=3, h=150, w=170, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=gen), torch.rand(n, c, h, w, generator=gen)


@pytest.mark.parametrize("criterion", ["l1", "mse", "charbonnier"])
def test_tiled_value_equals_the_whole_image(criterion):
    torch.manual_seed(0)
    whole = PerceptualLoss(**OPTIONS, criterion=criterion)
    tiled = PerceptualLoss(**OPTIONS, criterion=criterion, tile_size=96)
    copy_frozen_weights(whole, tiled)
    x, y = _pair()
    assert tiled.tiler.tile_count(150, 170) > 1
    with torch.no_grad():
        torch.testing.assert_close(tiled(x, y), whole(x, y), rtol=1e-5, atol=1e-7)


def test_tiled_gradients_equal_the_whole_image_and_per_channel_mode():
    torch.manual_seed(1)
    options = {**OPTIONS, "channel_mode": "per_channel", "normalize_features": True}
    whole = PerceptualLoss(**options)
    tiled = PerceptualLoss(**options, tile_size=80)
    copy_frozen_weights(whole, tiled)
    x, y = _pair(n=1, c=2, h=100, w=90, seed=2)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    va, vb = whole(xa, y), tiled(xb, y)
    torch.testing.assert_close(vb, va, rtol=1e-5, atol=1e-7)
    va.sum().backward()
    vb.sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-4, atol=1e-6 * xa.grad.abs().max())


def test_tiles_keep_layer_weights_charbonnier_and_normalised_features_per_term():
    """The tiled path computes through the recipe's own maps: every weight and option."""
    torch.manual_seed(3)
    options = {**OPTIONS, "criterion": "charbonnier", "normalize_features": True,
               "layer_weights": (2.0, 0.5, 3.0, 0.25), "feature_weight": 1.5}
    whole = PerceptualLoss(**options)
    tiled = PerceptualLoss(**options, tile_size=96)
    copy_frozen_weights(whole, tiled)
    x, y = _pair(seed=4)
    with torch.no_grad():
        value, parts = tiled(x, y, return_parts=True)
        expected, expected_parts = whole(x, y, return_parts=True)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
    assert parts.keys() == expected_parts.keys()
    for name in parts:
        torch.testing.assert_close(parts[name], expected_parts[name], rtol=1e-5, atol=1e-8)


def test_tiles_are_refused_with_style_and_when_too_small():
    with pytest.raises(ValueError, match="Gram matrices"):
        PerceptualLoss(**OPTIONS, style_layers=("relu1_1",), tile_size=128)
    with pytest.raises(ValueError, match=r"tile_size=16 is too small"):
        PerceptualLoss(**OPTIONS, tile_size=16)


def test_core_bounds_cover_the_image_on_the_stride_grid():
    bounds = core_bounds(1000, 256, 40, 16, 10)
    assert bounds[0][0] == 0 and bounds[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(start % 16 == 0 for start, _ in bounds)
