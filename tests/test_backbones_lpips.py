"""AlexNet and SqueezeNet 1.1 trunks: torchvision's layout, layer names, registry, weights."""

from __future__ import annotations

import pytest
import torch

from perceptual_loss import FeatureExtractor, WeightsNotFoundError
from perceptual_loss.backbones import get_backbone, list_backbones
from perceptual_loss.backbones.alexnet import ALEXNET_LAYER_NAMES, LPIPS_ALEXNET_TAPS
from perceptual_loss.backbones.squeezenet import (
    LPIPS_SQUEEZENET_TAPS,
    SQUEEZENET1_1_LAYER_NAMES,
)
from perceptual_loss.weights import WeightsIntegrityError, get_weight_spec

# torchvision's state-dict keys, written out by hand from its model definitions.
ALEXNET_KEYS = [f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")] + \
    [f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias")]
SQUEEZENET_KEYS = ["features.0.weight", "features.0.bias"] + [
    f"features.{i}.{conv}.{p}"
    for i in (3, 4, 6, 7, 9, 10, 11, 12)
    for conv in ("squeeze", "expand1x1", "expand3x3")
    for p in ("weight", "bias")
] + ["classifier.1.weight", "classifier.1.bias"]


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for var in ("PERCEPTUAL_LOSS_WEIGHTS_DIR", "PERCEPTUAL_LOSS_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return get_backbone("alexnet").build().eval()


@pytest.fixture(scope="module")
def squeezenet():
    torch.manual_seed(0)
    return get_backbone("squeezenet1_1").build().eval()


def test_registered():
    assert {"alexnet", "squeezenet1_1"} <= set(list_backbones())


def test_alexnet_has_torchvision_keys_shapes_and_size(alexnet):
    state = alexnet.state_dict()
    assert list(state) == ALEXNET_KEYS
    assert state["features.0.weight"].shape == (64, 3, 11, 11)
    assert state["features.10.weight"].shape == (256, 256, 3, 3)
    assert state["classifier.1.weight"].shape == (4096, 256 * 6 * 6)
    assert sum(v.numel() for v in state.values()) == 61_100_840  # torchvision's documented count
    assert alexnet(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_squeezenet_has_torchvision_keys_shapes_and_size(squeezenet):
    state = squeezenet.state_dict()
    assert list(state) == SQUEEZENET_KEYS
    assert state["features.0.weight"].shape == (64, 3, 3, 3)
    assert state["features.12.expand3x3.weight"].shape == (256, 64, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 512, 1, 1)
    assert sum(v.numel() for v in state.values()) == 1_235_496  # torchvision's documented count
    assert squeezenet(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize(("backbone", "names"), [("alexnet", ALEXNET_LAYER_NAMES),
                                                 ("squeezenet1_1", SQUEEZENET1_1_LAYER_NAMES)])
def test_features_are_the_models_trunk_with_one_name_per_module(backbone, names):
    spec = get_backbone(backbone)
    features = spec.build_features()
    assert len(features) == len(spec.layer_names) == len(names) == 13
    model_keys = [k[len("features."):] for k in spec.build().state_dict() if
                  k.startswith("features.")]
    assert list(features.state_dict()) == model_keys
    with pytest.raises(ValueError, match="Valid layers: conv1"):
        spec.canonical("relu1_1")


@pytest.mark.parametrize(("backbone", "expected"), [
    ("alexnet", {"relu1": (64, 55, 55), "relu2": (192, 27, 27), "relu3": (384, 13, 13),
                 "relu4": (256, 13, 13), "relu5": (256, 13, 13), "pool5": (256, 6, 6)}),
    ("squeezenet1_1", {"relu1": (64, 111, 111), "fire3": (128, 55, 55), "fire5": (256, 27, 27),
                       "fire6": (384, 13, 13), "fire7": (384, 13, 13), "fire8": (512, 13, 13),
                       "fire9": (512, 13, 13)}),
])
def test_tap_shapes_at_224(backbone, expected):
    extractor = FeatureExtractor(backbone, layers=tuple(expected), weights=None)
    features = extractor(torch.rand(1, 3, 224, 224))
    assert {name: tuple(f.shape[1:]) for name, f in features.items()} == expected


def test_lpips_taps_are_rectified_layers():
    assert LPIPS_ALEXNET_TAPS == ("relu1", "relu2", "relu3", "relu4", "relu5")
    extractor = FeatureExtractor("squeezenet1_1", layers=LPIPS_SQUEEZENET_TAPS, weights=None)
    features = extractor(torch.rand(1, 3, 64, 64))
    assert all(float(f.min()) >= 0 for f in features.values())


def test_registry_points_at_torchvision_files():
    for backbone, filename in (("alexnet", "alexnet-owt-7be5be79.pth"),
                               ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth")):
        spec = get_weight_spec(get_backbone(backbone).weights["imagenet"])
        assert spec.backbone == backbone
        assert spec.filename == filename
        assert spec.url == f"https://download.pytorch.org/models/{filename}"
        assert spec.hash_algorithm == "sha256"
        assert spec.hash_value == filename.rsplit("-", 1)[1][:-len(".pth")]


def test_checkpoint_written_here_loads_strictly(squeezenet, tmp_path):
    path = tmp_path / "squeezenet1_1-random.pth"
    torch.save(squeezenet.state_dict(), path)
    extractor = FeatureExtractor("squeezenet1_1", layers=("fire9",), weights=path,
                                 normalization="none")
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(extractor(x)["fire9"], squeezenet.features(x))
    wrong = tmp_path / "alexnet-as-squeezenet.pth"
    torch.manual_seed(1)
    torch.save(get_backbone("alexnet").build_features().state_dict(), wrong)
    with pytest.raises(WeightsIntegrityError):
        FeatureExtractor("squeezenet1_1", layers=("fire9",), weights=wrong)


def test_missing_imagenet_weights_offline_name_the_file():
    with pytest.raises(WeightsNotFoundError, match="alexnet-owt-7be5be79.pth"):
        FeatureExtractor("alexnet", layers=("relu1",), weights="imagenet")
