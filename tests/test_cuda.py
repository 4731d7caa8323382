"""Correctness on CUDA (run by ``bash benchmarks/gpu.sh``; skipped without a GPU).

The lean trunk's custom autograd functions, the device rule (channels_last under fp16/bf16
autocast, whole batches), mixed precision with Gram matrices and statistics in float32, LPIPS
and DISTS: each checked on the GPU against float32 or the plain computation.
"""

from __future__ import annotations

import pytest
import torch

from perceptual_loss import DISTS, LPIPS, FeatureExtractor, PerceptualLoss, gram_matrix
from perceptual_loss.frozen import copy_frozen_weights

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def _pair(n=4, size=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.rand(n, 3, size, size, generator=gen), torch.rand(n, 3, size, size, generator=gen)
    return x.cuda(), y.cuda()


def _value_and_grad(loss_fn, x, y):
    x = x.clone().requires_grad_()
    value = loss_fn(x, y)
    value.sum().backward()
    return value.detach(), x.grad


@pytest.mark.parametrize("style", [False, True])
def test_lean_equals_plain_on_cuda(style):
    torch.manual_seed(0)
    options = {"layers": LAYERS, "weights": None, "reduction": "none",
               "style_layers": LAYERS if style else ()}
    lean = PerceptualLoss(**options, channels_last=False, chunk_size=None).cuda()
    plain = PerceptualLoss(**options, memory="plain").cuda()
    copy_frozen_weights(lean, plain)
    x, y = _pair()
    lean_value, lean_grad = _value_and_grad(lean, x, y)
    plain_value, plain_grad = _value_and_grad(plain, x, y)
    torch.testing.assert_close(lean_value, plain_value, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-4,
                               atol=1e-5 * plain_grad.abs().max())


def test_defaults_on_cuda_equal_the_exact_choice():
    torch.manual_seed(0)
    default = PerceptualLoss(layers=LAYERS, weights=None).cuda()
    exact = PerceptualLoss(layers=LAYERS, weights=None, memory="plain").cuda()
    copy_frozen_weights(default, exact)
    x, y = _pair()
    value, grad = _value_and_grad(default, x, y)
    plain_value, plain_grad = _value_and_grad(exact, x, y)
    torch.testing.assert_close(value, plain_value, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-3, atol=1e-4 * plain_grad.abs().max())
    assert not default.extractor._layout_channels_last  # fp32 on CUDA: NCHW


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_is_finite_close_to_fp32_and_channels_last(dtype):
    torch.manual_seed(0)
    loss_fn = PerceptualLoss(layers=LAYERS, weights=None, style_layers=("relu3_3",),
                             reduction="none").cuda()
    x, y = _pair()
    exact, _ = _value_and_grad(loss_fn, x, y)
    with torch.autocast("cuda", dtype=dtype):
        value, grad = _value_and_grad(loss_fn, x, y)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(value.float(), exact, rtol=0.05, atol=1e-3)
    assert loss_fn.extractor._layout_channels_last  # the rule for half precision on CUDA


def test_gram_is_float32_under_autocast_and_does_not_overflow():
    features = torch.full((1, 64, 64, 64), 300.0, device="cuda", dtype=torch.float16)
    with torch.autocast("cuda", dtype=torch.float16):
        gram = gram_matrix(features)
    assert gram.dtype == torch.float32 and torch.isfinite(gram).all()
    torch.testing.assert_close(gram[0, 0, 0], torch.tensor(300.0**2 / 64, device="cuda"))


def test_extractor_channels_last_matches_nchw():
    torch.manual_seed(0)
    nchw = FeatureExtractor(layers=LAYERS, weights=None, channels_last=False).cuda()
    nhwc = FeatureExtractor(layers=LAYERS, weights=None, channels_last=True).cuda()
    copy_frozen_weights(nchw, nhwc)
    x, _ = _pair(n=2)
    with torch.no_grad():
        for name, (a, b) in zip(LAYERS, zip(nchw(x).values(), nhwc(x).values(), strict=True),
                                strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("build", [lambda: LPIPS("vgg", weights=None),
                                   lambda: DISTS(weights=None)], ids=["lpips", "dists"])
def test_metrics_on_cuda_equal_cpu_and_have_finite_gradients(build):
    torch.manual_seed(0)
    metric = build()
    x, y = _pair(n=2, size=64)
    with torch.no_grad():
        cpu = metric(x.cpu(), y.cpu())
    metric = metric.cuda()
    value, grad = _value_and_grad(metric, x, y)
    torch.testing.assert_close(value.cpu(), cpu, rtol=1e-4, atol=1e-5)
    assert torch.isfinite(grad).all()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = metric(x, y)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
