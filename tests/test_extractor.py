import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss import FeatureExtractor
from perceptual_loss.backbones import get_backbone
from perceptual_loss.frozen import copy_frozen_weights, frozen_state_dict


@pytest.fixture(scope="module")
def vgg19_fx():
    torch.manual_seed(0)
    return FeatureExtractor("vgg19", layers=("relu1_2", "conv5_4"), weights=None)


def _sequential_reference(fx, x, upto):
    """Plain run of a copy of the trunk (out-of-place ReLUs) up to module ``upto``."""
    body = copy.deepcopy(fx.body)
    for m in body:
        if isinstance(m, nn.ReLU):
            m.inplace = False
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return body[: upto + 1]((x - mean) / std)


def test_truncated_after_deepest_layer():
    fx = FeatureExtractor("vgg16", layers=("relu2_2", "relu1_2"), weights=None)
    assert len(fx.body) == 9
    assert fx.layers == ("relu2_2", "relu1_2")
    assert fx.feature_info == {"relu2_2": {"channels": 128, "stride": 2},
                               "relu1_2": {"channels": 64, "stride": 1}}


def test_pre_activation_tap_is_not_overwritten_by_inplace_relu(vgg19_fx):
    x = torch.rand(1, 3, 32, 32)
    feats = vgg19_fx(x)
    expected = _sequential_reference(vgg19_fx, x, get_backbone("vgg19").index("conv5_4"))
    torch.testing.assert_close(feats["conv5_4"], expected)
    assert (feats["conv5_4"] < 0).any()  # pre-activation: negatives survive


def test_pre_activation_tap_with_batch_norm():
    torch.manual_seed(0)
    fx = FeatureExtractor("vgg11_bn", layers=("bn2_1",), weights=None)
    feats = fx(torch.rand(2, 3, 16, 16))
    assert (feats["bn2_1"] < 0).any()


def test_frozen_eval_and_input_gradient(vgg19_fx):
    assert not any(p.requires_grad for p in vgg19_fx.parameters())
    parent = nn.Sequential(nn.Conv2d(3, 3, 1), vgg19_fx)
    parent.train()
    assert not vgg19_fx.body.training
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg19_fx(x)["relu1_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_batch_norm_statistics_never_change_in_a_training_parent():
    fx = FeatureExtractor("vgg11_bn", layers=("relu2_1",), weights=None)
    before = {k: v.clone() for k, v in frozen_state_dict(fx).items()}
    assert before  # the running statistics are among them
    model = nn.ModuleDict({"loss": fx}).train()
    model["loss"](torch.rand(2, 3, 16, 16) * 0.5 + 0.25)
    for k, v in frozen_state_dict(fx).items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_grayscale_is_repeated_to_rgb(vgg19_fx):
    gray = torch.rand(2, 1, 32, 32)
    a, b = vgg19_fx(gray), vgg19_fx(gray.repeat(1, 3, 1, 1))
    torch.testing.assert_close(a["relu1_2"], b["relu1_2"])


def test_per_channel_mode_stacks_channels_into_the_batch():
    fx = FeatureExtractor("vgg11", layers=("relu1_1",), weights=None, channel_mode="per_channel")
    x = torch.rand(2, 4, 16, 16)
    out = fx(x)["relu1_1"]
    assert out.shape == (8, 64, 16, 16)
    single = fx(x[1:2, 2:3])["relu1_1"]
    torch.testing.assert_close(out[1 * 4 + 2], single[0])


def test_resize_and_input_range():
    torch.manual_seed(0)
    a = FeatureExtractor("vgg11", layers=("relu1_1",), weights=None, resize=24)
    b = FeatureExtractor("vgg11", layers=("relu1_1",), weights=None, resize=24,
                         input_range=(-1, 1))
    copy_frozen_weights(a, b)
    x = torch.rand(1, 3, 17, 30)
    out = a(x)["relu1_1"]
    assert out.shape == (1, 64, 24, 24)
    torch.testing.assert_close(b(x * 2 - 1)["relu1_1"], out, rtol=1e-5, atol=1e-5)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = F.interpolate((x - mean) / std, size=(24, 24), mode="bilinear", align_corners=False)
    conv = a.body[0]
    torch.testing.assert_close(out, F.relu(conv(ref)))


def test_min_size_error_names_layer_and_size():
    fx = FeatureExtractor("vgg16", layers=("relu5_3",), weights=None)
    assert fx.min_input_size == 16
    with pytest.raises(ValueError, match=r"8x8 is too small for layer 'relu5_3'.*at least 16x16"):
        fx(torch.rand(1, 3, 8, 8))
    assert FeatureExtractor("vgg16", layers=("pool5",), weights=None).min_input_size == 32
    with pytest.raises(ValueError, match="too small"):
        FeatureExtractor("vgg16", layers=("pool5",), weights=None, resize=16)


@pytest.mark.parametrize(("x", "error", "pattern"), [
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), TypeError,
     r"dtype torch.uint8.*\.float\(\) / 255"),
    (torch.zeros(3, 16, 16), ValueError, r"\(N, C, H, W\).*unsqueeze\(0\)"),
    (torch.zeros(1, 1, 3, 16, 16), ValueError, "volumes"),
    (torch.zeros(1, 4, 16, 16), ValueError, r"4 channels.*per_channel"),
    (torch.full((1, 3, 16, 16), float("nan")), ValueError, "NaN"),
    (torch.full((1, 3, 16, 16), float("inf")), ValueError, "Inf"),
    (torch.linspace(-1.0, 1.0, 768).view(1, 3, 16, 16), ValueError,
     r"values in \[-1, 1\].*input_range=\(0, 1\).*another convention"),
    ([[0.0]], TypeError, "torch.Tensor"),
])
def test_bad_inputs_get_clear_errors(x, error, pattern):
    fx = FeatureExtractor("vgg11", layers=("relu1_1",), weights=None)
    with pytest.raises(error, match=pattern):
        fx(x)


def test_value_checks_can_be_switched_off():
    fx = FeatureExtractor("vgg11", layers=("relu1_1",), weights=None, check_values=False)
    assert fx(torch.full((1, 3, 8, 8), 3.0))["relu1_1"].shape == (1, 64, 8, 8)


def test_dtype_and_device_mismatch_say_how_to_fix():
    fx = FeatureExtractor("vgg11", layers=("relu1_1",), weights=None)
    with pytest.raises(TypeError, match=r"float64.*\.to\(torch.float64\)"):
        fx(torch.rand(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="on meta"):
        fx(torch.empty(1, 3, 8, 8, device="meta"))
    out = fx.double()(torch.rand(1, 3, 8, 8, dtype=torch.float64))["relu1_1"]
    assert out.dtype == torch.float64


def test_bad_options():
    with pytest.raises(ValueError, match="at least one layer"):
        FeatureExtractor("vgg11", layers=(), weights=None)
    with pytest.raises(ValueError, match="input_range"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=None, input_range=(1, 0))
    with pytest.raises(ValueError, match="unknown normalization"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=None, normalization="bgr")


@pytest.mark.parametrize(("backbone", "layer", "stride"), [
    ("alexnet", "relu5", 16), ("squeezenet1_1", "fire9", 16), ("vgg19", "relu5_4", 16),
])
def test_feature_info_strides_are_exact(backbone, layer, stride):
    fx = FeatureExtractor(backbone, layers=(layer,), weights=None)
    assert fx.feature_info[layer]["stride"] == stride


@pytest.mark.parametrize("memory", ["lean", "plain"])
@pytest.mark.parametrize("grad", [False, True])
def test_a_pre_activation_tap_keeps_its_negatives_when_deeper_layers_follow(memory, grad):
    torch.manual_seed(0)
    deep = FeatureExtractor("vgg11", layers=("conv2_1", "relu3_2"), weights=None,
                            memory=memory, channels_last=False)
    alone = FeatureExtractor("vgg11", layers=("conv2_1",), weights=None, memory=memory,
                             channels_last=False)
    alone.body.load_state_dict(deep.body.state_dict(), strict=False)
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.set_grad_enabled(grad):
        tapped = deep(x.clone().requires_grad_(grad))["conv2_1"]
        expected = alone(x.clone().requires_grad_(grad))["conv2_1"]
    assert float(tapped.min()) < 0  # an in-place ReLU of the next segment did not reach it
    torch.testing.assert_close(tapped, expected)
