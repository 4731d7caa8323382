import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import perceptual_loss
from perceptual_loss import (
    FeatureExtractor,
    PerceptualLoss,
    WeightsIntegrityError,
    WeightsNotFoundError,
)
from perceptual_loss.backbones import get_backbone
from perceptual_loss.weights import (
    RANDOM_WEIGHTS_SEED,
    WeightSpec,
    get_weight_spec,
    register_weights,
    resolve_weight_file,
    search_folders,
)
from processes import run_group

SRC = Path(perceptual_loss.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    """Every test gets empty caches and no mirror or offline folder from the machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    for var in ("PERCEPTUAL_LOSS_WEIGHTS_DIR", "PERCEPTUAL_LOSS_MIRROR", "PERCEPTUAL_LOSS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _features_checkpoint(tmp_path, name="vgg11", seed=0):
    torch.manual_seed(seed)
    state = get_backbone(name).build_features().state_dict()
    path = tmp_path / f"{name}-features.pth"
    torch.save(state, path)
    return path, state


def _registered_copy(src, backbone="vgg11"):
    """Register a spec whose official file is ``src`` (name carries its hash, as torchvision's)."""
    digest = _sha256(src)
    filename = f"{backbone}-{digest[:8]}.pth"
    key = f"{backbone}/test-{digest[:12]}"
    try:
        spec = get_weight_spec(key)
    except ValueError:
        spec = register_weights(WeightSpec(
            key=key, backbone=backbone, filename=filename,
            url=f"https://example.invalid/models/{filename}", file_format="torch",
            hash_algorithm="sha256", hash_value=digest[:8], normalization="imagenet",
            license="test"))
    return spec


def _relu1_1(fx_or_state, x):
    state = fx_or_state
    return F.relu(F.conv2d((x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                           / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
                           state["0.weight"], state["0.bias"], padding=1))


def test_local_features_file_loads_strictly(tmp_path):
    path, state = _features_checkpoint(tmp_path)
    fx = FeatureExtractor("vgg11", layers=("relu1_1",), weights=path)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(fx(x)["relu1_1"], _relu1_1(state, x))
    assert fx.weights_source == str(path)


def test_full_torchvision_model_file_loads(tmp_path):
    torch.manual_seed(1)
    model = get_backbone("vgg11").build()
    path = tmp_path / "vgg11-full.pth"
    torch.save(model.state_dict(), path)
    fx = FeatureExtractor("vgg11", layers=("relu1_1",), weights=path)
    state = {k[len("features."):]: v for k, v in model.state_dict().items()
             if k.startswith("features.")}
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(fx(x)["relu1_1"], _relu1_1(state, x))


def test_file_of_another_network_is_refused_with_its_path(tmp_path):
    path, _ = _features_checkpoint(tmp_path, "vgg13")
    with pytest.raises(WeightsIntegrityError, match=rf"{path.name}.*does not fit backbone 'vgg11'"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=path)


def test_truncated_full_model_file_is_refused(tmp_path):
    state = get_backbone("vgg11").build().state_dict()
    del state["classifier.6.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(WeightsIntegrityError, match=r"missing keys: classifier\.6\.bias"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=path)


def test_corrupt_local_file_is_refused_with_its_path(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsIntegrityError, match=rf"cannot read weights file .*{path.name}"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=path)


def test_missing_local_file_names_it(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"no-such\.pth.*no such file"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=tmp_path / "no-such.pth")


def test_offline_missing_weights_fail_fast_with_file_url_and_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as info:
        PerceptualLoss("vgg16")  # the default weights="imagenet"
    message = str(info.value)
    assert time.monotonic() - start < 10
    assert "vgg16-397923af.pth" in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in message
    assert "weights=None" in message


def test_a_missing_file_says_why_in_its_reason(tmp_path, monkeypatch):
    path, _ = _features_checkpoint(tmp_path)
    spec = _registered_copy(path)
    with pytest.raises(WeightsNotFoundError) as absent:
        resolve_weight_file(spec, download=False)
    assert absent.value.reason == "absent" and absent.value.key == spec.key
    monkeypatch.setenv("PERCEPTUAL_LOSS_MIRROR", (tmp_path / "empty-mirror").as_uri())
    with pytest.raises(WeightsNotFoundError, match="Download failed") as failed:
        resolve_weight_file(spec, progress=False)
    assert failed.value.reason == "download-failed"
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="Downloads are off") as offline:
        resolve_weight_file(spec)
    assert offline.value.reason == "offline"
    with pytest.raises(WeightsNotFoundError, match="no such file") as no_file:
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=tmp_path / "no-such.pth")
    assert no_file.value.reason == "no-such-file" and no_file.value.key is None
    with pytest.raises(ValueError, match="reason must be one of"):
        WeightsNotFoundError("x", reason="lost")


def test_registry_entries_match_torchvision_and_keras_files():
    spec = get_weight_spec("vgg16/imagenet")
    assert spec.filename == "vgg16-397923af.pth" and spec.hash_value == "397923af"
    assert spec.url == "https://download.pytorch.org/models/vgg16-397923af.pth"
    keras = get_weight_spec("vgg16/keras-imagenet")
    assert keras.filename == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert keras.hash_algorithm == "md5" and keras.normalization == "caffe"
    assert get_backbone("vgg19").weights["keras-imagenet"] == "vgg19/keras-imagenet"


def test_offline_folder_from_environment_is_used(tmp_path, monkeypatch):
    path, state = _features_checkpoint(tmp_path)
    spec = _registered_copy(path)
    folder = tmp_path / "offline"
    folder.mkdir()
    (folder / spec.filename).write_bytes(path.read_bytes())
    monkeypatch.setenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", str(folder))
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    assert resolve_weight_file(spec) == folder / spec.filename
    fx = FeatureExtractor("vgg11", layers=("relu1_1",), weights=spec.key)
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(fx(x)["relu1_1"], _relu1_1(state, x))


def test_download_from_file_url_lands_in_torch_hub_cache(tmp_path, monkeypatch):
    path, _ = _features_checkpoint(tmp_path)
    spec = _registered_copy(path)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / spec.filename).write_bytes(path.read_bytes())
    monkeypatch.setenv("PERCEPTUAL_LOSS_MIRROR", mirror.as_uri())
    resolved = resolve_weight_file(spec, progress=False)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints" / spec.filename
    assert resolved == cache and cache.read_bytes() == path.read_bytes()
    # Second time: found in the cache, even with downloads off.
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    assert resolve_weight_file(spec) == cache


def test_download_with_wrong_hash_is_refused_and_not_saved(tmp_path, monkeypatch):
    path, _ = _features_checkpoint(tmp_path)
    spec = _registered_copy(path)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / spec.filename).write_bytes(path.read_bytes() + b"tampered")
    monkeypatch.setenv("PERCEPTUAL_LOSS_MIRROR", mirror.as_uri())
    with pytest.raises(WeightsIntegrityError, match="fails its sha256 check"):
        resolve_weight_file(spec, progress=False)
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    assert not any(checkpoints.iterdir())


def test_corrupt_file_in_cache_is_refused_with_its_path(tmp_path):
    path, _ = _features_checkpoint(tmp_path)
    spec = _registered_copy(path)
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    corrupt = cache / spec.filename
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match=rf"{corrupt}.*corrupt or a different file"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=spec.key)


def test_keras_files_are_also_looked_for_in_keras_cache(tmp_path):
    folders = search_folders(get_weight_spec("vgg16/keras-imagenet"))
    assert folders[-1] == tmp_path / "keras_home" / "models"


def test_random_weights_only_when_asked():
    fx = FeatureExtractor("vgg11", layers=("relu1_1",), weights=None)
    assert "random" in fx.weights_source


def test_unknown_weights_name_is_an_error():
    with pytest.raises(WeightsNotFoundError, match="known: imagenet"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights="imagenet21k")


def _write_keras_notop_h5(path, rng):
    """A Keras-Applications-layout VGG16 notop file (legacy HDF5 weight format)."""
    h5py = pytest.importorskip("h5py")
    spec = get_backbone("vgg16")
    arrays = {}
    with h5py.File(path, "w") as f:
        names = ["input_1"]
        in_ch = 3
        for keras_name, ours in spec.aliases.items():
            names.append(keras_name)
            group = f.create_group(keras_name)
            if not ours.startswith("relu"):
                group.attrs["weight_names"] = np.array([], dtype="S")
                continue
            out_ch = 64 if ours.startswith("relu1") else 128 if ours.startswith("relu2") else \
                256 if ours.startswith("relu3") else 512
            kernel = rng.standard_normal((3, 3, in_ch, out_ch)).astype("float32") * 0.05
            bias = rng.standard_normal(out_ch).astype("float32") * 0.05
            group.create_dataset(f"{keras_name}/kernel:0", data=kernel)
            group.create_dataset(f"{keras_name}/bias:0", data=bias)
            group.attrs["weight_names"] = np.array(
                [f"{keras_name}/kernel:0", f"{keras_name}/bias:0"], dtype="S")
            arrays[keras_name] = (kernel, bias)
            in_ch = out_ch
        f.attrs["layer_names"] = np.array(names, dtype="S")
    return arrays


def test_keras_h5_weights_with_caffe_preprocessing(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "vgg16_notop.h5"
    arrays = _write_keras_notop_h5(path, rng)
    fx = FeatureExtractor("vgg16", layers=("block1_conv1", "block1_conv2"), weights=path)
    assert fx.normalization.name == "caffe"
    x = torch.rand(2, 3, 12, 12, dtype=torch.float32)
    # Independent computation in NHWC numpy, as Keras does: caffe preprocessing then conv.
    bgr = x.flip(1) * 255.0 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    nhwc = bgr.permute(0, 2, 3, 1).numpy()
    kernel, bias = arrays["block1_conv1"]
    padded = np.pad(nhwc, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((2, 12, 12, kernel.shape[-1]), dtype=np.float64)
    for dy in range(3):
        for dx in range(3):
            out += padded[:, dy:dy + 12, dx:dx + 12, :] @ kernel[dy, dx]
    expected = np.maximum(out + bias, 0).transpose(0, 3, 1, 2)
    got = fx(x)["relu1_1"].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_keras_h5_of_wrong_network_is_refused(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array(["dense"], dtype="S")
        g = f.create_group("dense")
        g.create_dataset("dense/kernel:0", data=np.zeros((2, 2), "float32"))
        g.attrs["weight_names"] = np.array(["dense/kernel:0"], dtype="S")
    with pytest.raises(WeightsIntegrityError, match="has no layer 'block1_conv1'"):
        FeatureExtractor("vgg16", layers=("relu1_1",), weights=path)


def test_features_only_file_with_the_features_prefix_loads(tmp_path):
    torch.manual_seed(2)
    model = get_backbone("vgg11").build()
    state = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    path = tmp_path / "vgg11-features-prefixed.pth"
    torch.save(state, path)
    fx = FeatureExtractor("vgg11", layers=("relu1_1",), weights=path)
    x = torch.rand(1, 3, 16, 16)
    trunk = {k[len("features."):]: v for k, v in state.items()}
    torch.testing.assert_close(fx(x)["relu1_1"], _relu1_1(trunk, x))


def test_a_prefixed_features_file_missing_a_layer_is_refused(tmp_path):
    state = {k: v for k, v in get_backbone("vgg11").build().state_dict().items()
             if k.startswith("features.") and k != "features.0.bias"}
    path = tmp_path / "vgg11-features-partial.pth"
    torch.save(state, path)
    with pytest.raises(WeightsIntegrityError, match=r"missing keys: 0\.bias"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=path)


def test_random_weights_are_the_same_on_every_build():
    first = FeatureExtractor("vgg11", layers=("relu2_1",), weights=None)
    second = FeatureExtractor("vgg11", layers=("relu2_1",), weights="random")
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    # drawn from the documented seed, not from whatever the global generator holds
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        expected = get_backbone("vgg11").build_features().state_dict()
    assert torch.equal(first.body[0].weight, expected["0.weight"])


def test_random_weights_leave_the_users_generator_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    FeatureExtractor("vgg11", layers=("relu1_1",), weights=None)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    FeatureExtractor("vgg11", layers=("relu1_1",), weights=None)
    assert torch.equal(torch.rand(4), expected)


_PRINT_RANDOM_WEIGHT = (
    "import torch; torch.manual_seed(int(__import__('sys').argv[1]));"
    "from perceptual_loss import FeatureExtractor;"
    "fx = FeatureExtractor('vgg11', layers=('relu2_1',), weights=None);"
    "print(float(fx.body[3].weight.double().sum()), float(fx.body[3].weight[0, 0, 0, 0]))"
)


def test_random_weights_are_the_same_in_separate_processes():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH",
                                                                                 "")])}
    outputs = []
    for user_seed in ("1", "2"):  # a different global seed in each process changes nothing
        done = run_group([sys.executable, "-c", _PRINT_RANDOM_WEIGHT, user_seed], timeout=120,
                         env=env)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.strip())
    here = FeatureExtractor("vgg11", layers=("relu2_1",), weights=None).body[3].weight
    assert outputs[0] == outputs[1]
    assert outputs[0] == f"{float(here.double().sum())} {float(here[0, 0, 0, 0])}"
