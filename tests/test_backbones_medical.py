"""ResNets and MedicalNet as backbones of PerceptualLoss: named layers, every term, volumes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from perceptual_loss.backbones import get_backbone
from perceptual_loss.extractor import FeatureExtractor
from perceptual_loss.losses import PerceptualLoss
from perceptual_loss.weights import WeightsNotFoundError, build_random


@pytest.fixture(autouse=True)
def _isolated_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    monkeypatch.delenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", raising=False)


def _trunk(name: str) -> torch.nn.Sequential:
    """The backbone's random trunk as weights=None builds it (the fixed seed)."""
    return build_random(get_backbone(name).build_features).eval()


def _run_to(trunk: torch.nn.Sequential, x: torch.Tensor, layers: tuple[str, ...]
            ) -> dict[str, torch.Tensor]:
    """Each named module's output, run by hand in order."""
    found = {}
    for name, module in trunk.named_children():
        x = module(x)
        if name in layers:
            found[name] = x.clone()
        if len(found) == len(layers):
            break
    return found


def _gram(f: torch.Tensor) -> torch.Tensor:
    n, c = f.shape[:2]
    flat = f.reshape(n, c, -1)
    return flat @ flat.transpose(1, 2) / flat[0].numel()


def test_radimagenet_layers_with_style_terms_equal_a_direct_computation(one_thread):
    loss = PerceptualLoss("radimagenet_resnet50", layers=("layer1", "layer2"),
                          style_layers=("layer1",), style_weight=3.0, weights=None,
                          reduction="none", channels_last=False)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 1, 48, 40, generator=gen), torch.rand(2, 1, 48, 40, generator=gen)
    value, parts = loss(x, y, return_parts=True)
    # RadImageNet's preprocessing: gray -> RGB -> BGR, minus the ImageNet mean in BGR order
    mean = torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1)
    trunk = _trunk("radimagenet_resnet50")
    with torch.no_grad():
        fa = _run_to(trunk, x.expand(-1, 3, -1, -1).flip(1) - mean, ("layer1", "layer2"))
        fb = _run_to(trunk, y.expand(-1, 3, -1, -1).flip(1) - mean, ("layer1", "layer2"))
    expected = {f"content/{k}": (fa[k] - fb[k]).abs().mean(dim=(1, 2, 3)) for k in fa}
    expected["style/layer1"] = 3.0 * (_gram(fa["layer1"]) - _gram(fb["layer1"])).abs().mean(
        dim=(1, 2))
    assert list(parts) == ["content/layer1", "content/layer2", "style/layer1"]
    for name, reference in expected.items():
        torch.testing.assert_close(parts[name], reference, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(value, sum(expected.values()), rtol=1e-4, atol=1e-6)
    assert loss.extractor.feature_info == {"layer1": {"channels": 256, "stride": 4},
                                           "layer2": {"channels": 512, "stride": 8}}


def test_medicalnet_content_terms_on_volumes_equal_a_direct_computation(one_thread):
    loss = PerceptualLoss("medicalnet_resnet10", layers=("conv1", "layer2"), criterion="mse",
                          layer_weights=(1.0, 0.5), weights=None, reduction="none")
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 1, 12, 16, 8, generator=gen), torch.rand(2, 1, 12, 16, 8, generator=gen)
    prediction = x.clone().requires_grad_()
    value, parts = loss(prediction, y, return_parts=True)

    def zscore(v: torch.Tensor) -> torch.Tensor:  # MONAI's: one mean and std per batch
        return (v - v.mean()) / torch.sqrt(v.var() + 1e-10)

    trunk = _trunk("medicalnet_resnet10")
    with torch.no_grad():
        fa, fb = (_run_to(trunk, zscore(v), ("conv1", "layer2")) for v in (x, y))
    conv1 = (fa["conv1"] - fb["conv1"]).pow(2).mean(dim=(1, 2, 3, 4))
    layer2 = (fa["layer2"] - fb["layer2"]).pow(2).mean(dim=(1, 2, 3, 4))
    assert fa["layer2"].shape == (2, 128, 2, 2, 1)
    torch.testing.assert_close(parts["content/conv1"], conv1, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(parts["content/layer2"], 0.5 * layer2, rtol=1e-4, atol=1e-7)
    value.sum().backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0


def test_volumes_take_style_tv_and_pixel_terms_and_several_channels(one_thread):
    loss = PerceptualLoss("medicalnet_resnet10", layers=("layer1",), style_layers=("layer1",),
                          style_weight=1.0, tv_weight=0.1, pixel_l1=1.0, weights=None,
                          channel_mode="per_channel", reduction="none")
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 8, 8, 8, generator=gen, requires_grad=True)
    y = torch.rand(1, 2, 8, 8, 8, generator=gen)
    value, parts = loss(x, y, return_parts=True)
    assert set(parts) == {"content/layer1", "style/layer1", "pixel/l1", "tv"}
    tv = sum(x.diff(dim=d).abs().flatten(1).mean(1) for d in (2, 3, 4))
    torch.testing.assert_close(parts["tv"], 0.1 * tv.detach())
    value.sum().backward()
    assert torch.isfinite(x.grad).all()
    tv_y = sum(y.diff(dim=d).abs().flatten(1).mean(1) for d in (2, 3, 4))
    torch.testing.assert_close(loss(y, y), 0.1 * tv_y, rtol=1e-6, atol=1e-7)  # only TV left


def test_what_does_not_apply_to_volumes_is_refused():
    with pytest.raises(ValueError, match="ssim_weight is 2D SSIM.*takes volumes"):
        PerceptualLoss("medicalnet_resnet10", layers=("layer1",), ssim_weight=1.0, weights=None)
    with pytest.raises(ValueError, match="resize= resizes 2D images"):
        FeatureExtractor("medicalnet_resnet10", ("layer1",), None, resize=32)
    with pytest.raises(ValueError, match="pooling='avg'.*is 3D"):
        FeatureExtractor("medicalnet_resnet10", ("layer1",), None, pooling="avg")
    loss = PerceptualLoss("medicalnet_resnet10", layers=("layer1",), weights=None)
    with pytest.raises(ValueError, match=r"\(N, C, D, H, W\).*For 2D slices"):
        loss(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match="takes 1.*channel_mode='per_channel'"):
        loss(torch.rand(1, 2, 8, 8, 8), torch.rand(1, 2, 8, 8, 8))
    flat = PerceptualLoss("resnet50", layers=("layer1",), weights=None)
    with pytest.raises(ValueError, match="medicalnet_resnet10"):
        flat(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))


def test_unknown_resnet_layers_suggest_the_networks_own_names():
    with pytest.raises(ValueError, match="Did you mean 'layer4'.*conv1, bn1, relu, maxpool"):
        PerceptualLoss("resnet50", layers=("layer5",), weights=None)


def test_a_local_only_file_is_found_by_its_name_and_never_downloaded(tmp_path, monkeypatch,
                                                                      one_thread):
    with pytest.raises(WeightsNotFoundError, match="not downloaded automatically"):
        FeatureExtractor("medicalnet_resnet10", ("layer1",), "medicalnet-23datasets")
    folder = tmp_path / "weights"
    folder.mkdir()
    trunk = _trunk("medicalnet_resnet10")
    with torch.no_grad():
        for parameter in trunk.parameters():
            parameter.mul_(1.5)
    # MedicalNet's own layout: DataParallel's "module." prefixes, wrapped in "state_dict"
    state = {f"module.{k}": v for k, v in trunk.state_dict().items()}
    torch.save({"state_dict": state}, folder / "resnet_10_23dataset.pth")
    monkeypatch.setenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", str(folder))
    fx = FeatureExtractor("medicalnet_resnet10", ("layer1",), "medicalnet-23datasets")
    x = torch.rand(1, 1, 8, 8, 8)
    expected = _run_to(trunk, (x - x.mean()) / torch.sqrt(x.var() + 1e-10), ("layer1",))
    torch.testing.assert_close(fx(x)["layer1"], expected["layer1"], rtol=1e-4, atol=1e-6)
    assert fx.normalization.name == "zscore"


def test_the_lpips_trunks_are_looked_up_in_the_one_registry():
    from perceptual_loss.backbones import lpips_backbone

    assert [lpips_backbone(n).name for n in ("alex", "vgg", "squeeze")] == [
        "alexnet", "vgg16", "squeezenet1_1"]
    assert lpips_backbone("vgg16").lpips_layers == ("relu1_2", "relu2_2", "relu3_3", "relu4_3",
                                                    "relu5_3")
    with pytest.raises(ValueError, match="unknown LPIPS net 'resnet50'"):
        lpips_backbone("resnet50")


def test_a_conv1_tap_of_a_resnet_is_not_overwritten_by_its_relu(one_thread):
    fx = FeatureExtractor("resnet50", ("bn1", "layer1"), None, memory="plain",
                          channels_last=False)
    maps = fx(torch.rand(1, 3, 32, 32))
    assert float(maps["bn1"].min()) < 0
    assert F.relu(maps["bn1"]).shape == (1, 64, 16, 16)


def test_monais_distance_is_the_recipes_sse_on_unit_features(one_thread):
    """PerceptualLoss with criterion='sse' and normalize_features is the medical preset's value."""
    from perceptual_loss.medical import MedicalPerceptualLoss

    medical = MedicalPerceptualLoss("radimagenet_resnet50", weights=None, reduction="none")
    shared = PerceptualLoss("radimagenet_resnet50", layers=("layer4",), criterion="sse",
                            normalize_features=True, weights=None, reduction="none",
                            channels_last=False)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 1, 64, 64, generator=gen), torch.rand(2, 1, 64, 64, generator=gen)
    expected = medical(y, x)
    assert float(expected.min()) > 0
    # the preset normalises with MONAI's eps^2 = 1e-10, the recipe with 1e-20: no visible change
    torch.testing.assert_close(shared(y, x), expected, rtol=1e-5, atol=0)
    volumes = MedicalPerceptualLoss("medicalnet_resnet10", weights=None, reduction="none")
    shared_3d = PerceptualLoss("medicalnet_resnet10", layers=("layer4",), criterion="sse",
                               normalize_features=True, weights=None, reduction="none")
    a, b = torch.rand(2, 1, 16, 16, 16, generator=gen), torch.rand(2, 1, 16, 16, 16, generator=gen)
    torch.testing.assert_close(shared_3d(a, b), volumes(a, b), rtol=1e-5, atol=0)


def test_sse_sums_channels_in_the_value_the_map_and_keras():
    from perceptual_loss.functional import TORCH_OPS, feature_distance, feature_distance_map
    from perceptual_loss.recipe import Recipe, feature_distance_maps

    gen = torch.Generator().manual_seed(4)
    p, t = torch.randn(2, 5, 3, 4, generator=gen), torch.randn(2, 5, 3, 4, generator=gen)
    expected = (p - t).pow(2).sum(1).mean(dim=(1, 2))
    torch.testing.assert_close(feature_distance(p, t, "sse"), expected)
    torch.testing.assert_close(feature_distance_map(p, t, "sse").mean(dim=(1, 2, 3)), expected)
    recipe = Recipe.create("vgg11", ("relu1_1",), None, criterion="sse", layer_weights=(2.0,))
    maps = feature_distance_maps(recipe, [("relu1_1", p, t)], TORCH_OPS, 2)
    torch.testing.assert_close(maps["content/relu1_1"].mean(dim=(1, 2, 3)), 2 * expected)
    keras_functional = pytest.importorskip("perceptual_loss.keras.functional")
    value = keras_functional.feature_distance(p.permute(0, 2, 3, 1).numpy(),
                                              t.permute(0, 2, 3, 1).numpy(), "sse")
    torch.testing.assert_close(torch.as_tensor(
        keras_functional.ops.convert_to_numpy(value)), expected, rtol=1e-5, atol=1e-6)


def test_a_resnet_tiles_a_large_image_to_its_whole_value(one_thread):
    """The shortcut projections do not inflate the receptive field: ResNet50's is 427 px."""
    whole = PerceptualLoss("resnet50", layers=("layer1", "layer2"), weights=None,
                           reduction="none")
    tiled = PerceptualLoss("resnet50", layers=("layer1", "layer2"), weights=None,
                           reduction="none", tile_size=112)
    geometry = whole.extractor.geometry
    assert geometry is not None and (geometry.taps["layer2"].receptive,
                                     geometry.taps["layer2"].stride) == (91, 8)
    gen = torch.Generator().manual_seed(5)
    x, y = torch.rand(1, 3, 160, 136, generator=gen), torch.rand(1, 3, 160, 136, generator=gen)
    assert tiled.tiler is not None and tiled.tiler.tile_count(160, 136) > 1
    torch.testing.assert_close(tiled(x, y), whole(x, y), rtol=1e-4, atol=1e-6)
