"""The device rule: what "auto" chooses, and that the defaults compute the plain values."""

from __future__ import annotations

import pytest
import torch

from perceptual_loss import DISTS, LPIPS, PerceptualLoss
from perceptual_loss.execution import choose_channels_last, choose_chunk_size
from perceptual_loss.frozen import copy_frozen_weights

pytestmark = pytest.mark.usefixtures("one_thread")

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_the_rule_as_documented():
    assert choose_channels_last("auto", CPU) is True
    assert choose_channels_last("auto", CUDA) is False  # fp32, no autocast
    assert choose_channels_last("auto", CPU, plain=True) is False
    assert choose_channels_last(False, CPU) is False and choose_channels_last(True, CUDA)
    assert choose_chunk_size("auto", CPU, needs_grad=True) == 1
    assert choose_chunk_size("auto", CPU, needs_grad=False) is None
    assert choose_chunk_size("auto", CUDA, needs_grad=True) is None
    assert choose_chunk_size("auto", CPU, needs_grad=True, plain=True) is None
    assert choose_chunk_size(3, CUDA, needs_grad=True) == 3


def test_cpu_chunks_hold_about_one_256_image_and_never_one_small_image():
    def rule(batch, side):
        return choose_chunk_size("auto", CPU, needs_grad=True, batch=batch, pixels=side * side)

    assert rule(4, 224) == 1 and rule(8, 256) == 1
    assert rule(4, 160) == 2 and rule(8, 160) == 2
    assert rule(1, 512) is None  # one sample is the whole batch
    assert rule(8, 128) == 4
    assert rule(16, 96) == 7
    assert rule(16, 64) == 8  # at most half the batch
    assert rule(3, 32) == 2  # small maps: at least two samples per convolution
    assert rule(2, 64) is None  # that is the whole batch
    assert choose_chunk_size("auto", CUDA, needs_grad=True, batch=16, pixels=64 * 64) is None
    assert choose_chunk_size(1, CPU, needs_grad=True, batch=16, pixels=64 * 64) == 1


def test_the_loss_uses_the_rule_for_its_input(monkeypatch):
    import perceptual_loss.losses as losses_module

    seen = []
    real = losses_module.run_chunks

    def spy(prediction, chunk, *args, **kwargs):
        seen.append((prediction.shape[0], chunk, kwargs.get("eager_backward")))
        return real(prediction, chunk, *args, **kwargs)

    monkeypatch.setattr(losses_module, "run_chunks", spy)
    loss = PerceptualLoss("vgg11", layers=("relu1_1", "relu2_1"), weights=None)
    x = torch.rand(6, 3, 32, 32, requires_grad=True)
    loss(x, torch.rand(6, 3, 32, 32)).backward()
    with torch.no_grad():
        loss(x, torch.rand(6, 3, 32, 32))
    assert seen == [(6, 3, True)]  # without a gradient: the whole batch, no chunks at all


@pytest.mark.parametrize("style", [False, True])
def test_defaults_stay_within_float32_rounding_of_the_plain_computation(style):
    options = {"backbone": "vgg11", "layers": ("relu1_1", "relu2_1", "relu3_2"),
               "weights": None, "style_layers": ("relu2_1",) if style else (),
               "reduction": "none"}
    torch.manual_seed(0)
    default = PerceptualLoss(**options)
    exact = PerceptualLoss(**options, memory="plain")
    copy_frozen_weights(default, exact)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 28, 28, generator=gen)
    y = torch.rand(3, 3, 28, 28, generator=gen)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    value, plain = default(xa, y), exact(xb, y)
    torch.testing.assert_close(value, plain, rtol=1e-5, atol=1e-7)
    value.sum().backward()
    plain.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5 * xb.grad.abs().max())
    # the default chose channels_last on this CPU; the exact loss stayed NCHW
    assert default.extractor._layout_channels_last and not exact.extractor._layout_channels_last


def test_the_metrics_follow_the_rule_and_keep_their_values():
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 3, 40, 40, generator=gen), torch.rand(2, 3, 40, 40, generator=gen)
    for build in (lambda **o: LPIPS("squeeze", weights=None, **o),
                  lambda **o: DISTS(weights=None, **o)):
        torch.manual_seed(0)
        metric = build()
        torch.manual_seed(0)
        exact = build(memory="plain") if isinstance(metric, DISTS) else build()
        if not isinstance(metric, DISTS):
            exact.extractor.channels_last = False
        with torch.no_grad():
            torch.testing.assert_close(metric(x, y), exact(x, y), rtol=1e-5, atol=1e-6)
        assert metric.extractor._layout_channels_last


def test_the_per_chunk_backward_is_exact_for_any_function_of_the_loss():
    torch.manual_seed(3)
    options = {"backbone": "vgg11", "layers": ("relu1_1", "relu2_1"), "weights": None,
               "style_layers": ("relu1_1",), "pixel_l1": 0.5, "reduction": "none"}
    chunked = PerceptualLoss(**options, chunk_size=1, channels_last=False)
    whole = PerceptualLoss(**options, chunk_size=None, channels_last=False)
    copy_frozen_weights(chunked, whole)
    gen = torch.Generator().manual_seed(4)
    x, y = torch.rand(3, 3, 24, 24, generator=gen), torch.rand(3, 3, 24, 24, generator=gen)
    weights = torch.tensor([0.5, 2.0, -1.0])
    grads = []
    for loss_fn in (chunked, whole):
        xi = x.clone().requires_grad_()
        value, parts = loss_fn(xi, y, return_parts=True)
        (value.pow(2) * weights).sum().backward()  # nonlinear in the per-sample values
        grads.append(xi.grad)
        assert set(parts) == {"content/relu1_1", "content/relu2_1", "style/relu1_1",
                              "pixel/l1"}
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_the_per_chunk_backward_runs_under_a_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    loss_fn = PerceptualLoss("vgg11", layers=("relu1_1",), weights=None, chunk_size=1)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        loss_fn(x, torch.rand(2, 3, 16, 16)).backward()
    assert counter.get_total_flops() > 0 and torch.isfinite(x.grad).all()
