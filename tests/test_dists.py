"""DISTS against the DISTS_pytorch package and against the paper, and as a training loss."""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perceptual_loss import DISTS
from perceptual_loss.backbones import get_backbone
from perceptual_loss.backbones.pooling import L2Pool2d
from perceptual_loss.metrics.dists import DISTS_CHANNELS, load_dists_weights
from perceptual_loss.weights import WeightsIntegrityError

pytestmark = pytest.mark.usefixtures("one_thread")


def _trunk_file(tmp_path, seed=0):
    torch.manual_seed(seed)
    path = tmp_path / "vgg16.pth"
    torch.save(get_backbone("vgg16").build_features().state_dict(), path)
    return path


def _pair(n=2, size=40, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen)
    return x, (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)


# ------------------------------------------------------------------ the published package
@pytest.fixture()
def dists_pytorch(monkeypatch):
    """DISTS_pytorch importable without torchvision: its ``models.vgg16`` is ours."""
    if importlib.util.find_spec("DISTS_pytorch") is None:
        pytest.skip("DISTS_pytorch is not installed (pip install --no-deps DISTS_pytorch)")
    state = {}

    def vgg16(pretrained=False, **_):
        model = get_backbone("vgg16").build()
        model.features.load_state_dict(state["features"])
        return model

    stub = types.ModuleType("torchvision")
    stub.models = types.SimpleNamespace(vgg16=vgg16)
    stub.transforms = types.SimpleNamespace()
    monkeypatch.setitem(sys.modules, "torchvision", stub)
    monkeypatch.delitem(sys.modules, "DISTS_pytorch", raising=False)
    monkeypatch.delitem(sys.modules, "DISTS_pytorch.DISTS_pt", raising=False)
    module = importlib.import_module("DISTS_pytorch.DISTS_pt")
    return module, state


def test_equals_dists_pytorch_in_values_and_gradients(dists_pytorch, tmp_path):
    module, state = dists_pytorch
    path = _trunk_file(tmp_path)
    state["features"] = torch.load(path, weights_only=True)
    reference = module.DISTS()
    ours = DISTS(weights=path)
    x, y = _pair()
    expected = reference(x, y, require_grad=True, batch_average=False)
    torch.testing.assert_close(ours(x, y), expected, rtol=1e-5, atol=1e-7)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    reference(xa, y, require_grad=True, batch_average=False).sum().backward()
    ours(xb, y).sum().backward()
    scale = xa.grad.abs().max()
    assert float((xa.grad - xb.grad).abs().max() / scale) < 1e-4


# ------------------------------------------------------------------ the paper, written out
def _paper_dists(x, y, features, alpha, beta):
    """DISTS from the paper's definition: plain VGG16 modules, L2 pooling written out."""
    def hanning_l2(f):
        window = torch.tensor(np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]), dtype=f.dtype)
        window = (window / window.sum()).expand(f.shape[1], 1, 3, 3)
        return torch.sqrt(F.conv2d(f * f, window, stride=2, padding=1, groups=f.shape[1]) + 1e-12)

    def stages(image):
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        h, out = (image - mean) / std, [image]
        for index, module in enumerate(features[:30]):
            h = hanning_l2(h) if isinstance(module, torch.nn.MaxPool2d) else F.relu(h) if \
                isinstance(module, torch.nn.ReLU) else module(h)
            if index in (3, 8, 15, 22, 29):
                out.append(h)
        return out

    total = alpha.sum() + beta.sum()
    a, b = (alpha / total).split(DISTS_CHANNELS), (beta / total).split(DISTS_CHANNELS)
    score = 0
    for k, (fx, fy) in enumerate(zip(stages(x), stages(y), strict=True)):
        mx, my = fx.mean((2, 3)), fy.mean((2, 3))
        vx, vy = fx.var((2, 3), unbiased=False), fy.var((2, 3), unbiased=False)
        cov = ((fx - mx[..., None, None]) * (fy - my[..., None, None])).mean((2, 3))
        s1 = (2 * mx * my + 1e-6) / (mx**2 + my**2 + 1e-6)
        s2 = (2 * cov + 1e-6) / (vx + vy + 1e-6)
        score = score + (a[k] * s1).sum(1) + (b[k] * s2).sum(1)
    return 1 - score


def test_equals_the_papers_definition_with_the_published_alpha_beta(tmp_path):
    path = _trunk_file(tmp_path, seed=3)
    features = get_backbone("vgg16").build_features()
    features.load_state_dict(torch.load(path, weights_only=True))
    alpha, beta = load_dists_weights()
    assert alpha.shape == beta.shape == (1475,)
    assert abs(float(alpha.sum()) - 0.87605) < 1e-4 and abs(float(beta.sum()) - 0.12395) < 1e-4
    x, y = _pair(seed=4)
    with torch.no_grad():
        expected = _paper_dists(x.double(), y.double(), features.double(), alpha.double(),
                                beta.double())
    torch.testing.assert_close(DISTS(weights=path)(x, y).double(), expected, rtol=1e-5,
                               atol=1e-6)


# ------------------------------------------------------------------ as a metric and a loss
def test_metric_shapes_reductions_and_identity():
    metric = DISTS(weights=None)
    x, y = _pair(n=3, size=24)
    assert metric(x, y).shape == (3,)
    torch.testing.assert_close(metric(x, x), torch.zeros(3), atol=1e-6, rtol=0)
    assert DISTS(weights=None, reduction="mean")(x, y).shape == ()
    gray = x[:, :1]
    torch.testing.assert_close(metric(gray, y[:, :1]), metric(gray.expand(-1, 3, -1, -1),
                                                               y[:, :1].expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="reduction must be"):
        DISTS(weights=None, reduction="max")
    with pytest.raises(ValueError, match=r"has values in \[.*\] but input_range=\(0, 1\)"):
        metric(x * 255, y)


@pytest.mark.parametrize("kind", ["identical", "constant", "zeros"])
def test_gradients_are_finite_everywhere(kind):
    metric = DISTS(weights=None, reduction="mean")
    x, y = _pair(n=1, size=20, seed=5)
    if kind == "identical":
        y = x.clone()
    elif kind == "constant":
        x, y = torch.full_like(x, 0.5), torch.full_like(y, 0.5)
    else:
        x, y = torch.zeros_like(x), torch.zeros_like(y)
    x.requires_grad_()
    metric(x, y).backward()
    assert torch.isfinite(x.grad).all()


def test_bf16_autocast_keeps_statistics_in_float32():
    metric = DISTS(weights=None)
    x, y = _pair(n=1, size=24, seed=6)
    exact = metric(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = metric(x, y)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    torch.testing.assert_close(low, exact, atol=0.02, rtol=0.05)


def test_l2_pooling_is_the_hanning_window():
    pool = L2Pool2d()
    x = torch.rand(1, 2, 5, 7)
    out = pool(x)
    assert out.shape == (1, 2, 3, 4)
    padded = F.pad(x * x, (1, 1, 1, 1))
    weights = torch.tensor([[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125],
                            [0.0625, 0.125, 0.0625]])
    expected = ((padded[0, 0, 0:3, 0:3] * weights).sum() + 1e-12).sqrt()
    torch.testing.assert_close(out[0, 0, 0, 0], expected)


def test_bad_alpha_beta_files_are_refused(tmp_path):
    path = tmp_path / "ab.pt"
    torch.save({"alpha": -torch.ones(1, 1475, 1, 1), "beta": torch.ones(1, 1475, 1, 1)}, path)
    with pytest.raises(WeightsIntegrityError, match=r"ab.pt: alpha and beta must be >= 0"):
        DISTS(weights=None, alpha_beta=path)
    torch.save({"alpha": torch.ones(3)}, path)
    with pytest.raises(WeightsIntegrityError, match=r"expected \{'alpha', 'beta'\}"):
        load_dists_weights(path)


# ------------------------------------------------------------------ the official protocol
def _official_transforms():
    """torchvision's PIL path of ``resize(image, 256)`` and ``ToTensor``, for the stub."""
    from PIL import Image

    def resize(image, size):
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(size * long / short)
        new = (size, new_long) if width <= height else (new_long, size)
        return image.resize(new, Image.BILINEAR)

    def to_tensor():
        return lambda image: torch.from_numpy(
            np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()

    return types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize),
                                 ToTensor=to_tensor)


def _photo_like(height, width, seed):
    """A smooth 8-bit RGB image (natural images are smooth; noise would test rounding)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 16, width // 16, generator=gen)
    image = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    array = (image.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def test_the_default_is_the_official_protocol_on_images_larger_than_256(dists_pytorch,
                                                                         tmp_path):
    module, state = dists_pytorch
    sys.modules["torchvision"].transforms = _official_transforms()
    module.transforms = sys.modules["torchvision"].transforms
    path = _trunk_file(tmp_path, seed=7)
    state["features"] = torch.load(path, weights_only=True)
    reference = module.DISTS()
    ours = DISTS(weights=path)
    ref_image, dist_image = _photo_like(288, 320, 8), _photo_like(288, 320, 9)
    official = reference(module.prepare_image(ref_image, resize=True),
                         module.prepare_image(dist_image, resize=True))
    assert module.prepare_image(ref_image, resize=True).shape == (1, 3, 256, 284)
    full = [module.prepare_image(image) for image in (ref_image, dist_image)]
    value = ours(*full)
    # The official script resizes 8-bit images: the difference is that rounding.
    torch.testing.assert_close(value, official.detach().reshape(1), rtol=1e-4, atol=1e-6)
    full_resolution = DISTS(weights=path, short_side=None)(*full)
    torch.testing.assert_close(full_resolution, reference(*full).detach().reshape(1), rtol=1e-5,
                               atol=1e-7)
    gap = float((value - official.detach()).abs())
    assert float((full_resolution - value).abs()) > 10 * gap


def test_small_images_are_not_resized_and_the_resize_keeps_gradients():
    metric = DISTS(weights=None)
    x, y = _pair(n=1, size=40)
    torch.testing.assert_close(metric(x, y), DISTS(weights=None, short_side=None)(x, y))
    assert metric.resize(torch.rand(1, 3, 300, 600)).shape == (1, 3, 256, 512)
    assert metric.resize(torch.rand(1, 3, 700, 257)).shape == (1, 3, 697, 256)
    big = torch.rand(1, 3, 20, 48, requires_grad=True)
    small = DISTS(weights=None, short_side=16, reduction="mean")
    small(big, torch.rand(1, 3, 20, 48)).backward()
    assert big.grad is not None and torch.isfinite(big.grad).all() and big.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"short_side must be a positive int .* or None"):
        DISTS(weights=None, short_side=0)


def test_torch_export_of_dists_gives_the_eager_value():
    # torch.export with check_values=False after one eager call (see docs/metrics.md).
    metric = DISTS(weights=None, check_values=False)
    x, y = _pair(n=2, size=32, seed=10)
    metric(x, y)
    program = torch.export.export(metric, (x, y))
    x2, y2 = _pair(n=2, size=32, seed=11)
    torch.testing.assert_close(program.module()(x2, y2), metric(x2, y2), rtol=1e-5, atol=1e-7)
