"""``torch.compile`` on every module: values and gradients equal eager, shape changes survive.

Under the compiler the trunk runs as ordinary operations (``execution.runs_lean`` is false
while tracing), so the compiler sees one graph. Most tests compile with ``aot_eager`` (the
whole tracing and autograd stack of ``torch.compile`` without code generation, seconds on 2
cores); two tests run Inductor itself, the default backend, whose code generation once failed
on the lean trunk. Inputs are tiny so the suite's compile time stays bounded.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from perceptual_loss import (
    DISTS,
    LPIPS,
    MedicalPerceptualLoss,
    PerceptualLoss,
    VideoPerceptualLoss,
    VolumePerceptualLoss,
    gram_matrix,
    normalize_channels,
    perceptual_loss,
)
from perceptual_loss.backbones.pooling import L2Pool2d
from perceptual_loss.execution import runs_lean
from perceptual_loss.functional import ssim

TINY = {"backbone": "vgg11", "layers": ("relu1_1", "relu2_1", "relu3_1"), "weights": None}


@pytest.fixture(autouse=True)
def fresh_compiler():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _images(n: int = 2, size: int = 32, seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _value_and_grad(fn, prediction: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    x = prediction.clone().requires_grad_()
    value = fn(x, target)
    value.sum().backward()
    return value.detach(), x.grad


def assert_compiled_equals_eager(module, prediction, target, backend="aot_eager",
                                 rtol=1e-5, atol=1e-7, reference=None, **options):
    """Compile ``module``; its value and input gradient equal ``reference`` (default: itself,
    eager) run eagerly."""
    compiled = torch.compile(module, backend=backend, **options)
    value, grad = _value_and_grad(compiled, prediction, target)
    expected, expected_grad = _value_and_grad(reference or module, prediction, target)
    torch.testing.assert_close(value, expected, rtol=rtol, atol=atol)
    # The eager trunk is the lean one: its gradient sums in another order (float32 rounding).
    torch.testing.assert_close(grad, expected_grad, rtol=rtol * 10,
                               atol=atol + 1e-4 * float(expected_grad.abs().max()))
    return compiled


class SmallNet(nn.Module):
    """A network of one's own, tapped by hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(self.stem(x)))


# ---------------------------------------------------------------------- every module
@pytest.mark.parametrize("options", [
    pytest.param({}, id="content"),
    pytest.param({"style_layers": ("relu1_1", "relu2_1"), "pixel_mse": 1.0, "pixel_l1": 0.5,
                  "ssim_weight": 0.1, "tv_weight": 0.1}, id="style-pixel-ssim-tv"),
    pytest.param({"criterion": "charbonnier", "normalize_features": True,
                  "layer_weights": (1.0, 0.5, 2.0)}, id="charbonnier-normalised"),
    pytest.param({"criterion": "mse", "chunk_size": 1}, id="chunks"),
    pytest.param({"memory": "plain"}, id="plain"),
    pytest.param({"pooling": "l2", "reduction": "none"}, id="l2-pooling"),
])
def test_perceptual_loss_compiles_with_every_option(options):
    torch.manual_seed(0)
    assert_compiled_equals_eager(PerceptualLoss(**TINY, **options), _images(), _images(seed=1))


def test_the_default_loss_compiles_in_one_graph_without_value_checks():
    loss_fn = PerceptualLoss(weights=None, check_values=False)
    assert_compiled_equals_eager(loss_fn, _images(), _images(seed=1), fullgraph=True)


def test_tiles_compile():
    loss_fn = PerceptualLoss(**TINY, tile_size=32)
    assert loss_fn.tiler.needed(48, 48)
    assert_compiled_equals_eager(loss_fn, _images(1, 48), _images(1, 48, seed=1))


def test_a_module_backbone_compiles():
    torch.manual_seed(0)
    loss_fn = PerceptualLoss(SmallNet(), layers=("layer1", "layer2"), style_layers=("layer1",),
                             normalization="imagenet")
    assert_compiled_equals_eager(loss_fn, _images(), _images(seed=1))


def test_a_cached_target_and_style_compile():
    loss_fn = PerceptualLoss(**TINY, style_layers=("relu2_1",))
    loss_fn.set_target(_images(1, seed=2))
    loss_fn.set_style_target(_images(1, 48, seed=3))
    compiled = torch.compile(loss_fn, backend="aot_eager")
    x = _images()
    torch.testing.assert_close(compiled(x), loss_fn(x), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make_metric", [
    pytest.param(lambda: LPIPS("alex", weights=None), id="lpips-alex"),
    pytest.param(lambda: LPIPS("squeeze", weights=None, spatial=True), id="lpips-squeeze-map"),
    pytest.param(lambda: LPIPS("vgg", weights=None, lpips=False), id="lpips-vgg-unlearned"),
    pytest.param(lambda: DISTS(weights=None), id="dists"),
])
def test_metrics_compile_in_one_graph(make_metric):
    metric = make_metric()
    metric.check_values = metric.extractor.check_values = False
    assert_compiled_equals_eager(metric, _images(2, 64), _images(2, 64, seed=1),
                                 fullgraph=True)


def test_medical_losses_compile():
    torch.manual_seed(0)
    assert_compiled_equals_eager(MedicalPerceptualLoss("resnet50", weights=None),
                                 _images(2, 32), _images(2, 32, seed=1))
    volume = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(4))
    assert_compiled_equals_eager(MedicalPerceptualLoss("medicalnet_resnet10", weights=None),
                                 volume, volume.flip(-1))


def test_volume_and_video_losses_compile():
    """Compared with their plain twins (same seeded random weights): under the compiler the
    trunk runs plain."""
    volume = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(4))
    loss_3d = VolumePerceptualLoss(PerceptualLoss(**TINY, reduction="none"))
    plain_3d = VolumePerceptualLoss(PerceptualLoss(**TINY, reduction="none", memory="plain"))
    assert_compiled_equals_eager(loss_3d, volume, volume.flip(-1), reference=plain_3d)
    clip = torch.rand(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    video = VideoPerceptualLoss(PerceptualLoss(**TINY), temporal_weight=0.5)
    plain_video = VideoPerceptualLoss(PerceptualLoss(**TINY, memory="plain"), temporal_weight=0.5)
    assert_compiled_equals_eager(video, clip, clip.flip(1), reference=plain_video)


def test_the_functional_form_compiles():
    def step(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return perceptual_loss(prediction, target, **TINY, pixel_mse=1.0)

    assert_compiled_equals_eager(step, _images(), _images(seed=1))


# ---------------------------------------------------------------------- what real runs do
def test_batch_and_size_changes_and_train_eval_do_not_recompile_every_step():
    loss_fn = PerceptualLoss(**TINY, check_values=False)
    twin = PerceptualLoss(**TINY, check_values=False)  # the same seeded random weights
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(loss_fn, backend=counter)
    parent = nn.Sequential(loss_fn)
    for batch, size in [(4, 32), (4, 32), (3, 32), (2, 32), (4, 48), (4, 40), (4, 32)]:
        x = _images(batch, size).requires_grad_()
        value = compiled(x, _images(batch, size, seed=1))
        value.backward()
        torch.testing.assert_close(value, twin(x, _images(batch, size, seed=1)),
                                   rtol=1e-5, atol=1e-7)
    # the first shapes, then once for a dynamic batch and once for dynamic sizes
    assert counter.frame_count <= 3
    before = counter.frame_count
    for mode in (True, False, True, False):
        parent.train(mode)
        assert not loss_fn.extractor.body.training  # the trunk stays in eval mode
        compiled(_images(4, 32).requires_grad_(), _images(4, 32, seed=1)).backward()
    assert counter.frame_count <= before + 2


def test_eager_calls_between_compiled_steps_recompile_at_most_once():
    """Validation often runs the module eagerly; its one-time channels-last conversion may
    cost one recompilation, not one per step."""
    loss_fn = PerceptualLoss(**TINY, check_values=False)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(loss_fn, backend=counter)
    for _ in range(3):
        compiled(_images().requires_grad_(), _images(seed=1)).backward()
        with torch.no_grad():
            loss_fn(_images(), _images(seed=1))
    assert counter.frame_count <= 2


def test_the_lean_trunk_is_eager_only():
    assert runs_lean("lean") and not runs_lean("plain")
    seen = []

    @torch.compile(backend="aot_eager", fullgraph=True)
    def traced(x: torch.Tensor) -> torch.Tensor:
        seen.append(runs_lean("lean"))
        return x + 1

    traced(torch.zeros(2))
    assert seen == [False]


# ---------------------------------------------------------------------- Inductor itself
def test_inductor_compiles_the_default_training_step():
    """The default backend: the lean trunk once crashed Inductor's code generation."""
    torch.manual_seed(0)
    assert_compiled_equals_eager(PerceptualLoss(**TINY), _images(2, 24), _images(2, 24, seed=1),
                                 backend="inductor", rtol=1e-4, atol=1e-6)


def test_inductor_compiles_lpips():
    assert_compiled_equals_eager(LPIPS("alex", weights=None), _images(2, 32),
                                 _images(2, 32, seed=1), backend="inductor", rtol=1e-4,
                                 atol=1e-6)


# ---------------------------------------------------------------------- bf16 autocast
def test_bf16_autocast_keeps_grams_norms_pooling_and_ssim_in_float32():
    torch.manual_seed(0)
    features = torch.randn(2, 8, 16, 16).bfloat16()
    images = _images(2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert gram_matrix(features).dtype == torch.float32
        assert normalize_channels(features).dtype == torch.float32
        assert L2Pool2d()(features).dtype == torch.float32
        assert ssim(images.bfloat16(), images.bfloat16()).dtype == torch.float32


def test_bf16_autocast_compiled_is_close_to_float32():
    torch.manual_seed(0)
    loss_fn = PerceptualLoss(**TINY, style_layers=("relu2_1",), pixel_mse=1.0)
    prediction, target = _images(), _images(seed=1)
    expected = loss_fn(prediction, target)
    compiled = torch.compile(loss_fn, backend="aot_eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value, grad = _value_and_grad(compiled, prediction, target)
    assert value.dtype == torch.float32 and torch.isfinite(grad).all()
    torch.testing.assert_close(value, expected, rtol=3e-2, atol=1e-4)
