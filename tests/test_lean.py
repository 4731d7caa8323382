"""Lean autograd for the frozen trunk: same values, same gradients, far less saved memory."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from perceptual_loss._bitmask import pack_mask, unpack_mask
from perceptual_loss._lean import (
    _pool_index_dtype,
    build_plan,
    lean_forward,
)
from perceptual_loss.backbones.vgg import make_vgg_features, vgg_layer_names


def plain_forward(modules: nn.Sequential, x: torch.Tensor,
                  keep: set[int]) -> dict[int, torch.Tensor]:
    """Reference: the modules one after another, ReLU out of place after a kept output."""
    out = {}
    for index in range(max(keep) + 1):
        module = modules[index]
        if isinstance(module, nn.ReLU) and index - 1 in keep:
            x = torch.relu(x)
        else:
            x = module(x)
        if index in keep:
            out[index] = x
    return out


@functools.cache
def _built(depth: str, batch_norm: bool) -> nn.Sequential:
    torch.manual_seed(0)
    return make_vgg_features(depth, batch_norm)


def frozen_vgg(depth: str = "vgg11", batch_norm: bool = False) -> nn.Sequential:
    """A fresh copy of a randomly initialised VGG trunk, frozen and in eval mode."""
    features = copy.deepcopy(_built(depth, batch_norm))
    if batch_norm:  # non-trivial running statistics and affine parameters
        for module in features:
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.normal_()
                module.bias.data.normal_()
    return features.eval().requires_grad_(False)


def indices(depth: str, batch_norm: bool, layers: tuple[str, ...]) -> list[int]:
    names = vgg_layer_names(depth, batch_norm)
    return [names.index(layer) for layer in layers]


def compare(features: nn.Sequential, keep: list[int], x: torch.Tensor, *, bits: bool = False,
            autocast: bool = False, identical_target: bool = False):
    """Values and input gradients of the lean and the plain path on the same loss."""
    plan = build_plan(features, keep, bits=bits)
    results = []
    for lean in (False, True):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
            feats = lean_forward(features, xi, plan) if lean else plain_forward(
                features, xi, set(keep))
            if identical_target:
                with torch.no_grad():
                    target = plain_forward(features, x.clone(), set(keep))
            else:
                g = torch.Generator().manual_seed(1)
                target = {k: torch.randn(v.shape, generator=g).to(v.dtype)
                          for k, v in feats.items()}
            loss = sum((feats[k].float() - target[k].float()).abs().mean() for k in keep)
        loss.backward()
        results.append((feats, xi.grad))
    (plain_feats, plain_grad), (lean_feats, lean_grad) = results
    return plain_feats, plain_grad, lean_feats, lean_grad


LAYER_SETS = [
    ("relu1_1", "relu2_1", "relu3_2", "relu4_2"),  # the usual relu taps
    ("conv1_1", "relu1_1", "conv3_2"),  # pre-activation taps, also with the relu after
    ("pool2",),  # a max-pool tap
    ("conv4_2",),  # one deep pre-activation tap
]


@pytest.mark.parametrize("layers", LAYER_SETS, ids=lambda ls: "+".join(ls))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_bit_identical_and_gradients_equal(layers, dtype):
    features = frozen_vgg().to(dtype)
    x = torch.rand(2, 3, 20, 18, generator=torch.Generator().manual_seed(0), dtype=dtype)
    keep = indices("vgg11", False, layers)
    plain_feats, plain_grad, lean_feats, lean_grad = compare(features, keep, x)
    for k in keep:
        assert torch.equal(plain_feats[k], lean_feats[k]), k
    # Same ATen backward kernels: equal to rounding (in practice exactly equal).
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(lean_grad, plain_grad, rtol=tol, atol=tol * plain_grad.abs().max())
    assert lean_grad.abs().sum() > 0


@pytest.mark.parametrize("layers", [("relu1_1", "relu3_2"), ("conv2_1", "bn2_1", "relu4_2"),
                                    ("bn3_1",), ("conv3_1",)],
                         ids=lambda ls: "+".join(ls))
def test_batch_norm_variant(layers):
    features = frozen_vgg("vgg11", batch_norm=True).double()
    x = torch.rand(2, 3, 18, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    keep = indices("vgg11", True, layers)
    plain_feats, plain_grad, lean_feats, lean_grad = compare(features, keep, x)
    for k in keep:
        assert torch.equal(plain_feats[k], lean_feats[k])
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-12, atol=1e-14)


def test_batch_norm_in_train_mode_runs_plain():
    features = frozen_vgg("vgg11", batch_norm=True)
    features[1].train()  # a trainable-statistics batch norm is not an eval-mode affine map
    plan = build_plan(features, [2])
    assert plan.describe()[0] == "fused 0..0 (conv)"
    assert plan.describe()[1] == "plain 1..1"


def test_channels_last():
    features = frozen_vgg().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 18, 20, generator=torch.Generator().manual_seed(3))
    x = x.contiguous(memory_format=torch.channels_last)
    keep = indices("vgg11", False, ("conv2_1", "relu3_2", "pool3"))
    plain_feats, plain_grad, lean_feats, lean_grad = compare(features, keep, x)
    for k in keep:
        assert torch.equal(plain_feats[k], lean_feats[k])
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-6, atol=1e-6 * plain_grad.abs().max())


def test_bfloat16_autocast():
    features = frozen_vgg()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    keep = indices("vgg11", False, ("relu1_1", "conv2_1", "relu3_2"))
    plain_feats, plain_grad, lean_feats, lean_grad = compare(features, keep, x, autocast=True)
    for k in keep:
        assert lean_feats[k].dtype == torch.bfloat16
        assert torch.equal(plain_feats[k], lean_feats[k])
    assert lean_grad.dtype == torch.float32
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-2, atol=1e-2 * plain_grad.abs().max())


def test_packed_bit_masks_give_the_same_gradient():
    features = frozen_vgg()
    x = torch.rand(1, 3, 33, 35, generator=torch.Generator().manual_seed(5))
    keep = indices("vgg11", False, ("relu1_1", "relu3_2"))
    _, plain_grad, _, lean_grad = compare(features, keep, x, bits=True)
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-6, atol=1e-6 * plain_grad.abs().max())


def test_identical_inputs_and_ties():
    """A constant image makes every max-pool window a tie and many ReLU inputs exactly 0."""
    features = frozen_vgg()
    for module in features:
        if isinstance(module, nn.Conv2d):
            module.bias.data.zero_()
    keep = indices("vgg11", False, ("relu1_1", "pool1", "relu2_1", "pool2"))
    x = torch.full((1, 3, 16, 16), 0.5)
    plain_feats, plain_grad, lean_feats, lean_grad = compare(features, keep, x)
    for k in keep:
        assert torch.equal(plain_feats[k], lean_feats[k])
    assert torch.equal(lean_grad, plain_grad)
    # Prediction equal to the target: the L1 loss is 0 and so is every gradient.
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    _, plain_grad, _, lean_grad = compare(features, keep, x, identical_target=True)
    assert torch.equal(lean_grad, plain_grad)
    assert torch.count_nonzero(lean_grad) == 0


def test_overlapping_max_pool_windows():
    """AlexNet/SqueezeNet pool 3x3 with stride 2: windows overlap and gradients add up."""
    torch.manual_seed(7)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
                          nn.MaxPool2d(3, 2), nn.Conv2d(8, 4, 3), nn.ReLU(inplace=True))
    trunk.eval().requires_grad_(False).double()
    x = torch.rand(2, 3, 15, 17, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    plain_feats, plain_grad, lean_feats, lean_grad = compare(trunk, [2, 4], x)
    assert build_plan(trunk, [2, 4]).describe() == [
        "fused 0..1 (conv, relu)", "pool 2..2", "fused 3..4 (conv, relu)"]
    for k in (2, 4):
        assert torch.equal(plain_feats[k], lean_feats[k])
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("pool", [
    nn.MaxPool2d(3, 2, padding=1),                  # ResNet's stem
    nn.MaxPool2d(2, ceil_mode=True),                # odd sizes keep their last row/column
    nn.MaxPool2d(3, stride=1, padding=1, dilation=2),
    nn.MaxPool2d((2, 3), stride=(3, 4)),            # windows that skip elements
], ids=["padded", "ceil_mode", "dilated", "strided_past_window"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_any_max_pool_runs_lean_with_plain_gradients(pool, channels_last):
    """Every max-pool geometry saves int32 indices only and gives plain autograd's gradient."""
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), pool,
                          nn.Conv2d(4, 2, 1), nn.ReLU(inplace=True))
    trunk.eval().requires_grad_(False).double()
    x = torch.rand(2, 3, 13, 11, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert build_plan(trunk, [2, 4]).describe()[1] == "pool 2..2"
    plain_feats, plain_grad, lean_feats, lean_grad = compare(trunk, [2, 4], x)
    for k in (2, 4):
        assert torch.equal(plain_feats[k], lean_feats[k])
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-12, atol=1e-14)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lean_forward(trunk, x.detach().requires_grad_(), build_plan(trunk, [2]))
    assert [t.dtype for t in saved if t.dim() == 4 and not t.is_floating_point()
            and t.shape[-2:] == plain_feats[2].shape[-2:]] == [torch.int32]


def test_relu_passes_the_gradient_where_its_output_is_nan_like_plain_autograd():
    trunk = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True))
    trunk.eval().requires_grad_(False).double()
    x = torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(18), dtype=torch.float64)
    x[0, 0, 3, 3] = float("nan")  # NaN outputs around it, finite input gradients far from it
    grads = []
    for lean in (False, True):
        xi = x.clone().requires_grad_()
        out = (lean_forward(trunk, xi, build_plan(trunk, [1])) if lean
               else plain_forward(trunk, xi, {1}))
        out[1].sum().backward()
        grads.append(xi.grad)
    assert grads[0].isfinite().any()
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-14, equal_nan=True)


def test_pool_indices_widen_to_int64_past_int32():
    assert _pool_index_dtype(2**31 - 1) == torch.int32
    assert _pool_index_dtype(2**31) == torch.int64


def test_gradcheck_float64():
    """Numerical gradients of a tiny trunk with every lean op (conv, bn, relu, pool, taps)."""
    torch.manual_seed(16)
    trunk = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=True),
                          nn.MaxPool2d(2), nn.Conv2d(3, 2, 3, padding=1), nn.BatchNorm2d(2),
                          nn.ReLU(inplace=True))
    trunk[4].running_var.uniform_(0.5, 2.0)
    trunk.eval().requires_grad_(False).double()
    keep = [0, 2, 5]
    plan = build_plan(trunk, keep)
    assert plan.describe() == ["fused 0..1 (conv, relu, keep_pre)", "pool 2..2",
                               "fused 3..5 (conv, bn, relu)"]
    x = torch.rand(1, 2, 6, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    x.requires_grad_()

    def f(inp: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = lean_forward(trunk, inp, plan)
        return tuple(out[k] for k in keep)

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6)


def _saved_bytes(fn) -> tuple[int, int]:
    """Bytes autograd saves while ``fn`` runs: (all tensors, floating-point activations)."""
    total = floating = 0
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total, floating
        key = t.untyped_storage().data_ptr()
        if key not in seen and not isinstance(t, nn.Parameter) and t.dim() == 4 and t.shape[0] > 0:
            seen.add(key)
            size = t.untyped_storage().nbytes()
            total += size
            if t.is_floating_point() and t.shape[1] > 0 and t.shape[0] == 2:
                floating += size
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total, floating


def test_lean_path_saves_masks_not_activations():
    features = frozen_vgg("vgg16")
    keep = indices("vgg16", False, ("relu1_2", "relu2_2", "relu3_3", "relu4_3"))
    plan = build_plan(features, keep)
    bits_plan = build_plan(features, keep, bits=True)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(10)).requires_grad_()
    plain_total, plain_float = _saved_bytes(lambda: plain_forward(features, x, set(keep)))
    lean_total, lean_float = _saved_bytes(lambda: lean_forward(features, x, plan))
    bits_total, _ = _saved_bytes(lambda: lean_forward(features, x, bits_plan))
    assert plain_float > 0
    assert lean_float == 0  # no float activation is kept, only masks and window positions
    # bool masks: a quarter of float32 plus uint8 pool positions; bits: far less again.
    assert lean_total < 0.3 * plain_total
    assert bits_total < 0.1 * plain_total


def test_no_grad_runs_plain_and_keeps_pre_activation_taps():
    features = frozen_vgg()
    keep = indices("vgg11", False, ("conv1_1", "relu1_1"))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        out = lean_forward(features, x, build_plan(features, keep))
    conv = features[0](x)
    assert torch.equal(out[keep[0]], conv)  # not overwritten by the in-place ReLU after it
    assert torch.equal(out[keep[1]], torch.relu(conv))


def test_trainable_modules_keep_their_weight_gradients():
    features = frozen_vgg()
    features[0].requires_grad_(True)
    keep = indices("vgg11", False, ("relu2_1",))
    plan = build_plan(features, keep)
    assert plan.describe()[0] == "plain 0..0"
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(12))
    lean_forward(features, x, plan)[keep[0]].sum().backward()
    lean_weight_grad = features[0].weight.grad.clone()
    features[0].weight.grad = None
    plain_forward(features, x, set(keep))[keep[0]].sum().backward()
    torch.testing.assert_close(lean_weight_grad, features[0].weight.grad)


def test_unfreezing_after_planning_falls_back_to_plain():
    features = frozen_vgg()
    keep = indices("vgg11", False, ("relu2_1",))
    plan = build_plan(features, keep)
    features[3].requires_grad_(True)  # conv2_1 made trainable after the plan was built
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(13))
    lean_forward(features, x, plan)[keep[0]].sum().backward()
    assert features[3].weight.grad is not None and features[3].weight.grad.abs().sum() > 0


def test_double_backward_is_refused_clearly():
    features = frozen_vgg()
    keep = indices("vgg11", False, ("relu1_1",))
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(14)).requires_grad_()
    out = lean_forward(features, x, build_plan(features, keep))[keep[0]]
    with pytest.raises(RuntimeError, match=r"double backward.*memory=\"plain\""):
        torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)


def test_plan_fuses_conv_bn_relu():
    features = frozen_vgg("vgg11", batch_norm=True)
    plan = build_plan(features, indices("vgg11", True, ("relu1_1", "pool1", "conv2_1")))
    assert plan.describe() == ["fused 0..2 (conv, bn, relu)", "pool 3..3", "fused 4..4 (conv)"]
    plan = build_plan(features, indices("vgg11", True, ("bn1_1",)))
    assert plan.describe() == ["fused 0..1 (conv, bn)"]
    plan = build_plan(frozen_vgg(), indices("vgg11", False, ("conv1_1", "relu2_1")))
    assert plan.describe() == ["fused 0..1 (conv, relu, keep_pre)", "pool 2..2",
                               "fused 3..4 (conv, relu)"]


def test_plan_errors():
    features = frozen_vgg()
    with pytest.raises(ValueError, match="at least one module index"):
        build_plan(features, [])
    with pytest.raises(ValueError, match=r"outside the \d+ modules"):
        build_plan(features, [len(features)])


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 8, 4, 4), (1, 3, 5, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pack_unpack_roundtrip(shape, channels_last):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(15)) > 0.5
    if channels_last and mask.dim() == 4:
        mask = mask.contiguous(memory_format=torch.channels_last)
    packed, layout_shape, permuted = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    restored = unpack_mask(packed, layout_shape, permuted)
    assert torch.equal(restored, mask)
    assert restored.stride() == mask.stride()


def test_pack_mask_rejects_non_bool():
    with pytest.raises(TypeError, match="torch.bool"):
        pack_mask(torch.zeros(8))


# ------------------------------------------------------------------ through FeatureExtractor


def _loss_and_grad(memory: str, channels_last: bool, backbone: str = "vgg16",
                   style: bool = True, criterion: str = "l1", convolution: str = "direct"
                   ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    from perceptual_loss import FeatureExtractor, PerceptualLoss

    content = ("conv1_2", "relu2_2", "relu3_3")
    style_layers = ("relu1_2", "relu2_2") if style else ()
    torch.manual_seed(0)
    fx = FeatureExtractor(backbone, layers=content + style_layers, weights=None, memory=memory,
                          channels_last=channels_last, convolution=convolution)
    # The whole batch at once: this compares the trunks, not the device rule's chunking.
    loss_fn = PerceptualLoss(extractor=fx, layers=content, style_layers=style_layers,
                             criterion=criterion, reduction="none", chunk_size=None)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 20, 24, generator=g).requires_grad_()
    y = torch.rand(2, 3, 20, 24, generator=g)
    value, parts = loss_fn(x, y, return_parts=True)
    value.sum().backward()
    return value.detach(), x.grad, parts


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backbone", ["vgg16", "vgg16_bn"])
def test_extractor_lean_equals_plain(backbone, channels_last):
    # convolution="direct": the same kernels as the plain path, so bit-identical values;
    # the default's Winograd layers are compared in tests/test_winograd.py.
    plain_value, plain_grad, plain_parts = _loss_and_grad("plain", channels_last, backbone)
    lean_value, lean_grad, lean_parts = _loss_and_grad("lean", channels_last, backbone)
    assert torch.equal(lean_value, plain_value)
    assert plain_parts.keys() == lean_parts.keys()
    for name in plain_parts:
        assert torch.equal(lean_parts[name], plain_parts[name]), name
    torch.testing.assert_close(lean_grad, plain_grad, rtol=1e-6,
                               atol=1e-6 * plain_grad.abs().max())


def test_extractor_lean_is_the_default_and_metric_mode_is_unchanged():
    from perceptual_loss import FeatureExtractor

    torch.manual_seed(0)
    fx = FeatureExtractor("vgg11", layers=("conv1_1", "relu2_1"), weights=None)
    assert fx.memory == "lean" and fx.channels_last == "auto"
    fx.channels_last = False  # the same layout for both calls: the trunks are compared
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        lean = fx(x)
    fx.memory = "plain"
    with torch.no_grad():
        plain = fx(x)
    assert list(lean) == list(plain) == ["conv1_1", "relu2_1"]
    for name in plain:
        assert torch.equal(lean[name], plain[name])


def test_extractor_channels_last_close_to_nchw():
    # MSE: an L1 gradient is a sign, which float rounding may flip where features nearly agree.
    nchw_value, nchw_grad, _ = _loss_and_grad("lean", False, style=False, criterion="mse")
    cl_value, cl_grad, _ = _loss_and_grad("lean", True, style=False, criterion="mse")
    torch.testing.assert_close(cl_value, nchw_value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cl_grad, nchw_grad, rtol=1e-4, atol=1e-4 * nchw_grad.abs().max())


def test_extractor_rejects_unknown_memory_mode():
    from perceptual_loss import FeatureExtractor

    with pytest.raises(ValueError, match="memory must be 'lean' or 'plain'; got 'small'"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=None, memory="small")
