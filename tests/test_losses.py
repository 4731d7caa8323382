import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from article_reference import ArticleVGGPerceptualLoss
from perceptual_loss import (
    FeatureExtractor,
    PerceptualLoss,
    TotalVariationLoss,
    gram_matrix,
    normalize_channels,
    perceptual_loss,
)
from perceptual_loss.backbones import get_backbone
from perceptual_loss.frozen import copy_frozen_weights

TINY = dict(backbone="vgg11", layers=("relu1_1", "relu2_1"), weights=None)


@pytest.fixture(scope="module")
def vgg16_checkpoint(tmp_path_factory):
    """A full torchvision-layout VGG16 state dict, as the article's ``vgg16.pth``."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(get_backbone("vgg16").build().state_dict(), path)
    yield path
    os.unlink(path)


@pytest.fixture(scope="module")
def article(vgg16_checkpoint):
    return ArticleVGGPerceptualLoss(str(vgg16_checkpoint), resize=True)


def _images(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g), torch.rand(*shape, generator=g)


def test_equals_article_class_on_rgb_with_resize(vgg16_checkpoint, article):
    x, y = _images(2, 3, 40, 56)
    ours = PerceptualLoss(weights=vgg16_checkpoint, resize=224)
    torch.testing.assert_close(ours(x, y), article(x, y), rtol=1e-5, atol=1e-6)


def test_equals_article_class_on_grayscale_without_resize(vgg16_checkpoint, article):
    x, y = _images(3, 1, 48, 48, seed=1)
    ours = PerceptualLoss(weights=vgg16_checkpoint)
    article.resize = False
    try:
        torch.testing.assert_close(ours(x, y), article(x, y), rtol=1e-5, atol=1e-6)
    finally:
        article.resize = True


def test_gradient_equals_article_class(vgg16_checkpoint, article):
    x, y = _images(1, 3, 32, 32, seed=2)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    PerceptualLoss(weights=vgg16_checkpoint)(x1, y).backward()
    article.resize = False
    try:
        article(x2, y).backward()
    finally:
        article.resize = True
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-8)


def test_gradcheck_float64():
    loss_fn = PerceptualLoss(**TINY, criterion="charbonnier", style_layers=("relu1_1",),
                             pixel_mse=0.5, pixel_l1=0.1, tv_weight=0.1,
                             check_values=False).double()
    x, y = (t.double() for t in _images(1, 3, 6, 6, seed=3))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: loss_fn(a, y), (x,), eps=1e-6, atol=1e-5)


def test_reductions_and_parts():
    x, y = _images(3, 3, 16, 16)
    loss_fn = PerceptualLoss(**TINY, style_layers=("relu2_1",), style_weight=10.0,
                             pixel_mse=1.0, pixel_l1=0.5, tv_weight=0.1, reduction="none")
    per_sample, parts = loss_fn(x, y, return_parts=True)
    assert per_sample.shape == (3,)
    assert set(parts) == {"content/relu1_1", "content/relu2_1", "style/relu2_1", "pixel/mse",
                          "pixel/l1", "tv"}
    torch.testing.assert_close(sum(parts.values()), per_sample)
    torch.testing.assert_close(parts["pixel/mse"], ((x - y) ** 2).flatten(1).mean(1))
    torch.testing.assert_close(parts["pixel/l1"], 0.5 * (x - y).abs().flatten(1).mean(1))
    loss_fn.reduction = "mean"
    torch.testing.assert_close(loss_fn(x, y), per_sample.mean())
    loss_fn.reduction = "sum"
    torch.testing.assert_close(loss_fn(x, y), per_sample.sum())


def test_content_value_is_weighted_sum_of_per_layer_means():
    x, y = _images(2, 3, 16, 16)
    fx = FeatureExtractor(**TINY)
    fp, ft = fx(x), fx(y)
    expected = 2.0 * F.mse_loss(fp["relu1_1"], ft["relu1_1"]) \
        + 0.5 * F.mse_loss(fp["relu2_1"], ft["relu2_1"])
    loss_fn = PerceptualLoss(extractor=fx, criterion="mse", layer_weights={"relu1_1": 2.0,
                                                                            "relu2_1": 0.5})
    torch.testing.assert_close(loss_fn(x, y), expected)
    torch.testing.assert_close(
        perceptual_loss(x, y, extractor=fx, criterion="mse", layer_weights=[2.0, 0.5]), expected)


def test_identical_inputs_give_zero():
    x, _ = _images(2, 3, 16, 16)
    for criterion in ("l1", "mse"):
        loss_fn = PerceptualLoss(**TINY, criterion=criterion, style_layers=("relu1_1",),
                                 pixel_mse=1.0, ssim_weight=1.0)
        assert loss_fn(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_pure_style_loss_matches_manual_gram():
    x, y = _images(2, 3, 16, 16)
    loss_fn = PerceptualLoss(**{**TINY, "layers": ()}, style_layers=("relu1_1", "relu2_1"),
                             style_criterion="mse", style_weight=3.0)
    fx = loss_fn.extractor
    expected = 0.0
    for layer in ("relu1_1", "relu2_1"):
        fp, ft = fx(x)[layer], fx(y)[layer]
        n, c, h, w = fp.shape
        gp = torch.einsum("nchw,ndhw->ncd", fp, fp) / (c * h * w)
        gt = torch.einsum("nchw,ndhw->ncd", ft, ft) / (c * h * w)
        expected = expected + 3.0 * F.mse_loss(gp, gt)
    torch.testing.assert_close(loss_fn(x, y), expected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gram_gradient_and_double_backward_equal_autograd_of_einsum(memory_format):
    g = torch.Generator().manual_seed(3)
    features = torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64)
    features = features.contiguous(memory_format=memory_format).requires_grad_()
    weight = torch.randn(2, 5, 5, generator=g, dtype=torch.float64)

    def reference(f):
        return torch.einsum("nchw,ndhw->ncd", f, f) / (5 * 4 * 3)

    torch.testing.assert_close(gram_matrix(features), reference(features))
    (ours,) = torch.autograd.grad((gram_matrix(features) * weight).sum(), features,
                                  create_graph=True)
    (theirs,) = torch.autograd.grad((reference(features) * weight).sum(), features,
                                    create_graph=True)
    torch.testing.assert_close(ours, theirs)
    # second order (a gradient penalty through a style loss)
    (ours2,) = torch.autograd.grad(ours.square().sum(), features)
    (theirs2,) = torch.autograd.grad(theirs.square().sum(), features)
    torch.testing.assert_close(ours2, theirs2)
    assert torch.autograd.gradgradcheck(gram_matrix, (features,))


def test_cached_style_target_equals_passing_style_image():
    x, _ = _images(3, 3, 16, 16)
    style = torch.rand(1, 3, 24, 20)
    loss_fn = PerceptualLoss(**{**TINY, "layers": ()}, style_layers=("relu1_1", "relu2_1"))
    loss_fn.set_style_target(style)
    cached = loss_fn(x, x)  # content target is irrelevant for a pure style loss
    fx = loss_fn.extractor
    gram_style = {k: gram_matrix(v) for k, v in fx(style).items()}
    manual = sum((gram_matrix(fx(x)[k]) - gram_style[k]).abs().flatten(1).mean(1)
                 for k in ("relu1_1", "relu2_1")).mean()
    torch.testing.assert_close(cached, manual)


def test_set_target_then_prediction_only():
    x, y = _images(2, 3, 16, 16)
    loss_fn = PerceptualLoss(**TINY, pixel_mse=1.0)
    expected = loss_fn(x, y)
    loss_fn.set_target(y)
    torch.testing.assert_close(loss_fn(x), expected)
    loss_fn.clear_targets()
    with pytest.raises(ValueError, match="target is missing"):
        loss_fn(x)


def test_a_cached_target_is_the_target_and_another_one_is_refused():
    """One rule with the Keras loss: while a target is cached, it is what the loss compares
    with (Keras ignores y_true; here a second target is refused rather than ignored)."""
    x, y = _images(2, 3, 16, 16)
    loss_fn = PerceptualLoss(**TINY)
    loss_fn.set_target(y)
    with pytest.raises(ValueError, match=r"a target is cached with set_target\(\).*"
                                         r"clear_target\(\)"):
        loss_fn(x, x)
    loss_fn.clear_target()
    assert loss_fn(x, x) == 0


def test_target_gets_no_gradient_unless_it_asks():
    x, y = _images(2, 3, 16, 16)
    x.requires_grad_(True)
    loss_fn = PerceptualLoss(**TINY)
    loss_fn(x, y).backward()
    assert x.grad is not None and y.grad is None
    y2 = y.clone().requires_grad_(True)
    loss_fn(x, y2).backward()
    assert y2.grad is not None and y2.grad.abs().sum() > 0


def test_metric_mode_equals_training_mode():
    x, y = _images(3, 3, 16, 16)
    loss_fn = PerceptualLoss(**TINY, style_layers=("relu1_1",), reduction="none")
    with torch.no_grad():
        metric = loss_fn(x, y)
    training = loss_fn(x.clone().requires_grad_(True), y)
    torch.testing.assert_close(metric, training.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("input_range", [(-1.0, 1.0), (0.0, 255.0)])
def test_declared_input_range_gives_same_value(input_range):
    x, y = _images(2, 3, 16, 16)
    low, high = input_range
    base = PerceptualLoss(**TINY, pixel_mse=1.0, tv_weight=0.1)
    scaled = PerceptualLoss(extractor=FeatureExtractor(**TINY, input_range=input_range),
                            pixel_mse=1.0, tv_weight=0.1)
    copy_frozen_weights(base.extractor, scaled.extractor)
    torch.testing.assert_close(scaled(x * (high - low) + low, y * (high - low) + low),
                               base(x, y), rtol=1e-4, atol=1e-6)


def test_out_of_range_error_reports_min_max_and_can_be_disabled():
    x, y = _images(1, 3, 16, 16)
    with pytest.raises(ValueError,
                       match=r"prediction has values in \[0.*, 2\] but input_range=\(0, 1\)"):
        PerceptualLoss(**TINY)(x * 2, y)
    assert torch.isfinite(PerceptualLoss(**TINY, check_values=False)(x * 2, y))


def test_pair_errors():
    loss_fn = PerceptualLoss(**TINY)
    x, y = _images(1, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(x, y[..., :8])
    with pytest.raises(TypeError, match="same dtype"):
        loss_fn(x, y.double())


def test_option_errors():
    with pytest.raises(ValueError, match="unknown criterion 'huber'"):
        PerceptualLoss(**TINY, criterion="huber")
    with pytest.raises(ValueError, match="2 layers"):
        PerceptualLoss(**TINY, layer_weights=[1.0])
    with pytest.raises(ValueError, match="reduction"):
        PerceptualLoss(**TINY, reduction="max")
    with pytest.raises(ValueError, match="unknown layer 'relu9_9'"):
        PerceptualLoss("vgg11", layers=("relu9_9",), weights=None)


def test_normalized_features_ignore_per_location_scale():
    f = torch.rand(2, 8, 4, 4)
    torch.testing.assert_close(normalize_channels(f), normalize_channels(3 * f))
    zero = torch.zeros(1, 8, 2, 2, requires_grad=True)
    normalize_channels(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
    x, y = _images(2, 3, 16, 16)
    loss_fn = PerceptualLoss(**TINY, normalize_features=True)
    assert 0 < loss_fn(x, y).item() < 2


def test_ssim_term_is_one_minus_ssim():
    pytest.importorskip("pytorch_msssim")
    from skimage.metrics import structural_similarity

    x, _ = _images(1, 1, 32, 32)
    y = (x + 0.1 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(5)))
    y = y.clamp(0, 1)
    loss_fn = PerceptualLoss(**{**TINY, "layers": ()}, ssim_weight=1.0)
    _, parts = loss_fn(x, y, return_parts=True)
    reference = structural_similarity(x[0, 0].numpy(), y[0, 0].numpy(), data_range=1.0,
                                      gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert parts["ssim"].item() == pytest.approx(1 - reference, abs=0.03)


def test_total_variation_against_manual():
    x = torch.rand(2, 3, 5, 7)
    manual = (x[:, :, 1:] - x[:, :, :-1]).abs().flatten(1).mean(1) \
        + (x[..., 1:] - x[..., :-1]).abs().flatten(1).mean(1)
    torch.testing.assert_close(TotalVariationLoss(reduction="none")(x), manual)
    assert TotalVariationLoss()(torch.ones(1, 1, 4, 4)).item() == 0


def test_bfloat16_autocast_on_cpu_is_close_and_gram_is_float32():
    x, y = _images(2, 3, 32, 32)
    loss_fn = PerceptualLoss(**TINY, style_layers=("relu2_1",))
    reference = loss_fn(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss_fn(x.requires_grad_(True), y)
        assert gram_matrix(torch.rand(1, 4, 3, 3, dtype=torch.bfloat16)).dtype == torch.float32
    low.backward()
    assert low.dtype == torch.float32 and torch.isfinite(x.grad).all()
    assert low.item() == pytest.approx(reference.item(), rel=0.05)


def test_channels_last_and_float64():
    x, y = _images(2, 3, 16, 16)
    loss_fn = PerceptualLoss(**TINY)
    reference = loss_fn(x, y)
    cl = loss_fn(x.to(memory_format=torch.channels_last), y.to(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, reference, rtol=1e-5, atol=1e-6)
    double = loss_fn.double()(x.double(), y.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), reference, rtol=1e-4, atol=1e-6)


def test_no_trainable_parameters_and_eval_lock_inside_a_model():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Conv2d(3, 3, 3, padding=1)
            self.loss = PerceptualLoss("vgg11_bn", layers=("relu1_1",), weights=None)

        def forward(self, x, y):
            return self.loss(torch.sigmoid(self.net(x)), y)

    model = Model().train()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["net.weight", "net.bias"]
    assert not model.loss.extractor.body.training
    x, y = _images(2, 3, 16, 16)
    wrapped = nn.DataParallel(model)  # on CPU it runs the module directly
    wrapped(x, y).backward()
    assert model.net.weight.grad is not None


def test_inside_distributed_data_parallel(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Sigmoid())
        ddp = nn.parallel.DistributedDataParallel(net)
        loss_fn = PerceptualLoss(**TINY)
        x, y = _images(2, 3, 16, 16)
        loss_fn(ddp(x), y).backward()
        assert net[0].weight.grad is not None
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_torch_compile_smoke():
    loss_fn = PerceptualLoss(**TINY, check_values=False)
    compiled = torch.compile(loss_fn)
    x, y = _images(1, 3, 16, 16)
    torch.testing.assert_close(compiled(x, y), loss_fn(x, y), rtol=1e-4, atol=1e-6)


def test_functional_form_caches_its_module():
    from perceptual_loss.functional_loss import _cached_loss

    x, y = _images(1, 3, 16, 16)
    _cached_loss.cache_clear()
    a = perceptual_loss(x, y, **TINY)
    b = perceptual_loss(x, y, **TINY)
    assert _cached_loss.cache_info().hits == 1 and _cached_loss.cache_info().misses == 1
    torch.testing.assert_close(a, b)


def _saved_float_bytes(loss_fn, x, y):
    """Bytes of floating-point tensors autograd keeps for backward (parameters excluded)."""
    loss_fn(x, y)  # the first call puts the trunk in the device's layout (channels_last on CPU)
    params = {p.data_ptr() for p in loss_fn.parameters()}
    saved = []

    def pack(t):
        if t.is_floating_point() and t.data_ptr() not in params:
            saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(x, y)
    return sum(saved)


def test_training_step_keeps_no_float_feature_maps():
    x, y = _images(2, 3, 32, 32)
    x.requires_grad_(True)
    lean = PerceptualLoss("vgg16", weights=None)
    plain = PerceptualLoss(extractor=FeatureExtractor("vgg16", weights=None, memory="plain"))
    image_bytes = x.numel() * x.element_size()
    # Lean: at most a few image-sized tensors (preprocessing); plain: every activation.
    assert _saved_float_bytes(lean, x, y) <= 4 * image_bytes
    assert _saved_float_bytes(plain, x, y) > 50 * image_bytes


@pytest.mark.parametrize("chunk_size", [1, 2])
def test_chunked_batch_gives_same_values_and_gradients(chunk_size):
    x, y = _images(3, 3, 16, 16)
    options = dict(**TINY, style_layers=("relu1_1",), pixel_mse=1.0, reduction="none")
    whole = PerceptualLoss(**options)
    chunked = PerceptualLoss(**options, chunk_size=chunk_size)
    copy_frozen_weights(whole, chunked)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    a, parts_a = whole(x1, y, return_parts=True)
    b, parts_b = chunked(x2, y, return_parts=True)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    assert list(parts_a) == list(parts_b)
    (a.sum()).backward()
    (b.sum()).backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-8)


def test_chunked_batch_with_cached_targets_and_per_channel_images():
    x, y = _images(4, 2, 16, 16)
    options = dict(**TINY, channel_mode="per_channel", reduction="none")
    whole = PerceptualLoss(**options)
    chunked = PerceptualLoss(extractor=whole.extractor, chunk_size=3, reduction="none")
    expected = whole(x, y)
    chunked.set_target(y)
    torch.testing.assert_close(chunked(x), expected, rtol=1e-5, atol=1e-7)
    style = PerceptualLoss(extractor=whole.extractor, layers=(), style_layers=("relu1_1",),
                           chunk_size=1, reduction="none")
    style.set_style_target(y[:1])
    reference = PerceptualLoss(extractor=whole.extractor, layers=(), style_layers=("relu1_1",),
                               reduction="none")
    torch.testing.assert_close(style(x, y), reference(x, y[:1].expand_as(y)),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="chunk_size"):
        PerceptualLoss(**TINY, chunk_size=0)


def test_cached_targets_follow_the_module_to_another_dtype():
    x, y = _images(2, 3, 16, 16)
    loss_fn = PerceptualLoss(**TINY, style_layers=("relu1_1",))
    loss_fn.set_target(y)
    loss_fn.set_style_target(y[:1])
    expected = loss_fn(x)
    loss_fn.double()
    value = loss_fn(x.double())
    assert value.dtype == torch.float64
    torch.testing.assert_close(value.float(), expected, rtol=1e-4, atol=1e-6)


def test_target_pass_stops_after_the_last_layer_it_serves():
    from torch.utils.flop_counter import FlopCounterMode

    def flops(loss_fn, *args):
        with FlopCounterMode(display=False) as counter:
            loss_fn(*args)
        return counter.get_total_flops()

    x, y = _images(1, 3, 32, 32)
    loss_fn = PerceptualLoss("vgg11", layers=("relu1_1",), weights=None,
                             style_layers=("relu1_1", "relu4_1"))
    both_full = flops(loss_fn, x, y)
    loss_fn.set_style_target(y)
    # The prediction still runs to relu4_1; the target only to relu1_1.
    assert flops(loss_fn, x, y) < 0.6 * both_full
