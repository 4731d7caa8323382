"""The recipe: options resolved once, and the term plan against computations written here."""

import dataclasses
import inspect

import pytest
import torch

from perceptual_loss import PerceptualLoss
from perceptual_loss.functional import TORCH_OPS
from perceptual_loss.recipe import (
    DEFAULT_LAYERS,
    RECIPE_OPTION_NAMES,
    RECIPE_OPTIONS,
    TERM_WEIGHTS,
    Recipe,
    RecipeOptions,
    block_ends,
    check_option_names,
    default_layers,
    feature_distance_maps,
    feature_terms,
    group_parts,
    pixel_terms,
    term_group,
)

N = 2


def _maps(layers, channels=4, size=5, seed=0):
    """``(layer, prediction map, target map)`` in float64, one size per layer."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index, layer in enumerate(layers):
        shape = (N, channels + index, size - index, size + 1 - index)
        out.append((layer, torch.rand(shape, generator=generator, dtype=torch.float64),
                    torch.rand(shape, generator=generator, dtype=torch.float64)))
    return out


def _gram(f):
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def _unit(f, eps=1e-10):
    return f / torch.sqrt((f * f).sum(1, keepdim=True) + eps * eps)


# ---------------------------------------------------------------------------- Recipe.create
def test_defaults_are_the_articles_layers_with_unit_weights():
    recipe = Recipe.create()
    assert recipe.backbone == "vgg16" and recipe.layers == DEFAULT_LAYERS
    assert recipe.layer_weights == (1.0,) * 4 and recipe.weights == "imagenet"
    assert recipe.term_names() == [f"content/{layer}" for layer in DEFAULT_LAYERS]


@pytest.mark.parametrize("value", [None, "random", " None ", "RANDOM"])
def test_random_weights_are_one_value(value):
    assert Recipe.create(weights=value).weights is None


def test_per_layer_weights_by_name_follow_canonical_names_and_keras_aliases():
    recipe = Recipe.create(layers=("relu1_2", "block2_conv2"),
                           layer_weights={"block2_conv2": 3.0})
    assert recipe.layers == ("relu1_2", "relu2_2")
    assert recipe.layer_weights == (1.0, 3.0)


def test_style_criterion_follows_the_content_criterion_unless_given():
    assert Recipe.create(criterion="mse").style_criterion == "mse"
    assert Recipe.create(criterion="mse", style_criterion="l1").style_criterion == "l1"


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"criterion": "l3"}, ValueError, "unknown criterion 'l3'"),
    ({"layer_weights": (1.0, 2.0)}, ValueError, "layer_weights has 2 values for 4 layers"),
    ({"layer_weights": {"relu5_3": 1.0}}, ValueError, "names layers"),
    ({"feature_weight": -1.0}, ValueError, "feature_weight"),
    ({"charbonnier_eps": 0.0}, ValueError, "charbonnier_eps must be > 0"),
    ({"layers": (), "style_layers": ()}, ValueError, "nothing to compute"),
    ({"weights": 3}, TypeError, "weights must be a name"),
    ({"check_values": "yes"}, TypeError, "check_values must be True or False"),
])
def test_bad_options_name_the_option(options, error, match):
    with pytest.raises(error, match=match):
        Recipe.create(**options)


def test_a_recipe_survives_its_config_and_replace():
    recipe = Recipe.create(layers=("relu2_2",), criterion="charbonnier", style_layers=("relu1_2",),
                           pixel_l1=0.5, input_range=(-1, 1))
    assert Recipe.from_config(recipe.to_config()) == recipe
    assert recipe.replace(reduction="none").reduction == "none"
    assert recipe.replace(reduction="none").replace(reduction="mean") == recipe
    with pytest.raises(ValueError, match="unknown recipe fields"):
        Recipe.from_config({**recipe.to_config(), "colour": 1})


# ---------------------------------------------------------------------------- the option list
def test_the_option_names_are_the_recipe_fields_and_the_create_keywords():
    fields = [f.name for f in dataclasses.fields(Recipe)]
    assert list(RECIPE_OPTION_NAMES) == [n for n in fields if n not in
                                         ("backbone", "layers", "weights")]
    assert RECIPE_OPTIONS == set(RecipeOptions.__annotations__) == set(RECIPE_OPTION_NAMES)
    keywords = [name for name, parameter in inspect.signature(Recipe.create).parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name != "canonical"]
    assert keywords == list(RECIPE_OPTION_NAMES)


def test_an_unknown_option_suggests_the_nearest_one():
    check_option_names({"criterion": "l1", "pooling": "max"}, "PerceptualLoss")
    with pytest.raises(TypeError, match="unknown option 'normalise_features'.*"
                                        "Did you mean 'normalize_features'"):
        check_option_names({"normalise_features": True}, "PerceptualLoss")


def test_every_term_group_is_weighed_by_a_recipe_field():
    for field, _ in TERM_WEIGHTS.values():
        assert field in RECIPE_OPTIONS
    recipe = Recipe.create(layers=("relu1_2",), style_layers=("relu2_2",), pixel_mse=1.0,
                           pixel_l1=1.0, ssim_weight=1.0, tv_weight=1.0)
    assert {term_group(name) for name in recipe.term_names()} == set(TERM_WEIGHTS)


# ---------------------------------------------------------------------------- feature_terms
@pytest.mark.parametrize("criterion", ["l1", "mse", "charbonnier"])
@pytest.mark.parametrize("normalize", [False, True])
def test_content_terms_match_a_direct_computation(criterion, normalize):
    layers = ("relu1_2", "relu2_2", "relu3_3")
    recipe = Recipe.create(layers=layers, layer_weights=(0.5, 2.0, 1.5), criterion=criterion,
                           normalize_features=normalize, feature_weight=3.0,
                           charbonnier_eps=0.01)
    maps = _maps(layers)
    terms = feature_terms(recipe, iter(maps), TORCH_OPS, N)
    assert list(terms) == [f"content/{layer}" for layer in layers]
    for (layer, p, t), weight in zip(maps, (0.5, 2.0, 1.5), strict=True):
        if normalize:
            p, t = _unit(p), _unit(t)
        d = p - t
        per_element = {"l1": d.abs(), "mse": d * d,
                       "charbonnier": torch.sqrt(d * d + 0.01**2)}[criterion]
        expected = 3.0 * weight * per_element.flatten(1).mean(1)
        torch.testing.assert_close(terms[f"content/{layer}"], expected)


def test_style_terms_compare_gram_matrices_normalised_by_chw():
    recipe = Recipe.create(layers=("relu2_2",), style_layers=("relu1_2", "relu2_2"),
                           style_layer_weights={"relu2_2": 4.0}, style_weight=10.0,
                           style_criterion="mse")
    maps = _maps(("relu1_2", "relu2_2"))
    terms = feature_terms(recipe, iter(maps), TORCH_OPS, N)
    assert list(terms) == ["content/relu2_2", "style/relu1_2", "style/relu2_2"]
    for (layer, p, t), weight in zip(maps, (1.0, 4.0), strict=True):
        expected = 10.0 * weight * (_gram(p) - _gram(t)).pow(2).flatten(1).mean(1)
        torch.testing.assert_close(terms[f"style/{layer}"], expected)


def test_cached_style_grams_of_one_image_serve_the_whole_batch():
    recipe = Recipe.create(layers=(), style_layers=("relu1_2",))
    (layer, p, t), = _maps(("relu1_2",))
    style_image = t[:1]
    cached = {layer: _gram(style_image)}
    terms = feature_terms(recipe, iter([(layer, p, None)]), TORCH_OPS, N, cached)
    expected = (_gram(p) - _gram(style_image)).abs().flatten(1).mean(1)
    torch.testing.assert_close(terms["style/relu1_2"], expected)


def test_per_channel_terms_average_the_images_channels():
    recipe = Recipe.create(layers=("relu1_2",), channel_mode="per_channel")
    generator = torch.Generator().manual_seed(2)
    # 2 images of 3 channels each went through the trunk as 6 one-channel images
    p, t = (torch.rand(N * 3, 4, 5, 5, generator=generator, dtype=torch.float64)
            for _ in range(2))
    terms = feature_terms(recipe, iter([("relu1_2", p, t)]), TORCH_OPS, N)
    per_map = (p - t).abs().flatten(1).mean(1)
    torch.testing.assert_close(terms["content/relu1_2"], per_map.view(N, 3).mean(1))


# ---------------------------------------------------------------------------- pixel_terms
def test_pixel_terms_are_computed_on_images_mapped_to_unit_range():
    recipe = Recipe.create(layers=(), pixel_mse=2.0, pixel_l1=0.5, tv_weight=0.1,
                           input_range=(-1, 1))
    generator = torch.Generator().manual_seed(3)
    p = torch.rand(N, 3, 8, 8, generator=generator, dtype=torch.float64) * 2 - 1
    t = torch.rand(N, 3, 8, 8, generator=generator, dtype=torch.float64) * 2 - 1
    terms = pixel_terms(recipe, p, t, TORCH_OPS)
    p01, t01 = (p + 1) / 2, (t + 1) / 2
    torch.testing.assert_close(terms["pixel/mse"], 2.0 * (p01 - t01).pow(2).flatten(1).mean(1))
    torch.testing.assert_close(terms["pixel/l1"], 0.5 * (p01 - t01).abs().flatten(1).mean(1))
    tv = ((p01[:, :, 1:] - p01[:, :, :-1]).abs().flatten(1).mean(1)
          + (p01[..., 1:] - p01[..., :-1]).abs().flatten(1).mean(1))
    torch.testing.assert_close(terms["tv"], 0.1 * tv)
    assert list(terms) == ["pixel/mse", "pixel/l1", "tv"]


def test_pixel_terms_with_ssim_match_pytorch_msssim():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    recipe = Recipe.create(layers=(), ssim_weight=1.0)
    generator = torch.Generator().manual_seed(4)
    p, t = (torch.rand(N, 3, 16, 16, generator=generator) for _ in range(2))
    terms = pixel_terms(recipe, p, t, TORCH_OPS)
    expected = 1 - pytorch_msssim.ssim(p, t, data_range=1.0, size_average=False)
    torch.testing.assert_close(terms["ssim"], expected)


# ---------------------------------------------------------------------------- group_parts
def test_group_parts_sums_each_term_over_its_layers():
    parts = {"content/relu1_2": torch.tensor([1.0, 2.0]), "content/relu2_2": torch.tensor(
        [0.5, 0.5]), "style/relu1_2": torch.tensor([3.0, 0.0]),
        "pixel/mse": torch.tensor([0.25, 0.25]), "ssim": torch.tensor([0.1, 0.2])}
    grouped = group_parts(parts)
    assert list(grouped) == ["content", "style", "mse", "ssim"]
    torch.testing.assert_close(grouped["content"], torch.tensor([1.5, 2.5]))
    torch.testing.assert_close(grouped["mse"], torch.tensor([0.25, 0.25]))
    assert group_parts({}) == {}


def test_grouped_parts_of_a_loss_add_up_to_its_value():
    loss = PerceptualLoss(weights=None, layers=("relu1_2", "relu2_2"), pixel_l1=0.3,
                          style_layers=("relu1_2",), reduction="none")
    generator = torch.Generator().manual_seed(5)
    p, t = (torch.rand(N, 3, 16, 16, generator=generator) for _ in range(2))
    value, parts = loss(p, t, return_parts=True)
    grouped = group_parts(parts)
    assert set(grouped) == {"content", "style", "l1"}
    torch.testing.assert_close(sum(grouped.values()), value)


# ---------------------------------------------------------------------------- layer defaults
def test_default_layers_keep_the_articles_layers_where_they_exist():
    assert default_layers("vgg16") == default_layers("vgg19") == DEFAULT_LAYERS
    assert default_layers("vgg11") == ("relu1_1", "relu2_1", "relu3_2", "relu4_2")
    assert default_layers("vgg16", ("relu1_1",)) == ("relu1_1",)
    assert block_ends("vgg19")[-1] == "relu5_4"
    with pytest.raises(ValueError, match="unknown backbone"):
        default_layers("vgg17")


# ---------------------------------------------------------------------------- distance maps
@pytest.mark.parametrize("channel_mode", ["repeat", "per_channel"])
def test_distance_maps_average_to_the_content_terms(channel_mode):
    layers = ("relu1_2", "relu2_2")
    recipe = Recipe.create(layers=layers, layer_weights=(0.5, 2.0), criterion="charbonnier",
                           normalize_features=True, feature_weight=1.5, style_layers=("relu1_2",),
                           channel_mode=channel_mode)
    maps = _maps(layers)
    n = 1 if channel_mode == "per_channel" else N  # per_channel: one image of 2 channels
    density = feature_distance_maps(recipe, iter(maps), TORCH_OPS, n)
    terms = feature_terms(recipe, iter(maps), TORCH_OPS, n)
    assert list(density) == ["content/relu1_2", "content/relu2_2"]
    for name, layer_map in density.items():
        assert layer_map.shape[:2] == (n, 1)
        torch.testing.assert_close(layer_map.mean((1, 2, 3)), terms[name])
