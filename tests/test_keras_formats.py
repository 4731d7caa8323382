"""Keras weight files written by Keras itself: legacy ``.h5``, ``.weights.h5`` and ``.keras``.

Each file is written here by ``keras.applications.VGG16(include_top=False, weights=None)`` with
seeded random weights, and the features of :class:`perceptual_loss.keras.FeatureExtractor`
loaded from it must equal that model's own features on ``preprocess_input`` output (Caffe
preprocessing, which the extractor applies for Keras files). Files of other networks are
refused with a message that names the file. Backend-agnostic, like ``test_keras.py``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("keras") is None or importlib.util.find_spec("h5py") is None:
    pytest.skip('the keras extra is not installed: pip install "perceptual-loss[keras]"',
                allow_module_level=True)
os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py  # noqa: E402
import keras  # noqa: E402
import torch  # noqa: E402

from keras_helpers import images, nchw, to_numpy, write_legacy_vgg16_h5  # noqa: E402
from perceptual_loss import PerceptualLoss as TorchPerceptualLoss  # noqa: E402
from perceptual_loss._keras_files import is_keras_file, read_keras_h5  # noqa: E402
from perceptual_loss.keras import FeatureExtractor, PerceptualLoss  # noqa: E402
from perceptual_loss.weights import WeightsIntegrityError  # noqa: E402

TAPS = ("block1_conv2", "block3_conv3", "block5_conv3", "block5_pool")
OURS = ("relu1_2", "relu3_3", "relu5_3", "pool5")


def randomize(model: keras.Model, seed: int) -> keras.Model:
    """He-normal kernels and non-zero biases, so that a swapped or missing layer shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            std = np.sqrt(2.0 / np.prod(kernel.shape[:3]))
            layer.set_weights([rng.normal(0.0, std, kernel.shape).astype("float32"),
                               rng.normal(0.0, 0.1, bias.shape).astype("float32")])
    return model


def vgg16_reference(seed: int = 0) -> keras.Model:
    return randomize(keras.applications.VGG16(include_top=False, weights=None), seed)


def reference_features(model: keras.Model, x: np.ndarray,
                       taps: tuple[str, ...] = TAPS) -> list[np.ndarray]:
    """Keras' own features: ``preprocess_input`` (Caffe) on 0-255 images, then the model."""
    tap = keras.Model(model.input, [model.get_layer(name).output for name in taps])
    return [to_numpy(f) for f in tap(keras.applications.vgg16.preprocess_input(x * 255.0))]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One random VGG16 saved by Keras in each format, plus the model's features."""
    folder = tmp_path_factory.mktemp("keras_files")
    model = vgg16_reference(seed=0)
    written = {"weights.h5": folder / "vgg16.weights.h5", "keras": folder / "vgg16.keras",
               "legacy.h5": folder / "vgg16_legacy.h5"}
    model.save_weights(written["weights.h5"])
    model.save(written["keras"])
    model.save(written["legacy.h5"])  # Keras 3 still writes the legacy HDF5 layout
    return written


@pytest.fixture(scope="module")
def expected(files: dict[str, Path]) -> tuple[np.ndarray, list[np.ndarray]]:
    x = images((2, 32, 32, 3), 0)
    model = vgg16_reference(seed=0)
    return x, reference_features(model, x)


def assert_features_equal(weights: Path, x: np.ndarray, reference: list[np.ndarray]) -> None:
    extractor = FeatureExtractor("vgg16", layers=TAPS, weights=weights)
    assert extractor.normalization.name == "caffe"
    got = extractor(x)
    for ours, want in zip(OURS, reference, strict=True):
        np.testing.assert_allclose(to_numpy(got[ours]), want, rtol=1e-5,
                                   atol=1e-5 * float(np.abs(want).max()), err_msg=ours)


@pytest.mark.parametrize("kind", ["weights.h5", "keras", "legacy.h5"])
def test_features_equal_keras_applications_vgg16(files: dict[str, Path], expected: tuple,
                                                 kind: str) -> None:
    x, reference = expected
    assert is_keras_file(files[kind])
    assert list(read_keras_h5(files[kind]))[:2] == ["block1_conv1", "block1_conv2"]
    assert_features_equal(files[kind], x, reference)


def test_hand_written_legacy_notop_file_equals_keras_applications(tmp_path: Path) -> None:
    """The layout of the published Keras Applications file, written with h5py."""
    path = write_legacy_vgg16_h5(tmp_path / "vgg16_notop.h5")
    reference = keras.applications.VGG16(include_top=False, weights=None)
    reference.load_weights(str(path))
    x = images((2, 32, 32, 3), 1)
    assert_features_equal(path, x, reference_features(reference, x))


def test_weights_h5_without_layer_names_loads_in_model_order(files: dict[str, Path],
                                                             expected: tuple,
                                                             tmp_path: Path) -> None:
    """Older Keras 3 files name layers by class only (conv2d, conv2d_1, ..., conv2d_12)."""
    path = tmp_path / "anonymous.weights.h5"
    shutil.copy(files["weights.h5"], path)
    with h5py.File(path, "r+") as h5:
        for group in h5["layers"].values():
            if "vars" in group and "name" in group["vars"].attrs:
                del group["vars"].attrs["name"]
    names = list(read_keras_h5(path))
    assert names[:3] == ["conv2d", "conv2d_1", "conv2d_2"] and names[-1] == "conv2d_12"
    x, reference = expected
    assert_features_equal(path, x, reference)


def test_a_keras_archive_without_suffix_is_recognised_by_content(files: dict[str, Path],
                                                                 expected: tuple,
                                                                 tmp_path: Path) -> None:
    path = tmp_path / "my_vgg_weights"
    shutil.copy(files["keras"], path)
    assert is_keras_file(path)
    torch_file = tmp_path / "torch_checkpoint"
    torch.save({"w": torch.zeros(1)}, torch_file)  # a zip archive too, but not Keras'
    assert not is_keras_file(torch_file)
    x, reference = expected
    assert_features_equal(path, x, reference)


def test_layers_with_other_names_load_in_model_order(tmp_path: Path) -> None:
    """A VGG16 built by hand (default layer names) loads by order, with shape checks."""
    keras.utils.set_random_seed(2)
    layers: list[keras.layers.Layer] = [keras.Input((None, None, 3))]
    for block, (convs, channels) in enumerate(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512),
                                                  strict=True)):
        layers += [keras.layers.Conv2D(channels, 3, padding="same", activation="relu")
                   for _ in range(convs)]
        layers.append(keras.layers.MaxPooling2D(2, name=f"pooling_{block}"))
    model = randomize(keras.Sequential(layers), seed=3)
    path = tmp_path / "hand_built.h5"
    model.save(path)
    assert not any(name.startswith("block") for name in read_keras_h5(path))

    x = images((1, 32, 32, 3), 4)
    reference = to_numpy(model(keras.applications.vgg16.preprocess_input(x * 255.0)))
    got = FeatureExtractor("vgg16", layers=("pool5",), weights=path)(x)["pool5"]
    np.testing.assert_allclose(to_numpy(got), reference, rtol=1e-5,
                               atol=1e-5 * float(np.abs(reference).max()))


def test_loss_from_a_keras_file_equals_the_pytorch_loss(files: dict[str, Path]) -> None:
    options = dict(layers=("block1_conv2", "relu3_3"), style_layers=("conv2_1",),
                   pixel_mse=1.0)
    y_true, y_pred = images((2, 32, 32, 3), 5), images((2, 32, 32, 3), 6)
    keras_loss = PerceptualLoss("vgg16", weights=files["keras"], **options)
    torch_loss = TorchPerceptualLoss("vgg16", weights=files["keras"], **options)
    np.testing.assert_allclose(to_numpy(keras_loss(y_true, y_pred)),
                               torch_loss(nchw(y_pred), nchw(y_true)).detach().numpy(),
                               rtol=1e-5)


def test_a_vgg19_file_is_refused_for_vgg16_naming_the_file(tmp_path: Path) -> None:
    """Its first 13 convolutions have VGG16's names and shapes: only the count tells."""
    path = tmp_path / "vgg19.weights.h5"
    keras.applications.VGG19(include_top=False, weights=None).save_weights(path)
    with pytest.raises(WeightsIntegrityError,
                       match=r"vgg19\.weights\.h5 .*16 convolution layers, vgg16 has 13"):
        FeatureExtractor("vgg16", layers=("relu1_1",), weights=path)


def test_a_file_of_another_network_is_refused_naming_the_file(files: dict[str, Path],
                                                              tmp_path: Path) -> None:
    other = keras.Sequential([keras.Input((None, None, 3)),
                              keras.layers.Conv2D(8, 5, padding="same"),
                              keras.layers.Conv2D(3, 1)])
    path = tmp_path / "denoiser.keras"
    other.save(path)
    with pytest.raises(WeightsIntegrityError,
                       match=r"denoiser\.keras has no layer 'block1_conv1'.*2 convolution layers"):
        FeatureExtractor("vgg16", layers=("relu1_1",), weights=path)
    with pytest.raises(WeightsIntegrityError, match=r"vgg16\.keras .*vgg11"):
        FeatureExtractor("vgg11", layers=("relu1_1",), weights=files["keras"])


def test_broken_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    not_weights = tmp_path / "notes.keras"
    with zipfile.ZipFile(not_weights, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(WeightsIntegrityError, match=r"notes\.keras.*without model\.weights\.h5"):
        FeatureExtractor("vgg16", layers=("relu1_1",), weights=not_weights)
    truncated = tmp_path / "truncated.weights.h5"
    truncated.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(WeightsIntegrityError, match=r"cannot read Keras weights file .*truncated"):
        FeatureExtractor("vgg16", layers=("relu1_1",), weights=truncated)
