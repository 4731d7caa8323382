"""LPIPS-compatible metric: parity with the paper's definition, gradients, ranges, tiling."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perceptual_loss.backbones import get_backbone
from perceptual_loss.metrics.lpips import (
    LPIPS,
    LPIPS_NETS,
    _cached_metric,
    load_lpips_heads,
    lpips_distance,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# The input scaling layer of the paper's reference code, on [-1, 1] images.
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------------------------
# An independent LPIPS, written from the paper with plain torch functions on a state dict.
# ---------------------------------------------------------------------------------------------

def _conv_relu(x, state, index, stride=1, padding=0):
    return F.relu(F.conv2d(x, state[f"{index}.weight"], state[f"{index}.bias"], stride, padding))


def _fire(x, state, index):
    p = f"{index}."
    s = F.relu(F.conv2d(x, state[p + "squeeze.weight"], state[p + "squeeze.bias"]))
    e1 = F.relu(F.conv2d(s, state[p + "expand1x1.weight"], state[p + "expand1x1.bias"]))
    e3 = F.relu(F.conv2d(s, state[p + "expand3x3.weight"], state[p + "expand3x3.bias"],
                         padding=1))
    return torch.cat([e1, e3], 1)


def reference_trunk(net, x, state):
    """The feature maps LPIPS taps, from the architecture papers, on a features state dict."""
    taps = []
    if net == "alex":
        x = _conv_relu(x, state, 0, stride=4, padding=2)
        taps.append(x)
        x = _conv_relu(F.max_pool2d(x, 3, 2), state, 3, padding=2)
        taps.append(x)
        x = _conv_relu(F.max_pool2d(x, 3, 2), state, 6, padding=1)
        taps.append(x)
        x = _conv_relu(x, state, 8, padding=1)
        taps.append(x)
        taps.append(_conv_relu(x, state, 10, padding=1))
    elif net == "vgg":
        index = 0
        for block, convs in enumerate((2, 2, 3, 3, 3)):
            if block:
                x = F.max_pool2d(x, 2, 2)
                index += 1
            for _ in range(convs):
                x = _conv_relu(x, state, index, padding=1)
                index += 2
            taps.append(x)
    else:  # squeeze
        x = _conv_relu(x, state, 0, stride=2)
        taps.append(x)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = _fire(_fire(x, state, 3), state, 4)
        taps.append(x)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = _fire(_fire(x, state, 6), state, 7)
        taps.append(x)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        for index in (9, 10, 11, 12):
            x = _fire(x, state, index)
            taps.append(x)
    return taps


def reference_lpips(net, x, y, state, heads, spatial=False):
    """Paper's LPIPS on [-1, 1] images: unit-normalise, squared difference, head, mean, sum."""
    fx = reference_trunk(net, (x - SHIFT) / SCALE, state)
    fy = reference_trunk(net, (y - SHIFT) / SCALE, state)
    total = 0
    for a, b, w in zip(fx, fy, heads, strict=True):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        layer = ((a - b) ** 2 * w.view(1, -1, 1, 1)).sum(1, keepdim=True)
        if spatial:
            total = total + F.interpolate(layer, size=x.shape[-2:], mode="bilinear",
                                          align_corners=False)
        else:
            total = total + layer.mean((1, 2, 3))
    return total


BACKBONE = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
SIZE = {"alex": 64, "vgg": 40, "squeeze": 48}


@pytest.fixture(scope="module")
def trunk_files(tmp_path_factory):
    """Random trunk checkpoints written by the test.

    SqueezeNet as a full model (torchvision layout, ``features.*`` keys); AlexNet and VGG16 as
    their trunk alone (``0.weight``, ...), which keeps the files small.
    """
    folder = tmp_path_factory.mktemp("trunks")
    files = {}
    for net, backbone in BACKBONE.items():
        torch.manual_seed({"alex": 1, "vgg": 2, "squeeze": 3}[net])
        spec = get_backbone(backbone)
        model = spec.build() if net == "squeeze" else spec.build_features()
        files[net] = folder / f"{backbone}-random.pth"
        torch.save(model.state_dict(), files[net])
    return files


def features_state(path):
    state = torch.load(path, weights_only=True)
    if not any(k.startswith("features.") for k in state):
        return state
    return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}


def images(n, size, seed, low=-1.0, high=1.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen)
    y = (x + 0.2 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)
    return x * (high - low) + low, y * (high - low) + low


# ---------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
@pytest.mark.parametrize("learned", [True, False])
def test_matches_paper_definition(net, learned, trunk_files):
    x, y = images(2, SIZE[net], seed=10)
    metric = LPIPS(net, lpips=learned, weights=trunk_files[net], input_range=(-1, 1))
    heads = load_lpips_heads(net) if learned else [torch.ones(c) for c in
                                                   LPIPS_NETS[net].channels]
    expected = reference_lpips(net, x, y, features_state(trunk_files[net]), heads)
    got = metric(x, y)
    assert got.shape == (2,)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() <= 1e-5
    assert expected.min() > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize("net", ["alex", "squeeze"])
def test_spatial_map_matches_paper_definition(net, trunk_files):
    x, y = images(2, SIZE[net], seed=11)
    metric = LPIPS(net, weights=trunk_files[net], input_range=(-1, 1), spatial=True)
    expected = reference_lpips(net, x, y, features_state(trunk_files[net]),
                               load_lpips_heads(net), spatial=True)
    got = metric(x, y)
    assert got.shape == (2, 1, SIZE[net], SIZE[net])
    assert (got - expected).abs().max() <= 1e-5


def test_shipped_heads_are_the_published_ones():
    folder = resources.files("perceptual_loss") / "data" / "lpips"
    assert "BSD" in (folder / "LICENSE").read_text() or "Redistribution" in \
        (folder / "LICENSE").read_text()
    for net, spec in LPIPS_NETS.items():
        heads = load_lpips_heads(net)
        assert [h.numel() for h in heads] == list(spec.channels)
        assert all(bool((h >= 0).all()) for h in heads)  # published heads are non-negative
    # A value from the published alex head file (lin0, channel 0), read by hand once.
    assert load_lpips_heads("alex")[0].max() == pytest.approx(0.4921, abs=1e-4)


def test_input_range_declared_not_guessed(trunk_files):
    x01, y01 = images(2, 48, seed=12, low=0.0, high=1.0)
    unit = LPIPS("squeeze", weights=trunk_files["squeeze"])  # default (0, 1)
    signed = LPIPS("squeeze", weights=trunk_files["squeeze"], input_range=(-1, 1))
    torch.testing.assert_close(unit(x01, y01), signed(2 * x01 - 1, 2 * y01 - 1),
                               atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"input_range=\(0, 1\)"):
        unit(2 * x01 - 1, y01)
    with pytest.raises(ValueError, match="input_range"):
        signed(x01 * 255, y01)


# ---------------------------------------------------------------------------------------------
# As a loss: gradients
# ---------------------------------------------------------------------------------------------

def test_identical_inputs_give_zero_and_finite_gradients(trunk_files):
    metric = LPIPS("alex", weights=trunk_files["alex"])
    x, _ = images(2, 64, seed=13, low=0.0, high=1.0)
    x = x.requires_grad_()
    value = metric(x, x.detach())
    assert torch.equal(value, torch.zeros(2))
    value.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("channels_last", [False, True])
def test_metric_path_equals_gradient_path_and_is_zero_on_equal_images(channels_last,
                                                                      trunk_files):
    # Without a gradient the unit difference is built in place (a separate code path).
    metric = LPIPS("vgg", weights=trunk_files["vgg"])
    metric.extractor.channels_last = channels_last  # the extractor's layout option
    x, y = images(2, 48, seed=21, low=0.0, high=1.0)
    y[:, :, :8] = 0.0  # zero feature vectors where both images are black
    x[:, :, :8] = 0.0
    with torch.no_grad():
        fast = metric(x, y)
        same = metric(x, x.clone())
    recorded = metric(x.clone().requires_grad_(), y)
    torch.testing.assert_close(fast, recorded.detach(), rtol=1e-6, atol=1e-8)
    assert torch.equal(same, torch.zeros(2))


def test_zero_feature_vectors_keep_gradients_finite(trunk_files):
    # A black image against a bright one: many feature vectors are all zero after a ReLU.
    metric = LPIPS("vgg", weights=trunk_files["vgg"], reduction="mean")
    x = torch.zeros(1, 3, 32, 32, requires_grad=True)
    y = torch.ones(1, 3, 32, 32, requires_grad=True)
    metric(x, y).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    assert y.grad.abs().sum() > 0


def test_gradcheck_float64(trunk_files):
    metric = LPIPS("squeeze", weights=trunk_files["squeeze"], reduction="sum").double()
    gen = torch.Generator().manual_seed(14)
    x = (0.25 + 0.5 * torch.rand(1, 3, 19, 19, generator=gen, dtype=torch.float64))
    y = (0.25 + 0.5 * torch.rand(1, 3, 19, 19, generator=gen, dtype=torch.float64))
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: metric(a, y), (x,), fast_mode=True,
                                    eps=1e-6, atol=1e-5, rtol=1e-3)


def test_trunk_is_frozen_and_stays_in_eval(trunk_files):
    metric = LPIPS("alex", weights=trunk_files["alex"])
    parent = torch.nn.Sequential(metric).train()
    assert not any(p.requires_grad for p in metric.parameters())
    assert not metric.extractor.body.training
    # Heads are constants: they move with .to() but are not saved in a parent's state dict.
    assert not any(k.startswith("head") for k in parent[0].state_dict())


# ---------------------------------------------------------------------------------------------
# Shapes, reductions, parts, channels
# ---------------------------------------------------------------------------------------------

def test_reductions_and_parts(trunk_files):
    x, y = images(3, 48, seed=15, low=0.0, high=1.0)
    per_image = LPIPS("squeeze", weights=trunk_files["squeeze"])(x, y)
    mean = LPIPS("squeeze", weights=trunk_files["squeeze"], reduction="mean")
    total = LPIPS("squeeze", weights=trunk_files["squeeze"], reduction="sum")
    torch.testing.assert_close(mean(x, y), per_image.mean())
    torch.testing.assert_close(total(x, y), per_image.sum())
    value, parts = mean(x, y, return_parts=True)
    assert list(parts) == [f"lpips/{name}" for name in LPIPS_NETS["squeeze"].layers]
    torch.testing.assert_close(sum(parts.values()), value)
    with pytest.raises(ValueError, match="reduction"):
        LPIPS("squeeze", weights=None, reduction="average")
    with pytest.raises(ValueError, match="spatial=True"):
        LPIPS("squeeze", weights=None, spatial=True, reduction="mean")


def test_grayscale_is_repeated_and_per_channel_averages(trunk_files):
    metric = LPIPS("squeeze", weights=trunk_files["squeeze"])
    x, y = images(2, 48, seed=16, low=0.0, high=1.0)
    gray_x, gray_y = x[:, :1], y[:, :1]
    torch.testing.assert_close(metric(gray_x, gray_y),
                               metric(gray_x.repeat(1, 3, 1, 1), gray_y.repeat(1, 3, 1, 1)))
    per_channel = LPIPS("squeeze", weights=trunk_files["squeeze"], channel_mode="per_channel")
    expected = torch.stack([metric(x[:, c:c + 1], y[:, c:c + 1]) for c in range(3)]).mean(0)
    torch.testing.assert_close(per_channel(x, y), expected)
    with pytest.raises(ValueError, match="channels"):
        metric(torch.rand(1, 4, 48, 48), torch.rand(1, 4, 48, 48))


def test_errors_name_the_problem(trunk_files, tmp_path):
    metric = LPIPS("alex", weights=trunk_files["alex"])
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        LPIPS("resnet", weights=None)
    with pytest.raises(ValueError, match=r"0.0.*Pass heads=<file> \(LPIPS\)"):
        LPIPS("alex", version="0.0", weights=None)
    with pytest.raises(ValueError, match=r"got \(64,\)\. .*a 1D signal has no height"):
        metric(torch.rand(64), torch.rand(64))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\); a batch of grayscale.*unsqueeze\(1\)"):
        metric(torch.rand(3, 64, 64), torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        metric(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        metric(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 65))
    with pytest.raises(TypeError, match="dtype"):
        metric(torch.randint(0, 255, (1, 3, 64, 64)), torch.randint(0, 255, (1, 3, 64, 64)))
    with pytest.raises(ValueError, match="NaN"):
        metric(torch.full((1, 3, 64, 64), float("nan")), torch.rand(1, 3, 64, 64))
    bad = tmp_path / "heads.pth"
    torch.save({"lin0.model.1.weight": torch.ones(1, 3, 1, 1)}, bad)
    with pytest.raises(ValueError, match="head 0 has 3 weights"):
        LPIPS("alex", weights=None, heads=bad)
    with pytest.raises(ValueError, match="lpips=True"):
        LPIPS("alex", lpips=False, weights=None, heads=bad)


def test_custom_heads_file(trunk_files, tmp_path):
    path = tmp_path / "twice.pth"
    torch.save({f"lin{i}.weight": 2 * h.view(1, -1, 1, 1)
                for i, h in enumerate(load_lpips_heads("squeeze"))}, path)
    x, y = images(1, 48, seed=17, low=0.0, high=1.0)
    shipped = LPIPS("squeeze", weights=trunk_files["squeeze"])
    doubled = LPIPS("squeeze", weights=trunk_files["squeeze"], heads=path)
    torch.testing.assert_close(doubled(x, y), 2 * shipped(x, y))


# ---------------------------------------------------------------------------------------------
# Functional form
# ---------------------------------------------------------------------------------------------

def test_functional_equals_module_and_reuses_one_instance(trunk_files):
    x, y = images(2, 48, seed=18, low=0.0, high=1.0)
    module = LPIPS("squeeze", weights=trunk_files["squeeze"])
    _cached_metric.cache_clear()
    first = lpips_distance(x, y, "squeeze", weights=trunk_files["squeeze"])
    second = lpips_distance(x, y, "squeeze", weights=str(trunk_files["squeeze"]),
                            reduction="mean")
    info = _cached_metric.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    torch.testing.assert_close(first, module(x, y))
    torch.testing.assert_close(second, module(x, y).mean())
    torch.testing.assert_close(lpips_distance(x, y, metric=module), module(x, y))
    with pytest.raises(ValueError, match="reduction='none'"):
        lpips_distance(x, y, metric=LPIPS("squeeze", weights=None, reduction="mean"))


# ---------------------------------------------------------------------------------------------
# Tiles
# ---------------------------------------------------------------------------------------------

def _test_image(height, width):
    """A real photograph when the shared data is there, else a smooth synthetic image."""
    path = SHARED_DATA / "set5" / "baby.png"
    if path.is_file():
        from PIL import Image

        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32)
        full = torch.from_numpy(array.copy()).permute(2, 0, 1) / 255
        return full[None, :, :height, :width].contiguous()
    gen = torch.Generator().manual_seed(19)
    coarse = torch.rand(1, 3, height // 8, width // 8, generator=gen)
    return F.interpolate(coarse, size=(height, width), mode="bicubic").clamp(0, 1)


@pytest.fixture(scope="module")
def image_pair():
    x = _test_image(272, 304)
    gen = torch.Generator().manual_seed(20)
    y = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    return x, y


def test_tiled_equals_whole_with_default_overlap(trunk_files, image_pair):
    x, y = image_pair
    whole = LPIPS("squeeze", weights=trunk_files["squeeze"])(x, y)
    tiled = LPIPS("squeeze", weights=trunk_files["squeeze"], tile_size=288)
    assert tiled.tile_overlap == tiled.receptive_margin == 128
    assert max(x.shape[-2:]) > tiled.tile_size  # it really tiles
    # Stated tolerance with the receptive-field overlap: 1e-5 relative (float round-off).
    torch.testing.assert_close(tiled(x, y), whole, rtol=1e-5, atol=0)


def test_tiled_maps_with_small_overlap_within_stated_tolerance(trunk_files, image_pair):
    x, y = image_pair
    whole = LPIPS("squeeze", weights=trunk_files["squeeze"], spatial=True)(x, y)
    tiled = LPIPS("squeeze", weights=trunk_files["squeeze"], spatial=True, tile_size=160,
                  tile_overlap=48)
    assert tiled.tile_overlap == 48
    maps = tiled(x, y)
    assert maps.shape == whole.shape == (1, 1, *x.shape[-2:])
    # Stated tolerance with a 48 px overlap (squeeze): 1e-3 relative on the image's value.
    assert float(maps.mean() / whole.mean()) == pytest.approx(1.0, abs=1e-3)
    assert not torch.equal(maps, whole)  # the small overlap does change the maps


def test_tiled_gradients_equal_whole(trunk_files, image_pair):
    x, y = image_pair
    x = x[..., :240, :256]
    y = y[..., :240, :256]
    whole = LPIPS("alex", weights=trunk_files["alex"], reduction="sum")
    tiled = LPIPS("alex", weights=trunk_files["alex"], reduction="sum", tile_size=208)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    value_whole = whole(a, y)
    value_tiled = tiled(b, y)
    value_whole.backward()
    value_tiled.backward()
    torch.testing.assert_close(value_tiled, value_whole, rtol=1e-5, atol=0)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7)


def test_tile_options_are_checked():
    with pytest.raises(ValueError, match="tile_size=100 is too small"):
        LPIPS("vgg", weights=None, tile_size=100)
    with pytest.raises(ValueError, match="tile_overlap"):
        LPIPS("vgg", weights=None, tile_size=512, tile_overlap=-1)
    metric = LPIPS("alex", weights=None, tile_size=512, tile_overlap=0)
    assert metric.tile_overlap == metric.min_tile_overlap == 16


# ---------------------------------------------------------------------------------------------
# Half precision
# ---------------------------------------------------------------------------------------------

def test_bfloat16_autocast_on_cpu(trunk_files):
    metric = LPIPS("alex", weights=trunk_files["alex"])
    x, y = images(2, 64, seed=21, low=0.0, high=1.0)
    reference = metric(x, y)
    x = x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = metric(x, y)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=5e-2, atol=1e-3)
    value.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_float16_features_do_not_overflow(trunk_files, tmp_path):
    # Scale the first convolution so that sums of squared features exceed float16's 65504.
    state = torch.load(trunk_files["squeeze"], weights_only=True)
    state["features.0.weight"] = state["features.0.weight"] * 300
    state["features.0.bias"] = state["features.0.bias"] * 300
    loud = tmp_path / "loud.pth"
    torch.save(state, loud)
    metric = LPIPS("squeeze", weights=loud)
    x, y = images(1, 48, seed=22, low=0.0, high=1.0)
    features = metric.extractor(x)["relu1"]
    assert features.pow(2).sum(1).max() > 65504
    with torch.autocast("cpu", dtype=torch.float16):
        value = metric(x, y)
    assert torch.isfinite(value).all()
    torch.testing.assert_close(value, metric(x, y), rtol=5e-2, atol=1e-3)


def test_torch_export_of_lpips_gives_the_eager_value():
    # The supported export path: torch.export (TorchScript is not supported). The range
    # check reads tensor values, so an exported program is built with check_values=False,
    # after one eager call (which settles the trunk's memory layout).
    metric = LPIPS("alex", weights=None, check_values=False)
    x, y = images(2, 64, seed=31, low=0.0, high=1.0)
    metric(x, y)
    program = torch.export.export(metric, (x, y))
    x2, y2 = images(2, 64, seed=32, low=0.0, high=1.0)
    torch.testing.assert_close(program.module()(x2, y2), metric(x2, y2), rtol=1e-5, atol=1e-7)
