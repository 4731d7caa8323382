"""The loss mix of a training run: a spec parsed into the library's recipe."""

import pytest
import torch
import torch.nn.functional as F

from perceptual_loss import PerceptualLoss
from perceptual_loss.apps.train.loss_mix import (
    CONTENT_TERM,
    LOSS_TERMS,
    LossConfig,
    build_loss,
    loss_recipe,
    parse_loss_spec,
)
from perceptual_loss.recipe import DEFAULT_LAYERS, TERM_WEIGHTS, Recipe, term_group


def test_parse_loss_spec():
    assert parse_loss_spec("mse=1,perceptual=0.1,style=1e5,tv=1e-6") == {
        "mse": 1.0, "perceptual": 0.1, "style": 1e5, "tv": 1e-6,
    }
    assert parse_loss_spec(" perceptual ") == {"perceptual": 1.0}
    with pytest.raises(ValueError, match="unknown loss term 'lpips'"):
        parse_loss_spec("lpips=1")
    with pytest.raises(ValueError, match="appears twice"):
        parse_loss_spec("mse=1,mse=2")
    with pytest.raises(ValueError, match="not a number"):
        parse_loss_spec("mse=lots")
    with pytest.raises(ValueError, match=">= 0"):
        parse_loss_spec("mse=-1")
    with pytest.raises(ValueError, match="no term with a positive weight"):
        parse_loss_spec("mse=0")


def test_build_loss_pixel_only_needs_no_backbone():
    loss_fn = build_loss(LossConfig({"mse": 2.0, "l1": 0.5}, weights="imagenet"))
    assert loss_fn.extractor is None  # no VGG built, no weights looked up
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    expected = 2.0 * F.mse_loss(x, y) + 0.5 * F.l1_loss(x, y)
    torch.testing.assert_close(loss_fn(x, y), expected)


def test_build_loss_weights_each_term():
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    torch.manual_seed(0)
    mixed = build_loss(LossConfig({"mse": 1.0, "perceptual": 0.5, "style": 3.0, "tv": 0.1},
                                  layers=("relu1_1",), style_layers=("relu1_1",),
                                  backbone="vgg11", weights=None))
    torch.manual_seed(0)
    content = PerceptualLoss("vgg11", ("relu1_1",), None)
    torch.manual_seed(0)
    style = PerceptualLoss("vgg11", (), None, style_layers=("relu1_1",))
    tv = ((x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean())
    loss, parts = mixed(x, y, return_parts=True)
    assert {"content/relu1_1", "style/relu1_1", "pixel/mse", "tv"} <= set(parts)
    torch.testing.assert_close(parts["content/relu1_1"], 0.5 * content(x, y))
    torch.testing.assert_close(parts["style/relu1_1"], 3.0 * style(x, y))
    torch.testing.assert_close(parts["pixel/mse"], F.mse_loss(x, y))
    assert float(parts["tv"]) == pytest.approx(0.1 * float(tv), rel=0.05)  # TV definitions vary
    torch.testing.assert_close(loss, sum(parts.values()))


def test_every_spec_term_is_a_term_group_of_the_recipe():
    assert list(LOSS_TERMS) == ["mse", "l1", "perceptual", "style", "ssim", "tv"]
    groups = {CONTENT_TERM if group == "content" else group for group in TERM_WEIGHTS}
    assert set(LOSS_TERMS) == groups


def test_loss_recipe_is_the_recipe_of_the_same_options():
    config = LossConfig(parse_loss_spec("mse=1,l1=0.2,perceptual=0.1,style=1e3,ssim=0.5,tv=1e-4"),
                        weights="random")
    expected = Recipe.create("vgg16", DEFAULT_LAYERS, None, feature_weight=0.1,
                             style_layers=DEFAULT_LAYERS, style_weight=1e3, pixel_mse=1.0,
                             pixel_l1=0.2, ssim_weight=0.5, tv_weight=1e-4)
    recipe = loss_recipe(config)
    assert recipe == expected
    assert {term_group(name) for name in recipe.term_names()} == {
        "content" if term == CONTENT_TERM else term for term in config.terms}


def test_a_term_of_weight_zero_is_left_out_and_vgg11_gets_its_own_layers():
    recipe = loss_recipe(LossConfig({"perceptual": 1.0, "style": 0.0, "mse": 0.0},
                                    backbone="vgg11", weights=None))
    assert recipe.layers == ("relu1_1", "relu2_1", "relu3_2", "relu4_2")
    assert recipe.style_layers == () and recipe.pixel_mse == 0.0
    assert recipe.term_names() == [f"content/{layer}" for layer in recipe.layers]


def test_medical_networks_take_named_layers_and_style_as_any_backbone():
    with pytest.raises(ValueError, match="no default style layers.*--style-layers layer1"):
        build_loss(LossConfig({"style": 1.0}, backbone="resnet50", weights=None))
    loss = build_loss(LossConfig({"perceptual": 1.0, "style": 10.0}, backbone="resnet50",
                                 layers=("layer1",), style_layers=("layer1", "layer2"),
                                 weights=None))
    assert isinstance(loss, PerceptualLoss)
    assert loss.recipe.layers == ("layer1",) and loss.recipe.style_layers == ("layer1", "layer2")
    x = torch.rand(1, 1, 32, 32)
    assert set(loss(x, x.flip(-1), return_parts=True)[1]) == {
        "content/layer1", "style/layer1", "style/layer2"}
    with pytest.raises(ValueError, match="3D network"):
        build_loss(LossConfig({"perceptual": 1.0}, backbone="medicalnet_resnet10",
                              weights=None))
