"""Your own nn.Module as the backbone, and average pooling on the VGG trunks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss import FeatureExtractor, PerceptualLoss
from perceptual_loss.backbones import get_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


class SmallCNN(nn.Module):
    """A plain CNN with named stages."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True))
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 10)
        self.head_called = 0

    def forward(self, x):
        x = self.down(self.stem(x))
        self.head_called += 1
        return self.head(x.mean((2, 3)))


class Block(nn.Module):
    """A ResNet-like block whose ReLU module is called twice (as torchvision's)."""

    def __init__(self, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.down = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()

    def forward(self, x):
        out = self.relu(self.conv1(x))
        return self.relu(self.conv2(out) + self.down(x))


class ResNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3)
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.layer2 = nn.Sequential(Block(8, 2), Block(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.layer2(self.layer1(self.conv1(x)))
        return self.fc(x.mean((2, 3)))


def _images(n=2, size=32, seed=0, channels=3):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, channels, size, size, generator=gen),
            torch.rand(n, channels, size, size, generator=gen))


def _manual_taps(net, x, normalize=True):
    """Independent reference: run the network by hand, ImageNet-normalised."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std if normalize else x


def test_taps_of_a_small_cnn_equal_a_manual_forward_and_the_head_never_runs():
    torch.manual_seed(0)
    net = SmallCNN()
    fx = FeatureExtractor(net, layers=("stem", "down.0"))
    x, _ = _images()
    probes = net.head_called  # shape probes on the meta device ran the whole forward
    feats = fx(x)
    h = _manual_taps(net, x)
    stem = net.stem(h)
    torch.testing.assert_close(feats["stem"], stem)
    torch.testing.assert_close(feats["down.0"], net.down[0](stem))
    assert net.head_called == probes  # the real forward stopped after the last tap
    assert fx.min_input_size == 1 and fx.feature_info["down.0"] == {"channels": 16, "stride": 2}
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


def test_a_module_called_twice_is_tapped_at_its_last_call_and_in_place_relu_is_safe():
    torch.manual_seed(1)
    net = ResNetLike()
    fx = FeatureExtractor(net, layers=("layer1.0.relu", "layer1", "layer2.0.conv1"),
                          normalization="none")
    x, _ = _images()
    feats = fx(x)
    with torch.no_grad():
        h = net.conv1(x)
        block = net.layer1[0]
        out = block.relu(block.conv1(h))
        expected_relu = block.relu(block.conv2(out) + h)
        layer1 = net.layer1(net.conv1(x))
    torch.testing.assert_close(feats["layer1.0.relu"], expected_relu)
    torch.testing.assert_close(feats["layer1"], layer1)
    torch.testing.assert_close(feats["layer2.0.conv1"], net.layer2[0].conv1(layer1))


def test_every_term_works_on_a_module_backbone_with_gradients():
    torch.manual_seed(2)
    net = ResNetLike()
    loss_fn = PerceptualLoss(net, layers=("layer1", "layer2"), style_layers=("layer1",),
                             pixel_mse=1.0, ssim_weight=0.1, tv_weight=0.01, reduction="none",
                             normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    x, y = _images()
    x.requires_grad_()
    value, parts = loss_fn(x, y, return_parts=True)
    assert value.shape == (2,) and set(parts) == {"content/layer1", "content/layer2",
                                                  "style/layer1", "pixel/mse", "ssim", "tv"}
    value.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    expected = loss_fn(x[:1].detach(), y[:1])
    loss_fn.set_target(y[:1])
    torch.testing.assert_close(loss_fn(x[:1].detach()), expected)
    assert loss_fn.extractor.normalization.name == "custom"


def test_module_backbone_errors_are_clear(tmp_path):
    net = ResNetLike()
    with pytest.raises(ValueError, match=r"unknown layer 'layer3'.*named_modules"):
        PerceptualLoss(net, layers=("layer3",))
    with pytest.raises(ValueError, match=r"name the layers of your own backbone"):
        PerceptualLoss(net)
    with pytest.raises(ValueError, match="change your own module's pooling"):
        FeatureExtractor(net, layers=("layer1",), pooling="avg")
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match=r"does not fit backbone 'ResNetLike'.*missing keys"):
        FeatureExtractor(net, layers=("layer1",), weights=bad)
    with pytest.raises(ValueError, match=r"normalization \(mean, std\) needs 3 finite"):
        FeatureExtractor(net, layers=("layer1",), normalization=((0, 0, 0), (1, 0, 1)))


def test_too_small_inputs_name_the_minimum_for_a_module():
    class Strided(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 4, 5)
            self.b = nn.Conv2d(4, 4, 5)

        def forward(self, x):
            return self.b(self.a(x))

    fx = FeatureExtractor(Strided(), layers=("b",))
    assert fx.min_input_size == 9
    with pytest.raises(ValueError, match=r"8x8 is too small for layer 'b'.*at least 9x9"):
        fx(torch.rand(1, 3, 8, 8))


def test_avg_pooling_equals_a_hand_built_average_pooled_vgg():
    torch.manual_seed(3)
    features = get_backbone("vgg11").build_features()
    path_state = features.state_dict()
    fx = FeatureExtractor("vgg11", layers=("relu2_1", "pool2"), weights=None, pooling="avg",
                          normalization="none")
    fx.body.load_state_dict({k: v for k, v in path_state.items() if k in fx.body.state_dict()})
    x, _ = _images(n=1, size=24)
    with torch.no_grad():
        h = F.relu(features[0](x))
        h = F.avg_pool2d(h, 2)
        relu2_1 = F.relu(features[3](h))
        pool2 = F.avg_pool2d(relu2_1, 2)
    feats = fx(x)
    torch.testing.assert_close(feats["relu2_1"], relu2_1)
    torch.testing.assert_close(feats["pool2"], pool2)
    loss = PerceptualLoss("vgg11", layers=("relu2_1",), weights=None, pooling="avg")
    assert any(isinstance(m, nn.AvgPool2d) for m in loss.extractor.body)
    assert not any(isinstance(m, nn.MaxPool2d) for m in loss.extractor.body)
