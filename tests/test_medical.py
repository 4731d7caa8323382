"""Medical perceptual loss: RadImageNet/ResNet50 (2D) and MedicalNet (3D) trunks, MONAI parity."""

from __future__ import annotations

import doctest
import importlib
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from perceptual_loss import weights as weights_module
from perceptual_loss.backbones.medicalnet import medicalnet_resnet10, medicalnet_resnet50
from perceptual_loss.backbones.resnet import RESNET50_PARAMETERS, radimagenet_resnet50, resnet50
from perceptual_loss.frozen import copy_frozen_weights
from perceptual_loss.medical import (
    MEDICAL_NETWORKS,
    MedicalPerceptualLoss,
    build_network,
    load_network_state,
)
from perceptual_loss.preprocess import zscore_intensity
from perceptual_loss.volumes import VolumePerceptualLoss, window_ct
from perceptual_loss.weights import WeightsIntegrityError, WeightsNotFoundError

NETWORKS_2D = ("radimagenet_resnet50", "resnet50")
NETWORKS_3D = ("medicalnet_resnet10", "medicalnet_resnet10_23datasets", "medicalnet_resnet50",
               "medicalnet_resnet50_23datasets")


@pytest.fixture(autouse=True)
def _isolated_weights(tmp_path, monkeypatch):
    """No test sees the real weight folders or the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    monkeypatch.delenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("PERCEPTUAL_LOSS_MIRROR", raising=False)


def randomize(network: nn.Module, seed: int) -> nn.Module:
    """Random batch-norm statistics and affine terms, so no layer is an identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                module.weight.copy_(0.5 + torch.rand(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
            elif isinstance(module, (nn.Conv2d, nn.Conv3d)) and module.bias is not None:
                module.bias.copy_(0.05 * torch.randn(module.bias.shape, generator=gen))
    return network


_LOSSES: dict[tuple, MedicalPerceptualLoss] = {}


def cached_loss(network: str, **options) -> MedicalPerceptualLoss:
    """One randomised loss per configuration; the trunks of the 3D networks are shared."""
    key = (network, *sorted(options.items()))
    if key not in _LOSSES:
        torch.manual_seed(0)
        loss = MedicalPerceptualLoss(network, weights=None, **options)
        same = [v for k, v in _LOSSES.items() if k[0] == network]
        if same:
            loss.network = same[0].network
        else:
            randomize(loss.network, seed=len(_LOSSES))
        _LOSSES[key] = loss
    return _LOSSES[key]


def pair(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    y = (x + 0.2 * torch.randn(shape, generator=gen)).clamp(0, 1)
    return x, y


# ------------------------------------------------------------------------------- networks
def test_resnet50_has_torchvision_keys_and_parameter_count():
    with torch.device("meta"):
        net = resnet50(num_classes=1000)
    expected = []

    def bn(prefix):
        return [f"{prefix}.{n}" for n in ("weight", "bias", "running_mean", "running_var",
                                          "num_batches_tracked")]

    expected += ["conv1.weight", *bn("bn1")]
    for stage, count in enumerate((3, 4, 6, 3), start=1):
        for block in range(count):
            p = f"layer{stage}.{block}"
            for i in (1, 2, 3):
                expected += [f"{p}.conv{i}.weight", *bn(f"{p}.bn{i}")]
            if block == 0:
                expected += [f"{p}.downsample.0.weight", *bn(f"{p}.downsample.1")]
    expected += ["fc.weight", "fc.bias"]
    assert list(net.state_dict()) == expected
    assert sum(p.numel() for p in net.parameters()) == RESNET50_PARAMETERS == 25_557_032
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
    assert net.layer2[0].downsample[0].stride == (2, 2)


def test_radimagenet_layout_is_the_keras_conversion():
    with torch.device("meta"):
        net = radimagenet_resnet50()
    keys = list(net.state_dict())
    assert len(keys) == 371 and "fc.weight" not in keys
    assert "avgpool" not in dict(net.named_children())
    assert {"conv1.bias", "layer1.0.conv1.bias", "layer4.2.conv3.bias",
            "layer3.0.downsample.0.bias"} <= set(keys)
    assert net.layer2[0].conv1.stride == (2, 2) and net.layer2[0].conv2.stride == (1, 1)
    assert net.bn1.eps == pytest.approx(1.001e-5)
    out = net(torch.empty(1, 3, 65, 40, device="meta"))
    assert tuple(out.shape) == (1, 2048, 3, 2)


def test_medicalnet_layouts_match_the_published_encoders():
    with torch.device("meta"):
        r10, r50 = medicalnet_resnet10(), medicalnet_resnet50()
    state = r10.state_dict()
    # the published resnet_10_23dataset.pth holds 72 tensors, 14,361,292 numbers
    assert len(state) == 72 and sum(v.numel() for v in state.values()) == 14_361_292
    assert len(r50.state_dict()) == 318
    assert r10.conv1.in_channels == 1 and r10.layer3[0].conv1.dilation == (2, 2, 2)
    assert r10.layer4[0].conv2.dilation == (4, 4, 4)
    assert r10.layer3[0].downsample[0].stride == (1, 1, 1)
    assert r50.layer2[0].conv2.stride == (2, 2, 2) and r50.layer4[2].conv2.padding == (4, 4, 4)
    assert tuple(r50(torch.empty(1, 1, 17, 16, 9, device="meta")).shape) == (1, 2048, 3, 2, 2)


@pytest.mark.parametrize("name", ["perceptual_loss.backbones.resnet",
                                  "perceptual_loss.backbones.medicalnet",
                                  "perceptual_loss.medical"])
def test_docstring_examples(name, one_thread):
    result = doctest.testmod(importlib.import_module(name), extraglobs={"torch": torch},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------------------------ MONAI
@pytest.fixture(scope="module")
def monai_perceptual():
    return pytest.importorskip("monai.losses.perceptual")


def monai_loss(monai_perceptual, monkeypatch, ours: MedicalPerceptualLoss,
               fake_3d_ratio: float | None = None, **options):
    """MONAI's PerceptualLoss with its hub download replaced by our trunk."""
    monkeypatch.setattr(torch.hub, "load", lambda *args, **kwargs: ours.network)
    name = ours.network_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ours.spatial_dims == 3:
            # MONAI 1.6 names only the 23-dataset MedicalNets; the plain ones share their layout
            monai_name = name if name.endswith("23datasets") else f"{name}_23datasets"
            return monai_perceptual.PerceptualLoss(spatial_dims=3, network_type=monai_name,
                                                   is_fake_3d=False, **options)
        if fake_3d_ratio is None:
            loss = monai_perceptual.PerceptualLoss(spatial_dims=2,
                                                   network_type="radimagenet_resnet50")
        else:
            loss = monai_perceptual.PerceptualLoss(spatial_dims=3, is_fake_3d=True,
                                                   fake_3d_ratio=fake_3d_ratio,
                                                   network_type="radimagenet_resnet50")
    if name == "resnet50":  # MONAI builds it with torchvision: swap in our trunk
        cls = monai_perceptual.TorchvisionModelPerceptualSimilarity
        function = cls.__new__(cls)
        nn.Module.__init__(function)
        function.final_layer = "layer4.2.relu_2"
        function.model = _Taps(ours.network, function.final_layer)
        loss.perceptual_function = function
    return loss


class _Taps(nn.Module):
    """What torchvision's feature extractor returns: {layer name: map}."""

    def __init__(self, trunk: nn.Module, name: str) -> None:
        super().__init__()
        self.trunk, self.name = trunk, name

    def forward(self, x):
        return {self.name: self.trunk(x)}


@pytest.mark.parametrize("network,shape", [
    ("radimagenet_resnet50", (2, 1, 40, 36)),
    ("radimagenet_resnet50", (2, 3, 33, 32)),
    ("resnet50", (2, 3, 40, 36)),
    ("resnet50", (2, 1, 32, 32)),
    ("medicalnet_resnet10", (2, 1, 16, 16, 12)),
    ("medicalnet_resnet10_23datasets", (2, 1, 16, 12, 20)),
    ("medicalnet_resnet50", (2, 1, 12, 8, 8)),
    ("medicalnet_resnet50_23datasets", (2, 1, 8, 9, 8)),
    ("medicalnet_resnet10", (2, 2, 12, 16, 16)),
])
def test_equals_monai(network, shape, monai_perceptual, monkeypatch, one_thread):
    ours = cached_loss(network)
    x, y = pair(shape, seed=len(shape))
    reference = monai_loss(monai_perceptual, monkeypatch, ours)
    expected = reference(y.clone(), x.clone())  # MONAI's resnet50 path edits its inputs
    value = ours(y, x)
    assert value.shape == () and float(expected) > 0
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("batch", [2, 1])
def test_channel_wise_equals_monai(batch, monai_perceptual, monkeypatch, one_thread):
    ours = cached_loss("medicalnet_resnet10", channel_wise=True)
    x, y = pair((batch, 3, 16, 12, 16), seed=batch)
    expected = monai_loss(monai_perceptual, monkeypatch, ours, channel_wise=True)(y, x)
    value = ours(y, x)
    assert value.shape == (3,)
    if batch == 1:
        # MONAI squeezes the batch away and then averages the channels: a scalar
        assert expected.shape == ()
        value = value.mean()
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)


def test_monai_nan_at_a_constant_volume_is_finite_here(monai_perceptual, monkeypatch):
    ours = cached_loss("medicalnet_resnet10")
    x, _ = pair((1, 1, 8, 8, 8))
    flat = torch.full_like(x, 0.5)
    reference = monai_loss(monai_perceptual, monkeypatch, ours)
    assert torch.isnan(reference(flat, x))
    prediction = flat.clone().requires_grad_()
    value = ours(prediction, x)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(prediction.grad).all()


@pytest.mark.parametrize("network", ["radimagenet_resnet50", "resnet50"])
def test_a_2d_network_given_volumes_equals_monais_fake_3d(network, monai_perceptual,
                                                          monkeypatch, one_thread):
    ours = cached_loss(network)
    x, y = pair((1, 1, 32, 33, 34), seed=7)
    expected = monai_loss(monai_perceptual, monkeypatch, ours, fake_3d_ratio=1.0)(
        y.clone(), x.clone())
    torch.testing.assert_close(ours(y, x), expected, rtol=1e-5, atol=0)
    # MONAI sums the three axes; the 2.5D VolumePerceptualLoss averages them: a third.
    per_slice = MedicalPerceptualLoss(network, weights=None, reduction="none")
    copy_frozen_weights(ours, per_slice)
    volume = VolumePerceptualLoss(per_slice)
    torch.testing.assert_close(volume(y, x) * 3, expected, rtol=1e-5, atol=0)


def test_drawn_slices_are_monais_draws_under_the_same_seed(monai_perceptual, monkeypatch,
                                                           one_thread):
    ours = MedicalPerceptualLoss("radimagenet_resnet50", weights=None, fake_3d_ratio=0.5)
    x, y = pair((2, 1, 32, 32, 33), seed=8)
    reference = monai_loss(monai_perceptual, monkeypatch, ours, fake_3d_ratio=0.5)
    torch.manual_seed(11)
    expected = reference(y, x)
    torch.manual_seed(11)
    value = ours(y, x)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)
    torch.manual_seed(12)
    assert float((ours(y, x) - value).abs()) > 1e-6  # another seed, other slices
    every = MedicalPerceptualLoss("radimagenet_resnet50", weights=None)(y, x)
    assert abs(float(value / every) - 1) < 0.5  # half the slices estimate the same loss
    seeded = MedicalPerceptualLoss("radimagenet_resnet50", weights=None, fake_3d_ratio=0.5,
                                   generator=torch.Generator().manual_seed(11))
    torch.manual_seed(11)
    torch.testing.assert_close(seeded(y, x), value)  # the same draws from its own generator


def test_fake_3d_per_volume_values_gradients_and_options(one_thread):
    loss = MedicalPerceptualLoss("radimagenet_resnet50", weights=None, reduction="none")
    x, y = pair((2, 1, 32, 32, 32), seed=9)
    prediction = x.clone().requires_grad_()
    values = loss(prediction, y)
    assert values.shape == (2,)
    torch.testing.assert_close(values[1:], loss(x[1:], y[1:]), rtol=1e-5, atol=0)
    values.sum().backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"draws slices from the whole batch.*reduction='mean'"):
        MedicalPerceptualLoss("resnet50", weights=None, fake_3d_ratio=0.5, reduction="none")
    with pytest.raises(ValueError, match=r"fake_3d_ratio must be in \(0, 1\]"):
        MedicalPerceptualLoss("resnet50", weights=None, fake_3d_ratio=1.5)
    with pytest.raises(ValueError, match="is 3D and sees the whole volume"):
        MedicalPerceptualLoss("medicalnet_resnet10", weights=None, fake_3d_ratio=0.5)


# --------------------------------------------------------------------------- beyond MONAI
@pytest.mark.parametrize("network,shape", [("radimagenet_resnet50", (1, 1, 32, 32)),
                                           ("medicalnet_resnet10", (1, 1, 16, 16, 16))])
def test_frozen_identical_inputs_zero_with_finite_gradient(network, shape, one_thread):
    loss = cached_loss(network)
    assert not any(p.requires_grad for p in loss.network.parameters())
    parent = nn.Sequential(nn.Identity(), loss)
    parent.train()
    assert loss.training and not loss.network.training
    x, _ = pair(shape)
    prediction = x.clone().requires_grad_()
    target = x.clone().requires_grad_()
    value = loss(prediction, target)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(prediction.grad).all() and target.grad is None


def test_reductions_weight_and_channel_wise_shapes(one_thread):
    mean = cached_loss("medicalnet_resnet10")
    none = cached_loss("medicalnet_resnet10", reduction="none")
    total = cached_loss("medicalnet_resnet10", reduction="sum", weight=2.0)
    per_channel = cached_loss("medicalnet_resnet10", channel_wise=True, reduction="none")
    x, y = pair((3, 2, 8, 8, 8))
    values = none(y, x)
    assert values.shape == (3,)
    torch.testing.assert_close(mean(y, x), values.mean())
    torch.testing.assert_close(total(y, x), 2 * values.sum())
    per = per_channel(y, x)
    assert per.shape == (3, 2)
    torch.testing.assert_close(per.sum(1), values)


def test_input_range_and_zscore_per_volume(one_thread):
    unit = cached_loss("medicalnet_resnet10", zscore="volume", reduction="none")
    signed = cached_loss("medicalnet_resnet10", zscore="volume", reduction="none",
                         input_range=(-1, 1))
    x, y = pair((3, 1, 8, 8, 8))
    values = unit(y, x)
    torch.testing.assert_close(signed(2 * y - 1, 2 * x - 1), values, rtol=1e-4, atol=1e-6)
    # per-volume statistics: a sample's value does not depend on the rest of the batch
    torch.testing.assert_close(unit(y[1:2], x[1:2]), values[1:2], rtol=1e-4, atol=1e-6)
    radimagenet = cached_loss("radimagenet_resnet50", reduction="none")
    signed_2d = cached_loss("radimagenet_resnet50", reduction="none", input_range=(0, 255))
    a, b = pair((1, 3, 32, 32))
    torch.testing.assert_close(signed_2d(255 * b, 255 * a), radimagenet(b, a), rtol=1e-4,
                               atol=1e-6)


def test_zscore_batch_is_monai_statistics():
    x = torch.rand(2, 3, 4, 4, 4)
    expected = (x - x.mean()) / x.std()
    torch.testing.assert_close(zscore_intensity(x, "batch"), expected, rtol=1e-5, atol=1e-5)
    per = zscore_intensity(x, "volume")
    torch.testing.assert_close(per[1, 2], (x[1, 2] - x[1, 2].mean()) / x[1, 2].std(),
                               rtol=1e-5, atol=1e-5)


def test_bf16_autocast_close_to_float32(one_thread):
    loss = cached_loss("medicalnet_resnet10")
    x, y = pair((1, 1, 16, 16, 16))
    reference = loss(y, x)
    prediction = y.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(prediction, x)
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(prediction.grad).all()
    torch.testing.assert_close(value, reference, rtol=0.1, atol=0)


@pytest.mark.parametrize("network,shape,match", [
    ("radimagenet_resnet50", (1, 1, 8, 32, 32), "8x32x32 are too small.*at least 32x32x32"),
    ("radimagenet_resnet50", (1, 32, 32), r"\(N, C, H, W\) or \(N, C, D, H, W\)"),
    ("medicalnet_resnet10", (1, 1, 16, 16), r"\(N, C, D, H, W\)"),
    ("radimagenet_resnet50", (1, 2, 32, 32), "1 \\(grayscale\\) or 3 \\(RGB\\) channels; got 2"),
    ("radimagenet_resnet50", (1, 3, 31, 40), "31x40 are too small.*at least 32x32"),
    ("medicalnet_resnet10", (1, 1, 8, 7, 8), "8x7x8 are too small.*at least 8x8x8"),
])
def test_shape_errors(network, shape, match):
    loss = cached_loss(network)
    x = torch.rand(shape)
    with pytest.raises(ValueError, match=match):
        loss(x, x)


def test_value_and_type_errors():
    loss = cached_loss("medicalnet_resnet10")
    x = torch.rand(1, 1, 8, 8, 8)
    bad = x.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="prediction contains NaN"):
        loss(bad, x)
    with pytest.raises(ValueError, match=r"target has values in \[1"):
        loss(x, x + 1)
    with pytest.raises(TypeError, match="dtype torch.uint8"):
        loss(x.to(torch.uint8), x.to(torch.uint8))
    with pytest.raises(ValueError, match="same shape"):
        loss(x, torch.rand(1, 1, 8, 8, 9))
    loss_unchecked = cached_loss("medicalnet_resnet10", check_values=False)
    assert torch.isfinite(loss_unchecked(x * 3, x))


@pytest.mark.parametrize("options,error,match", [
    ({"network": "vgg16"}, ValueError, "network must be one of radimagenet_resnet50"),
    ({"weight": -1.0}, ValueError, "weight must be a finite number >= 0"),
    ({"weight": float("inf")}, ValueError, "weight must be a finite number"),
    ({"weight": "1"}, TypeError, "weight must be a number"),
    ({"eps": 0.0}, ValueError, "eps must be a finite number > 0"),
    ({"reduction": "avg"}, ValueError, "reduction must be 'none', 'mean' or 'sum'"),
    ({"input_range": (1, 0)}, ValueError, "input_range must have low < high"),
    ({"zscore": "global"}, ValueError, "zscore must be 'batch' or 'volume'"),
    ({"channel_wise": 1}, TypeError, "channel_wise must be True or False"),
    ({"network": "resnet50", "channel_wise": True}, ValueError, "needs a 3D MedicalNet"),
    ({"network": "resnet50", "zscore": "volume"}, ValueError, "3D MedicalNet networks only"),
    ({"weights": 3}, TypeError, "weights must be a name, a path or None"),
    ({"weights": "vgg16/imagenet"}, ValueError, "for another network"),
    ({"weights": "no/such/file.pth"}, WeightsNotFoundError, "no such file"),
])
def test_option_errors(options, error, match):
    options = {"network": "medicalnet_resnet10", "weights": None, **options}
    with pytest.raises(error, match=match):
        MedicalPerceptualLoss(**options)


# ---------------------------------------------------------------------------------- weights
@pytest.fixture(scope="module")
def resnet10_file(tmp_path_factory):
    """A MedicalNet-style file: {"state_dict": {"module.<key>": tensor}}, random values."""
    torch.manual_seed(3)
    source = randomize(medicalnet_resnet10(), seed=3)
    path = tmp_path_factory.mktemp("medicalnet") / "resnet_10_23dataset.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    return path, source.eval()


def test_loads_a_medicalnet_file_with_module_prefixes(resnet10_file, one_thread):
    path, source = resnet10_file
    network, origin = build_network("medicalnet_resnet10", path)
    assert origin == str(path) and not network.training
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(network(x), source(x), rtol=0, atol=0)


def test_published_name_found_in_weights_dir_never_downloaded(resnet10_file, monkeypatch):
    path, _ = resnet10_file
    with pytest.raises(WeightsNotFoundError, match="not downloaded automatically.*weights=None"):
        MedicalPerceptualLoss("medicalnet_resnet10_23datasets")
    monkeypatch.setenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", str(path.parent))
    loss = MedicalPerceptualLoss("medicalnet_resnet10_23datasets", weights="medicalnet")
    assert loss.weights_source == str(path)


@pytest.mark.parametrize("edit,match", [
    (lambda s: s.pop("layer2.0.bn1.running_var"), "missing keys: layer2.0.bn1.running_var"),
    (lambda s: s.update({"fc.weight": torch.zeros(2, 512)}), "unexpected keys: fc.weight"),
    (lambda s: s.update({"conv1.weight": torch.zeros(64, 3, 7, 7, 7)}),
     r"wrong shapes: conv1.weight \(64, 3, 7, 7, 7\) \(expected \(64, 1, 7, 7, 7\)\)"),
    (lambda s: s.update({"layer1.0.conv2.weight": torch.full((64, 64, 3, 3, 3), float("inf"))}),
     "'layer1.0.conv2.weight' holds NaN or Inf"),
    (lambda s: s.update({"bn1.weight": torch.ones(64, dtype=torch.int64)}),
     "'bn1.weight' has dtype torch.int64"),
])
def test_rejects_files_that_do_not_fit(edit, match, tmp_path):
    state = _expanded_state(medicalnet_resnet10())
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsIntegrityError, match=re.escape(str(path)) + ".*" + match):
        build_network("medicalnet_resnet10", path)


def _expanded_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's keys and shapes, each tensor a view of one number (a tiny file)."""
    state = {}
    for key, value in model.state_dict().items():
        if value.ndim == 0:
            state[key] = torch.zeros((), dtype=value.dtype)
        else:
            state[key] = torch.full((1,) * value.ndim, 0.5).expand(value.shape)
    return state


def test_resnet50_full_or_trunk_files_and_registry(tmp_path, one_thread):
    with torch.device("meta"):
        full = resnet50(num_classes=1000)
    state = _expanded_state(full)
    torch.save(state, tmp_path / "full.pth")
    network, _ = build_network("resnet50", tmp_path / "full.pth")
    assert not hasattr(network, "fc") and float(network.layer4[2].bn3.running_var[0]) == 0.5
    trunk = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save({"model": trunk}, tmp_path / "trunk.pth")
    build_network("resnet50", tmp_path / "trunk.pth")
    spec = weights_module.get_weight_spec("resnet50/imagenet")
    assert spec.url == "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    assert (spec.hash_algorithm, spec.hash_value, spec.file_format) == ("sha256", "0676ba61",
                                                                        "torch")
    v2 = weights_module.get_weight_spec("resnet50/imagenet-v2")
    assert (v2.url, v2.hash_value) == ("https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
                                       "11ad3fa6")
    # the RadImageNet and MedicalNet files are listed but local-only: never downloaded
    assert all(weights_module.get_weight_spec(k).local_only for k in weights_module.list_weights()
               if k.startswith(("radimagenet", "medicalnet")))
    # the default is what MONAI's resnet50 loads: torchvision's IMAGENET1K_V2 file
    with pytest.raises(WeightsNotFoundError, match="resnet50-11ad3fa6.pth"):
        MedicalPerceptualLoss("resnet50")
    with pytest.raises(WeightsNotFoundError, match="resnet50-0676ba61.pth"):
        MedicalPerceptualLoss("resnet50", weights="imagenet")
    # a file of the right name but the wrong content fails the registry's hash check
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / spec.filename)
    with pytest.raises(WeightsIntegrityError, match="sha256"):
        MedicalPerceptualLoss("resnet50", weights="imagenet")


def test_missing_num_batches_tracked_is_accepted(tmp_path):
    network = medicalnet_resnet10()
    state = {k: v for k, v in _expanded_state(network).items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    torch.manual_seed(1)
    other = medicalnet_resnet10()  # other random weights, overwritten by the file
    load_network_state(other, "medicalnet_resnet10", tmp_path / "old.pth")
    loaded = other.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_every_network_is_known():
    assert set(MEDICAL_NETWORKS) == set(NETWORKS_2D) | set(NETWORKS_3D)


# ----------------------------------------------------------------------- 2.5D and training
def test_radimagenet_inside_volume_loss_with_ct_window(one_thread):
    loss_2d = cached_loss("radimagenet_resnet50", reduction="none")
    volume_loss = VolumePerceptualLoss(loss_2d, slice_ratio=0.1, seed=0)
    assert volume_loss.min_slice_size == 32
    gen = torch.Generator().manual_seed(0)
    hu = -1000 + 1400 * torch.rand(1, 1, 32, 32, 32, generator=gen)
    noisy = hu + 50 * torch.randn(hu.shape, generator=gen)
    prediction = window_ct(noisy, "soft_tissue").requires_grad_()
    value = volume_loss(prediction, window_ct(hu, "soft_tissue"))
    value.backward()
    assert value > 0 and torch.isfinite(prediction.grad).all()


def test_training_a_small_3d_denoiser_lowers_the_loss(one_thread):
    torch.manual_seed(0)
    perceptual = MedicalPerceptualLoss("medicalnet_resnet10", weights=None)
    model = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 1, 3, padding=1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    clean = torch.linspace(0, 1, 16).view(1, 1, 16, 1, 1).expand(1, 1, 16, 16, 16).contiguous()
    clean = (clean + 0.2 * torch.rand(1, 1, 16, 16, 16, generator=gen)).clamp(0, 1)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
    values = []
    for _ in range(12):
        optimizer.zero_grad()
        output = model(noisy).clamp(0, 1)
        loss = nn.functional.mse_loss(output, clean) + 0.1 * perceptual(output, clean)
        loss.backward()
        optimizer.step()
        values.append(loss.item())
    assert values[-1] < 0.5 * values[0]
    assert not any(p.grad is not None for p in perceptual.parameters())
