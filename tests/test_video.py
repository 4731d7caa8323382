"""Video clips: tLP and the temporal perceptual loss against their definitions."""

import doctest
import importlib

import pytest
import torch

from perceptual_loss import (
    LPIPS,
    FeatureExtractor,
    PerceptualLoss,
    VideoPerceptualLoss,
    temporal_lpips,
)
from perceptual_loss.frozen import copy_frozen_weights

LAYERS = ("relu1_1", "relu2_1")


def _clips(n=2, frames=4, size=32, seed=0, channels=3):
    g = torch.Generator().manual_seed(seed)
    shape = (n, frames, channels, size, size)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


@pytest.fixture(scope="module")
def metric():
    torch.manual_seed(0)
    return LPIPS("alex", weights=None)


@pytest.fixture(scope="module")
def extractor():
    torch.manual_seed(1)
    return FeatureExtractor("vgg11", LAYERS, weights=None, memory="plain")


def _reference_tlp(metric, prediction, target):
    """The definition: LPIPS of each consecutive pair, called pair by pair."""
    frames = prediction.shape[1]
    lp = torch.stack([metric(prediction[:, t], prediction[:, t - 1]) for t in range(1, frames)])
    lg = torch.stack([metric(target[:, t], target[:, t - 1]) for t in range(1, frames)])
    return (lp - lg).abs().mean(0)


def _reference_loss(fx, prediction, target, weights, temporal_weight, criterion="l1"):
    """mean_t sum_l w_l d(f(p_t), f(g_t)) + tw * mean_t sum_l w_l d(df(p), df(g)), per clip."""

    def distance(a, b):
        diff = a - b
        return (diff.abs() if criterion == "l1" else diff.square()).flatten(1).mean(1)

    frames = prediction.shape[1]
    fp = [fx(prediction[:, t]) for t in range(frames)]
    fg = [fx(target[:, t]) for t in range(frames)]
    frame = sum(sum(w * distance(fp[t][layer], fg[t][layer]) for layer, w in weights.items())
                for t in range(frames)) / frames
    temporal = sum(sum(w * distance(fp[t][layer] - fp[t - 1][layer],
                                    fg[t][layer] - fg[t - 1][layer])
                       for layer, w in weights.items())
                   for t in range(1, frames)) / (frames - 1)
    return frame + temporal_weight * temporal


# ------------------------------------------------------------------------------------ tLP
@pytest.mark.parametrize("frames_per_chunk", [None, 1, 3])
def test_tlp_equals_its_definition_from_pairwise_lpips(metric, frames_per_chunk):
    prediction, target = _clips(frames=5)
    value, changes_p, changes_g = temporal_lpips(prediction, target, metric,
                                                 frames_per_chunk=frames_per_chunk,
                                                 return_frames=True)
    assert value.shape == (2,)
    torch.testing.assert_close(value, _reference_tlp(metric, prediction, target),
                               rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(changes_p[:, 1], metric(prediction[:, 2], prediction[:, 1]),
                               rtol=1e-5, atol=1e-7)
    assert changes_g.shape == (2, 4)


def test_tlp_runs_each_frame_through_the_trunk_once(metric):
    prediction, target = _clips(frames=6)
    seen = []
    handle = metric.extractor.preprocess.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape[0]))
    try:
        temporal_lpips(prediction, target, metric)
    finally:
        handle.remove()
    assert sum(seen) == 2 * 2 * 6  # both clips' 12 frames, once each


def test_tlp_of_any_callable_metric_and_its_errors(metric):
    prediction, target = _clips(frames=3)
    expected = _reference_tlp(metric, prediction, target)
    torch.testing.assert_close(temporal_lpips(prediction, target, lambda a, b: metric(a, b)),
                               expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"one value per pair, shape \(4,\).*reduction='none'"):
        temporal_lpips(prediction, target, lambda a, b: metric(a, b).mean())
    with pytest.raises(ValueError, match="spatial=False"):
        temporal_lpips(prediction, target, LPIPS("alex", weights=None, spatial=True))


def test_tlp_is_zero_for_static_clips_and_for_a_clip_against_itself(metric):
    prediction, target = _clips(frames=4)
    static_p = prediction[:, :1].expand_as(prediction)
    static_g = target[:, :1].expand_as(target)
    assert torch.equal(temporal_lpips(static_p, static_g, metric), torch.zeros(2))
    assert torch.equal(temporal_lpips(prediction, prediction, metric), torch.zeros(2))


def test_tlp_gradient_is_finite_and_reaches_every_frame(metric):
    prediction, target = _clips(n=1, frames=3)
    prediction.requires_grad_()
    temporal_lpips(prediction, target, metric, frames_per_chunk=2).sum().backward()
    assert torch.isfinite(prediction.grad).all()
    assert (prediction.grad.flatten(2).abs().sum(2) > 0).all()


@pytest.mark.parametrize(("shape", "message"), [
    ((2, 3, 32, 32), r"clip \(N, T, C, H, W\); got shape \(2, 3, 32, 32\).*clip\[None\]"),
    ((2, 1, 3, 32, 32), "needs at least 2"),
])
def test_tlp_refuses_images_and_single_frames(metric, shape, message):
    x = torch.rand(shape)
    with pytest.raises(ValueError, match=message):
        temporal_lpips(x, x, metric)


def test_tlp_checks_the_range_through_the_metric(metric):
    prediction, target = _clips(frames=2)
    with pytest.raises(ValueError, match="target"):
        temporal_lpips(prediction, target * 255, metric)


# ---------------------------------------------------------------------- the temporal loss
@pytest.mark.parametrize(("criterion", "layer_weights", "temporal_weight"), [
    ("l1", (1.0, 1.0), 0.5),
    ("mse", (2.0, 0.5), 3.0),
])
def test_loss_equals_its_definition_from_the_feature_extractor(extractor, criterion,
                                                               layer_weights, temporal_weight):
    prediction, target = _clips(frames=4, size=16)
    frame_loss = PerceptualLoss(extractor=extractor, criterion=criterion,
                                layer_weights=layer_weights, reduction="none")
    loss_fn = VideoPerceptualLoss(frame_loss, temporal_weight)
    expected = _reference_loss(extractor, prediction, target,
                               dict(zip(LAYERS, layer_weights, strict=True)), temporal_weight,
                               criterion)
    value, parts = loss_fn(prediction, target, return_parts=True)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sum(parts.values()), value, rtol=1e-5, atol=1e-6)
    assert sorted(parts) == ["content/relu1_1", "content/relu2_1", "temporal/relu1_1",
                             "temporal/relu2_1"]


@pytest.mark.parametrize("frames_per_chunk", [1, 2, 3, None])
def test_chunked_training_step_gives_the_definitions_value_and_gradient(frames_per_chunk):
    torch.manual_seed(2)
    frame_loss = PerceptualLoss("vgg11", LAYERS, weights=None, reduction="none", pixel_l1=0.5)
    plain = FeatureExtractor("vgg11", LAYERS, weights=None, memory="plain")
    copy_frozen_weights(frame_loss.extractor, plain)
    prediction, target = _clips(n=2, frames=5, size=16)
    upstream = torch.tensor([1.0, -2.0])

    x = prediction.clone().requires_grad_()
    loss_fn = VideoPerceptualLoss(frame_loss, 0.8, frames_per_chunk=frames_per_chunk)
    (loss_fn(x, target) * upstream).sum().backward()

    y = prediction.clone().requires_grad_()
    expected = (_reference_loss(plain, y, target, dict.fromkeys(LAYERS, 1.0), 0.8)
                + 0.5 * (y - target).abs().flatten(1).mean(1))
    (expected * upstream).sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-8)


def test_temporal_weight_zero_is_the_mean_frame_loss(extractor):
    prediction, target = _clips(frames=3, size=16)
    frame_loss = PerceptualLoss(extractor=extractor, reduction="none", pixel_mse=1.0)
    value = VideoPerceptualLoss(frame_loss, temporal_weight=0.0)(prediction, target)
    expected = torch.stack([frame_loss(prediction[:, t], target[:, t]) for t in range(3)]).mean(0)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7)
    single = VideoPerceptualLoss(frame_loss, temporal_weight=0.0)(prediction[:, :1],
                                                                  target[:, :1])
    torch.testing.assert_close(single, frame_loss(prediction[:, 0], target[:, 0]))


def test_static_clips_have_a_zero_temporal_term(extractor):
    prediction, target = _clips(frames=4, size=16)
    static_p = prediction[:, :1].expand_as(prediction).contiguous()
    static_g = target[:, :1].expand_as(target).contiguous()
    frame_loss = PerceptualLoss(extractor=extractor, reduction="none")
    _, parts = VideoPerceptualLoss(frame_loss, 1.0)(static_p, static_g, return_parts=True)
    assert all(torch.equal(parts[f"temporal/{layer}"], torch.zeros(2)) for layer in LAYERS)
    assert all(float(parts[f"content/{layer}"].min()) > 0 for layer in LAYERS)


def test_reductions_and_the_frame_losss_reduction(extractor):
    prediction, target = _clips(n=3, frames=2, size=16)
    per_clip = VideoPerceptualLoss(PerceptualLoss(extractor=extractor, reduction="none"))
    values = per_clip(prediction, target)
    assert values.shape == (3,)
    mean_loss = VideoPerceptualLoss(PerceptualLoss(extractor=extractor))  # reduction "mean"
    torch.testing.assert_close(mean_loss(prediction, target), values.mean())
    summed = VideoPerceptualLoss(PerceptualLoss(extractor=extractor), reduction="sum")
    torch.testing.assert_close(summed(prediction, target), values.sum())


def test_normalized_features_enter_the_temporal_term_normalized(extractor):
    from perceptual_loss import normalize_channels

    prediction, target = _clips(n=1, frames=2, size=16)
    frame_loss = PerceptualLoss(extractor=extractor, reduction="none", normalize_features=True)
    _, parts = VideoPerceptualLoss(frame_loss, 1.0)(prediction, target, return_parts=True)
    fp = [normalize_channels(extractor(prediction[:, t])["relu2_1"]) for t in range(2)]
    fg = [normalize_channels(extractor(target[:, t])["relu2_1"]) for t in range(2)]
    expected = ((fp[1] - fp[0]) - (fg[1] - fg[0])).abs().mean()
    torch.testing.assert_close(parts["temporal/relu2_1"], expected.reshape(1), rtol=1e-5,
                               atol=1e-7)


def test_per_channel_frames(extractor):
    fx = FeatureExtractor("vgg11", LAYERS, weights=None, channel_mode="per_channel")
    copy_frozen_weights(extractor, fx)
    prediction, target = _clips(n=1, frames=3, size=16, channels=2)
    loss_fn = VideoPerceptualLoss(PerceptualLoss(extractor=fx, reduction="none"), 1.0)
    channelwise = [loss_fn(prediction[:, :, c:c + 1], target[:, :, c:c + 1]) for c in range(2)]
    torch.testing.assert_close(loss_fn(prediction, target), sum(channelwise) / 2, rtol=1e-5,
                               atol=1e-7)


@pytest.mark.parametrize(("args", "error", "message"), [
    (((2, 3, 16, 16), (2, 3, 16, 16)), ValueError, r"\(N, T, C, H, W\); got shape \(2, 3, 16"),
    (((1, 2, 3, 16, 16), (1, 3, 3, 16, 16)), ValueError, "must have the same"),
    (((1, 1, 3, 16, 16), (1, 1, 3, 16, 16)), ValueError, "needs at least 2"),
])
def test_loss_refuses_wrong_shapes(extractor, args, error, message):
    loss_fn = VideoPerceptualLoss(PerceptualLoss(extractor=extractor))
    with pytest.raises(error, match=message):
        loss_fn(torch.rand(args[0]), torch.rand(args[1]))


def test_loss_refuses_bad_options_and_values(extractor):
    with pytest.raises(TypeError, match="frame_loss must be a PerceptualLoss"):
        VideoPerceptualLoss(LPIPS("alex", weights=None))
    with pytest.raises(ValueError, match="temporal_weight"):
        VideoPerceptualLoss(PerceptualLoss(extractor=extractor), temporal_weight=-1.0)
    with pytest.raises(ValueError, match="no content layers"):
        VideoPerceptualLoss(PerceptualLoss("vgg11", layers=(), weights=None, pixel_mse=1.0))
    prediction, target = _clips(n=1, frames=2, size=16)
    with pytest.raises(ValueError, match="target"):
        VideoPerceptualLoss(PerceptualLoss(extractor=extractor))(prediction, target * 255)


def test_video_docstring_examples_run():
    module = importlib.import_module("perceptual_loss.video")
    result = doctest.testmod(module, extraglobs={"torch": torch},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
