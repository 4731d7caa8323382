"""Winograd F(4x4, 3x3): values and input gradients against float64 convolutions, where it runs,
its filter cache, and the loss it serves by default."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F

from perceptual_loss import FeatureExtractor, PerceptualLoss, _winograd
from perceptual_loss._lean import build_plan, lean_forward
from perceptual_loss.execution import uses_winograd

pytestmark = pytest.mark.usefixtures("one_thread")

#: Relative to the output's norm; oneDNN's direct float32 kernels reach about 3e-7 here.
TOLERANCE = 1e-5


def _relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.detach().double() - reference).norm() / reference.norm())


def _layer(channels: int, out_channels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_channels, channels, 3, 3, generator=g) / (9 * channels) ** 0.5
    return weight, torch.randn(out_channels, generator=g)


SHAPES = [  # (N, C_in, C_out, H, W): whole tiles, ragged edges, a single pixel, a tall strip
    (1, 128, 256, 28, 28),
    (2, 256, 128, 13, 29),
    (3, 256, 256, 7, 5),
    (2, 128, 256, 1, 1),
    (1, 256, 256, 70, 9),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_and_input_gradient_match_a_float64_convolution(shape):
    n, channels, out_channels, height, width = shape
    weight, bias = _layer(channels, out_channels, seed=sum(shape))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, channels, height, width, generator=g)
    grad_out = torch.randn(n, out_channels, height, width, generator=g)

    reference = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    out = _winograd.conv3x3(x, weight, bias)
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert out.stride(1) == 1  # channels innermost, as oneDNN and the next layer want
    assert _relative(out, reference) < TOLERANCE

    grad_reference = torch.ops.aten.convolution_backward(
        grad_out.double(), x.double(), weight.double(), None, [1, 1], [1, 1], [1, 1], False,
        [0, 0], 1, [True, False, False])[0]
    grad = _winograd.conv3x3_input_grad(grad_out, weight)
    assert grad.shape == x.shape
    assert _relative(grad, grad_reference) < TOLERANCE


def test_images_split_into_bands_give_the_same_result(monkeypatch):
    weight, bias = _layer(128, 256, seed=3)
    x = torch.randn(2, 128, 42, 30, generator=torch.Generator().manual_seed(4))
    grad_out = torch.randn(2, 256, 42, 30, generator=torch.Generator().manual_seed(5))
    whole = _winograd.conv3x3(x, weight, bias)
    whole_grad = _winograd.conv3x3_input_grad(grad_out, weight)
    monkeypatch.setattr(_winograd, "_BAND_TILE_BYTES", 1)  # one tile row per band
    torch.testing.assert_close(_winograd.conv3x3(x, weight, bias), whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(_winograd.conv3x3_input_grad(grad_out, weight), whole_grad,
                               rtol=0, atol=1e-6)


def test_runs_only_where_it_computes_the_same_convolution_and_pays():
    weight = torch.zeros(256, 128, 3, 3)
    x = torch.zeros(1, 128, 8, 8)
    same = ((1, 1), (1, 1), (1, 1), 1)
    assert _winograd.usable(x, weight, *same)
    assert not _winograd.usable(x.double(), weight.double(), *same)
    assert not _winograd.usable(x.bfloat16(), weight, *same)
    assert not _winograd.usable(x, weight, (2, 2), (1, 1), (1, 1), 1)  # stride
    assert not _winograd.usable(x, weight, (1, 1), (0, 0), (1, 1), 1)  # padding
    assert not _winograd.usable(x, weight, (1, 1), (2, 2), (2, 2), 1)  # dilation
    assert not _winograd.usable(torch.zeros(1, 64, 8, 8), torch.zeros(64, 64, 3, 3), *same)
    assert not _winograd.usable(torch.zeros(1, 128, 8, 8), torch.zeros(128, 128, 3, 3), *same)
    assert not _winograd.usable(x, torch.zeros(256, 128, 1, 1), *same)
    with torch.autocast("cpu", torch.bfloat16):
        assert not _winograd.usable(x, weight, *same)
    assert uses_winograd("auto") and not uses_winograd("direct")
    assert not uses_winograd("auto", plain=True)


def test_the_filter_cache_follows_in_place_updates_and_dies_with_its_weight():
    weight, bias = _layer(128, 256, seed=6)
    x = torch.randn(1, 128, 8, 8, generator=torch.Generator().manual_seed(7))
    before = _winograd.conv3x3(x, weight, bias)
    with torch.no_grad():
        weight.mul_(2.0)  # what load_state_dict's in-place copy does: the version moves on
    after = _winograd.conv3x3(x, weight, bias)
    torch.testing.assert_close(after - bias.view(1, -1, 1, 1),
                               2 * (before - bias.view(1, -1, 1, 1)), rtol=1e-5, atol=1e-5)
    assert _winograd.cached_bytes() >= 36 * 128 * 256 * 4  # 4x the layer's weights
    key = id(weight)
    assert key in _winograd._WEIGHT_CACHE
    del weight
    gc.collect()
    assert key not in _winograd._WEIGHT_CACHE


def _vgg16_trunk() -> torch.nn.Sequential:
    fx = FeatureExtractor("vgg16", layers=("relu4_3",), weights=None, memory="plain")
    return fx.body


def test_lean_trunk_with_winograd_keeps_values_and_gradients():
    trunk = _vgg16_trunk()
    keep = [8, 15, 22]  # relu2_2, relu3_3, relu4_3
    plan = build_plan(trunk, keep)
    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 3, 36, 44, generator=g)
    weights = {k: torch.randn(1, generator=g) for k in keep}
    results = []
    for winograd in (False, True):
        xi = x.clone().requires_grad_()
        feats = lean_forward(trunk, xi, plan, winograd=winograd)
        sum(weights[k] * feats[k].square().mean() for k in keep).sum().backward()
        results.append((feats, xi.grad))
    (direct, direct_grad), (wino, wino_grad) = results
    for k in keep:
        assert _relative(wino[k], direct[k].double()) < TOLERANCE, k
    assert _relative(wino_grad, direct_grad.double()) < 3 * TOLERANCE
    # Without a gradient the fused steps compute the same values and record nothing.
    with torch.no_grad():
        values = lean_forward(trunk, x, plan, winograd=True)
    for k in keep:
        torch.testing.assert_close(values[k], wino[k].detach(), rtol=0, atol=0)


def _auto_against_direct(size: tuple[int, int], seed: int, **options) -> list[tuple]:
    """Value and input gradient of the loss with Winograd and with oneDNN, same weights and
    images; returns the Winograd calls of the ``"auto"`` run (``conv3x3``'s arguments)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, *size, generator=g)
    y = torch.rand(2, 3, *size, generator=g)
    values, grads, calls = {}, {}, []
    original = _winograd.conv3x3

    def counted(*args):  # noqa: ANN002, ANN202
        calls.append(args)
        return original(*args)

    for convolution in ("auto", "direct"):
        torch.manual_seed(0)
        loss_fn = PerceptualLoss("vgg16", weights=None, criterion="mse",
                                 convolution=convolution, **options)
        xi = x.clone().requires_grad_()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_winograd, "conv3x3", counted)
            value = loss_fn(xi, y)
        value.backward()
        values[convolution], grads[convolution] = value.detach(), xi.grad
        if convolution == "auto":
            auto_calls = list(calls)
    assert len(calls) == len(auto_calls)  # "direct" never runs Winograd
    torch.testing.assert_close(values["auto"], values["direct"], rtol=1e-5, atol=0)
    assert _relative(grads["auto"], grads["direct"].double()) < 3 * TOLERANCE
    return auto_calls


def test_the_default_loss_runs_winograd_on_cpu_and_direct_gives_the_plain_values():
    calls = _auto_against_direct((48, 40), seed=9)
    # VGG16 up to relu4_3: conv3_1..conv4_3 qualify, for the prediction and the target
    assert len(calls) == 2 * 6


@pytest.mark.parametrize("layers", [("conv3_3", "conv4_3"), ("relu3_1", "pool3", "conv4_2")],
                         ids=lambda ls: "+".join(ls))
def test_pre_activation_and_pool_taps_through_winograd_layers(layers):
    # A tap before a ReLU (ESRGAN's features) takes the Winograd output itself, and its
    # gradient joins the masked one from the layers above.
    assert _auto_against_direct((40, 36), seed=10, layers=layers, chunk_size=None)


def test_an_unknown_convolution_option_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="convolution must be 'auto' or 'direct'"):
        PerceptualLoss(weights=None, convolution="winograd")  # type: ignore[arg-type]
