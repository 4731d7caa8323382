"""Keras front end: values equal the PyTorch loss, training works, errors say how to fix them.

Backend-agnostic: collected here on the torch backend, and run again on JAX and TensorFlow in
their own interpreters by ``test_keras_jax.py`` and ``test_keras_tf.py``. Weights are written
by the tests themselves: a random torchvision-layout checkpoint (``torch.save``) and a random
Keras-layout "notop" HDF5 file (``h5py``). No network.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

# Skip only where the extra is absent: a Keras that is installed but fails to import (e.g. a
# missing backend) must fail these tests, not skip them.
if importlib.util.find_spec("keras") is None or importlib.util.find_spec("h5py") is None:
    pytest.skip('the keras extra is not installed: pip install "perceptual-loss[keras]"',
                allow_module_level=True)
os.environ.setdefault("KERAS_BACKEND", "torch")  # other backends: test_keras_jax/_tf.py

import keras  # noqa: E402
import torch  # noqa: E402

from keras_helpers import (  # noqa: E402
    BACKEND,
    images,
    input_gradient,
    nchw,
    random_trunk_file,
    to_numpy,
    write_legacy_vgg16_h5,
)
from perceptual_loss import OutOfRangeWarning  # noqa: E402
from perceptual_loss import PerceptualLoss as TorchPerceptualLoss  # noqa: E402
from perceptual_loss import gram_matrix as torch_gram_matrix  # noqa: E402
from perceptual_loss.backbones import get_backbone  # noqa: E402
from perceptual_loss.keras import (  # noqa: E402
    FeatureExtractor,
    PerceptualLoss,
    build_backbone,
    gram_matrix,
    total_variation,
)
from perceptual_loss.weights import WeightsNotFoundError  # noqa: E402

ops = keras.ops
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "keras_unet.py"


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def vgg11_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random VGG11 trunk saved as a torchvision-layout state dict."""
    return random_trunk_file(tmp_path_factory.mktemp("weights") / "vgg11_random.pth")


@pytest.fixture(scope="module")
def vgg16_keras_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random VGG16 "notop" file in the Keras Applications HDF5 layout (HWIO kernels)."""
    return write_legacy_vgg16_h5(tmp_path_factory.mktemp("weights") / "vgg16_random_notop.h5")


@pytest.fixture
def offline_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No weights anywhere and no downloads."""
    for variable, folder in (("TORCH_HOME", "torch"), ("KERAS_HOME", "keras"),
                             ("PERCEPTUAL_LOSS_WEIGHTS_DIR", "weights")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    return tmp_path


def test_runs_on_the_backend_it_was_started_with() -> None:
    assert keras.backend.backend() == os.environ.get("KERAS_BACKEND", "torch") == BACKEND


# ---------------------------------------------------------------------- Keras == PyTorch
PARITY_CASES = {
    "relu-taps-l1": dict(layers=("relu1_1", "block2_conv1")),
    "pre-activation-charbonnier-style-pixel": dict(
        layers=("conv2_1", "block3_conv1"), criterion="charbonnier",
        layer_weights={"conv2_1": 2.0, "relu3_1": 0.5}, style_layers=("relu1_1", "pool2"),
        style_weight=3.0, pixel_mse=1.0, pixel_l1=0.5, tv_weight=0.1),
    "mse-minus1-1-resize-none-normalized": dict(
        layers=("relu1_1", "relu2_1"), criterion="mse", input_range=(-1.0, 1.0),
        resize=(20, 12), reduction="none", normalize_features=True, feature_weight=0.7),
    "0-255-caffe-sum-style-only": dict(
        layers=(), style_layers=("block1_conv1", "relu2_1"), style_layer_weights=[1.0, 4.0],
        style_criterion="mse", input_range=(0.0, 255.0), normalization="caffe",
        reduction="sum"),
}


@pytest.mark.parametrize("options", PARITY_CASES.values(), ids=PARITY_CASES.keys())
def test_value_equals_pytorch_loss_on_the_same_checkpoint(vgg11_checkpoint: Path,
                                                          options: dict) -> None:
    low, high = options.get("input_range", (0.0, 1.0))
    y_true = images((2, 16, 18, 3), seed=2, low=low, high=high)
    y_pred = images((2, 16, 18, 3), seed=3, low=low, high=high)

    keras_loss = PerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)
    torch_loss = TorchPerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)
    got = to_numpy(keras_loss(y_true, y_pred))
    expected = torch_loss(nchw(y_pred), nchw(y_true)).detach().numpy()

    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert float(np.min(got)) > 0.0


def test_grayscale_and_per_channel_equal_pytorch(vgg11_checkpoint: Path) -> None:
    gray_true, gray_pred = images((2, 16, 16, 1), 4), images((2, 16, 16, 1), 5)
    multi_true, multi_pred = images((2, 16, 16, 2), 6), images((2, 16, 16, 2), 7)
    for options, (y_true, y_pred) in (
        (dict(layers=("relu2_1",), style_layers=("relu1_1",)), (gray_true, gray_pred)),
        (dict(layers=("relu2_1",), style_layers=("relu1_1",), channel_mode="per_channel",
              reduction="none"), (multi_true, multi_pred)),
    ):
        keras_loss = PerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)
        torch_loss = TorchPerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)
        np.testing.assert_allclose(
            to_numpy(keras_loss(y_true, y_pred)),
            torch_loss(nchw(y_pred), nchw(y_true)).detach().numpy(), rtol=1e-5)


def test_batch_norm_backbone_equals_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    trunk = get_backbone("vgg11_bn").build_features()
    for module in trunk.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # statistics far from the identity
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    checkpoint = tmp_path / "vgg11_bn_random.pth"
    torch.save(trunk.state_dict(), checkpoint)
    options = dict(layers=("bn1_1", "relu2_1"), style_layers=("pool1",), criterion="mse")
    y_true, y_pred = images((2, 16, 16, 3), 40), images((2, 16, 16, 3), 41)
    keras_loss = PerceptualLoss("vgg11_bn", weights=checkpoint, **options)
    torch_loss = TorchPerceptualLoss("vgg11_bn", weights=checkpoint, **options)
    np.testing.assert_allclose(to_numpy(keras_loss(y_true, y_pred)),
                               torch_loss(nchw(y_pred), nchw(y_true)).detach().numpy(),
                               rtol=1e-5)


def test_keras_h5_weights_equal_pytorch_loss_with_caffe_preprocessing(
        vgg16_keras_h5: Path) -> None:
    options = dict(layers=("block1_conv2", "relu2_2"), style_layers=("conv2_1",),
                   pixel_mse=1.0)
    keras_loss = PerceptualLoss("vgg16", weights=vgg16_keras_h5, **options)
    torch_loss = TorchPerceptualLoss("vgg16", weights=vgg16_keras_h5, **options)
    assert keras_loss.extractor.normalization.name == "caffe"
    y_true, y_pred = images((2, 16, 16, 3), 8), images((2, 16, 16, 3), 9)
    np.testing.assert_allclose(to_numpy(keras_loss(y_true, y_pred)),
                               torch_loss(nchw(y_pred), nchw(y_true)).detach().numpy(),
                               rtol=1e-5)


def test_backbone_features_equal_pytorch_trunk(vgg11_checkpoint: Path) -> None:
    model, normalization = build_backbone("vgg11", vgg11_checkpoint,
                                          ["conv1_1", "block2_pool", "relu3_2"])
    assert normalization == "imagenet"
    assert set(model.output.keys()) == {"conv1_1", "pool2", "relu3_2"}
    assert not model.trainable_weights and model.non_trainable_weights

    trunk = get_backbone("vgg11").build_features()
    trunk.load_state_dict(torch.load(vgg11_checkpoint, weights_only=True))
    names = get_backbone("vgg11").layer_names
    x = images((1, 12, 10, 3), 11)
    outputs = model(x)
    with torch.no_grad():
        h = nchw(x)
        for name, module in zip(names[: names.index("relu3_2") + 1], trunk, strict=False):
            h = module(h.clone())
            if name in outputs:
                np.testing.assert_allclose(to_numpy(outputs[name]),
                                           h.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6)


def test_gram_matrix_and_total_variation_match_pytorch() -> None:
    x = images((2, 5, 4, 3), 12)
    np.testing.assert_allclose(to_numpy(gram_matrix(x)),
                               torch_gram_matrix(nchw(x)).numpy(), rtol=1e-6)
    dy = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2, 3))
    dx = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(to_numpy(total_variation(x)), dy + dx, rtol=1e-6)


@pytest.mark.parametrize("module", ["perceptual_loss.keras.functional",
                                    "perceptual_loss.keras.extractor",
                                    "perceptual_loss.keras.losses"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# ---------------------------------------------------------------------- gradients
def test_gradient_reaches_prediction_only_and_equals_pytorch(vgg11_checkpoint: Path) -> None:
    """Input gradients agree with the PyTorch loss; ``test_keras_numerics`` states the bound."""
    options = dict(layers=("relu1_1", "relu2_1"), style_layers=("relu1_1",), pixel_mse=1.0)
    y_true, y_pred = images((2, 16, 16, 3), 13), images((2, 16, 16, 3), 14)

    keras_loss = PerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)
    _, grad_pred = input_gradient(lambda p: keras_loss(y_true, p), y_pred)
    _, grad_true = input_gradient(lambda t: keras_loss(t, y_pred), y_true)

    torch_loss = TorchPerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)
    torch_pred = nchw(y_pred).clone().requires_grad_(True)
    torch_loss(torch_pred, nchw(y_true)).backward()

    assert not np.any(grad_true)  # the target runs without gradient
    assert float(np.abs(grad_pred).max()) > 0
    np.testing.assert_allclose(grad_pred, torch_pred.grad.permute(0, 2, 3, 1).numpy(),
                               rtol=1e-4, atol=1e-4 * float(np.abs(grad_pred).max()))
    assert all(not w.trainable for w in keras_loss.extractor.model.weights)


# ---------------------------------------------------------------------- training in Keras
def small_image_model(channels: int = 3) -> keras.Model:
    inputs = keras.Input((16, 16, channels))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(channels, 3, padding="same", activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def test_a_few_fit_steps_lower_the_loss_and_leave_vgg_frozen(vgg11_checkpoint: Path) -> None:
    keras.utils.set_random_seed(0)
    loss = PerceptualLoss("vgg11", layers=("block1_conv1", "block2_conv1"),
                          weights=vgg11_checkpoint, pixel_mse=1.0)
    vgg_before = [to_numpy(w).copy() for w in loss.extractor.model.weights]
    model = small_image_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    y = images((4, 16, 16, 3), 15)
    x = np.clip(y + 0.1 * np.random.default_rng(16).standard_normal(y.shape), 0, 1
                ).astype(np.float32)

    before = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, batch_size=4, epochs=8, verbose=0)
    after = model.evaluate(x, y, verbose=0)

    assert after < 0.9 * before, (before, history.history["loss"], after)
    for old, new in zip(vgg_before, loss.extractor.model.weights, strict=True):
        np.testing.assert_array_equal(old, to_numpy(new))
    # The trained model is the plain image model: no VGG inside it.
    assert model.count_params() == small_image_model().count_params()


def test_article_case_multi_layer_plus_pixel_mse_in_one_compile(vgg16_keras_h5: Path) -> None:
    """The article's layers [2, 9, 18] by name, plus the pixel MSE it could not add."""
    keras.utils.set_random_seed(1)
    loss = PerceptualLoss("vgg16", layers=("block1_conv2", "block3_conv3", "block5_pool"),
                          weights=vgg16_keras_h5, pixel_mse=1.0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(3, 1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=loss)

    x_train, y_train = images((2, 32, 32, 3), 17), images((2, 32, 32, 3), 18)
    model.fit(x_train, y_train, batch_size=2, epochs=1, verbose=0)
    predicted = model.predict(x_train, verbose=0)
    assert predicted.shape == (2, 32, 32, 3)

    # Keras' value equals the PyTorch feature loss plus a numpy MSE on the same images.
    torch_features = TorchPerceptualLoss("vgg16", layers=loss.layers, weights=vgg16_keras_h5)
    expected = float(torch_features(nchw(predicted), nchw(y_train))) + float(
        np.mean((predicted - y_train) ** 2))
    np.testing.assert_allclose(model.evaluate(x_train, y_train, verbose=0), expected,
                               rtol=1e-5)
    assert loss.layers == ("relu1_2", "relu3_3", "pool5")


def test_reduction_none_and_sample_weights(vgg11_checkpoint: Path) -> None:
    y_true, y_pred = images((3, 16, 16, 3), 19), images((3, 16, 16, 3), 20)
    per_sample = to_numpy(PerceptualLoss("vgg11", layers=("relu1_1",), weights=vgg11_checkpoint,
                                         reduction="none")(y_true, y_pred))
    assert per_sample.shape == (3,)
    for reduction, expected in (("mean", per_sample.mean()), ("sum", per_sample.sum()),
                                ("sum_over_batch_size", per_sample.mean())):
        loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=vgg11_checkpoint,
                              reduction=reduction)
        np.testing.assert_allclose(to_numpy(loss(y_true, y_pred)), expected, rtol=1e-6)
    weights = np.array([1.0, 0.0, 2.0], np.float32)
    np.testing.assert_allclose(to_numpy(loss(y_true, y_pred, sample_weight=weights)),
                               (per_sample * weights).sum() / 3, rtol=1e-6)


def test_identical_images_give_zero(vgg11_checkpoint: Path) -> None:
    y = images((2, 16, 16, 3), 21)
    loss = PerceptualLoss("vgg11", layers=("relu1_1", "relu2_1"), weights=vgg11_checkpoint,
                          style_layers=("relu1_1",), pixel_l1=1.0)
    assert float(to_numpy(loss(y, y))) == 0.0


def test_cached_style_target_equals_pytorch(vgg11_checkpoint: Path) -> None:
    options = dict(layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"), style_weight=5.0)
    style = images((1, 24, 20, 3), 22)
    content, y_pred = images((2, 16, 16, 3), 23), images((2, 16, 16, 3), 24)
    keras_loss = PerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)
    torch_loss = TorchPerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)
    keras_loss.set_style_target(style)
    torch_loss.set_style_target(nchw(style))
    np.testing.assert_allclose(to_numpy(keras_loss(content, y_pred)),
                               torch_loss(nchw(y_pred), nchw(content)).detach().numpy(),
                               rtol=1e-5)
    keras_loss.clear_style_target()
    torch_loss.clear_targets()
    np.testing.assert_allclose(to_numpy(keras_loss(content, y_pred)),
                               torch_loss(nchw(y_pred), nchw(content)).detach().numpy(),
                               rtol=1e-5)


def test_compute_parts_add_up_and_match_pytorch_parts(vgg11_checkpoint: Path) -> None:
    options = dict(layers=("relu1_1", "relu2_1"), style_layers=("pool1",), pixel_mse=2.0,
                   tv_weight=0.5)
    y_true, y_pred = images((2, 16, 16, 3), 25), images((2, 16, 16, 3), 26)
    keras_loss = PerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)
    parts = {k: float(to_numpy(v)) for k, v in keras_loss.compute_parts(y_true, y_pred).items()}
    _, torch_parts = TorchPerceptualLoss("vgg11", weights=vgg11_checkpoint, **options)(
        nchw(y_pred), nchw(y_true), return_parts=True)
    assert list(parts) == list(torch_parts)
    for name, value in torch_parts.items():
        np.testing.assert_allclose(parts[name], float(value), rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(sum(parts.values()),
                               float(to_numpy(keras_loss(y_true, y_pred))), rtol=1e-5)


def test_config_round_trip_rebuilds_the_same_loss(vgg11_checkpoint: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("block2_conv1",), weights=vgg11_checkpoint,
                          style_layers=("relu1_1",), layer_weights=[0.5], pixel_l1=0.25,
                          input_range=(-1, 1), reduction="sum", name="vgg_loss")
    config = loss.get_config()
    rebuilt = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(rebuilt, PerceptualLoss)
    assert rebuilt.get_config() == config
    assert rebuilt.name == "vgg_loss" and rebuilt.reduction == "sum"
    y_true, y_pred = images((2, 16, 16, 3), 27, -1, 1), images((2, 16, 16, 3), 28, -1, 1)
    np.testing.assert_allclose(to_numpy(rebuilt(y_true, y_pred)),
                               to_numpy(loss(y_true, y_pred)), rtol=1e-6)


def test_a_saved_model_reloads_with_its_loss(vgg11_checkpoint: Path, tmp_path: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=vgg11_checkpoint, pixel_mse=1.0)
    model = small_image_model()
    model.compile(optimizer="adam", loss=loss)
    x = images((2, 16, 16, 3), 42)
    model.fit(x, x, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.loss, PerceptualLoss)
    np.testing.assert_allclose(reloaded.evaluate(x, x, verbose=0), model.evaluate(x, x, verbose=0),
                               rtol=1e-6)


# ---------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def small_loss(vgg11_checkpoint: Path) -> PerceptualLoss:
    return PerceptualLoss("vgg11", layers=("relu2_1",), weights=vgg11_checkpoint)


def test_channels_first_input_is_refused_with_the_fix(small_loss: PerceptualLoss) -> None:
    x = images((2, 3, 16, 16), 29)
    with pytest.raises(ValueError, match=r"channels-first.*keras\.ops\.transpose"):
        small_loss(x, x)


def test_wrong_channel_count_and_rank_are_refused(small_loss: PerceptualLoss) -> None:
    four = images((2, 16, 16, 4), 30)
    with pytest.raises(ValueError, match=r"4 channels.*channel_mode='per_channel'"):
        small_loss(four, four)
    single = images((16, 16, 3), 31)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\).*batch axis"):
        small_loss(single, single)
    with pytest.raises(ValueError, match="same shape"):
        small_loss(images((2, 16, 16, 3), 32), images((2, 16, 12, 3), 33))
    tiny = images((1, 1, 1, 3), 34)
    with pytest.raises(ValueError, match=r"1x1 is too small for layer 'relu2_1'.*at least 2x2"):
        small_loss(tiny, tiny)


def test_targets_outside_the_declared_range_are_refused_predictions_only_warned_about(
        small_loss: PerceptualLoss) -> None:
    good = images((1, 16, 16, 3), 35)
    good[0, 0, 0, 0], good[0, -1, -1, -1] = 0.0, 1.0
    with pytest.raises(ValueError, match=r"y_true has values in \[0, 255\] but "
                                         r"input_range=\(0, 1\) was declared"):
        small_loss(good * 255, good)
    with pytest.raises(ValueError, match=r"y_true has values in \[-1, 1\] but "
                                         r"input_range=\(0, 1\).*input_range=\(-1, 1\)"):
        small_loss(good * 2 - 1, good)
    # The model's output is never refused for its range: one warning when it looks like
    # another convention, none for an overshoot.
    with pytest.warns(OutOfRangeWarning, match=r"y_pred has values in \[0, 255\]"):
        assert np.isfinite(to_numpy(small_loss(good, good * 255)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        small_loss(good, good * 255)  # given once
        small_loss(good, good * 1.2 - 0.1)
    bad = good.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="y_pred contains NaN"):
        small_loss(good, bad)


def test_value_check_can_be_switched_off(vgg11_checkpoint: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=vgg11_checkpoint,
                          check_values=False)
    x = images((1, 16, 16, 3), 36)
    assert np.isfinite(to_numpy(loss(x, x * 2)))


def test_integer_images_are_refused_by_the_extractor(vgg11_checkpoint: Path) -> None:
    extractor = FeatureExtractor("vgg11", layers=("relu1_1",), weights=vgg11_checkpoint)
    with pytest.raises(TypeError, match=r"dtype uint8.*cast"):
        extractor(np.zeros((1, 16, 16, 3), np.uint8))


def test_bad_options_are_refused(vgg11_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown layer 'block9_conv1'.*Valid layers"):
        PerceptualLoss("vgg11", layers=("block9_conv1",), weights=vgg11_checkpoint)
    with pytest.raises(ValueError, match="reduction must be"):
        PerceptualLoss("vgg11", layers=("relu1_1",), weights=vgg11_checkpoint,
                       reduction="average")
    with pytest.raises(ValueError, match="unknown criterion"):
        PerceptualLoss("vgg11", layers=("relu1_1",), weights=vgg11_checkpoint, criterion="l3")
    with pytest.raises(ValueError, match=r"input_range must have low < high"):
        PerceptualLoss("vgg11", layers=("relu1_1",), weights=vgg11_checkpoint,
                       input_range=(1, 0))


def test_missing_keras_weights_name_the_file_and_never_go_random(offline_home: Path) -> None:
    with pytest.raises(WeightsNotFoundError,
                       match=r"vgg16_weights_tf_dim_ordering_tf_kernels_notop\.h5"):
        PerceptualLoss("vgg16", layers=("block1_conv2",), weights="keras-imagenet")
    with pytest.raises(WeightsNotFoundError, match=r"vgg16-397923af\.pth"):
        PerceptualLoss("vgg16", layers=("block1_conv2",))  # default: torchvision ImageNet
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        PerceptualLoss("vgg16", layers=("block1_conv2",), weights=offline_home / "none.h5")


def test_a_file_in_the_keras_cache_is_found_and_hash_checked(offline_home: Path,
                                                             vgg16_keras_h5: Path) -> None:
    """A file where Keras Applications caches it is picked up, but only if its md5 fits."""
    models = offline_home / "keras" / "models"
    models.mkdir(parents=True)
    (models / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(
        vgg16_keras_h5.read_bytes())
    with pytest.raises(ValueError, match=r"fails its md5 check"):
        PerceptualLoss("vgg16", layers=("block1_conv2",), weights="keras-imagenet")


# ---------------------------------------------------------------------- the example
@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a module
    spec = importlib.util.spec_from_file_location("keras_unet_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "keras_unet_example", module)
    spec.loader.exec_module(module)
    return module


TINY = ["--size", "16", "--pairs", "4", "--test-pairs", "2", "--epochs", "2", "--batch-size",
        "2", "--width", "4", "--depth", "2"]


def test_example_trains_and_predicts_with_tiny_sizes(example, tmp_path: Path) -> None:  # noqa: ANN001
    """The article's workflow end to end: U-Net, feature + pixel MSE, one compile, predict."""
    checkpoint = random_trunk_file(tmp_path / "vgg16_random.pth", "vgg16", seed=3)
    out = tmp_path / "rows.png"
    result = example.main([*TINY, "--layers", "block1_conv2", "relu2_2",
                           "--weights", str(checkpoint), "--out", str(out)])

    assert result["backend"] == BACKEND
    predicted = result["predicted"]
    assert predicted.shape == (2, 16, 16, 3)
    assert 0.0 <= predicted.min() and predicted.max() <= 1.0
    assert set(result["parts"]) == {"content/relu1_2", "content/relu2_2", "pixel/mse"}
    np.testing.assert_allclose(sum(result["parts"].values()), result["loss_after"], rtol=1e-4)
    assert len(result["train_loss"]) == 2 and np.all(np.isfinite(result["train_loss"]))
    assert out.is_file()


def test_example_style_variant_trains_against_a_cached_style(example, tmp_path: Path  # noqa: ANN001
                                                             ) -> None:
    """Style conversion: fit(x, x), the style image's Grams cached once in the loss."""
    checkpoint = random_trunk_file(tmp_path / "vgg16_random.pth", "vgg16", seed=4)
    result = example.main([*TINY, "--task", "style", "--weights", str(checkpoint)])

    assert set(result["parts"]) == {"content/relu3_3", "style/relu1_2", "style/relu2_2",
                                    "style/relu3_3", "style/relu4_3", "tv"}
    assert result["parts"]["style/relu1_2"] > 0
    assert result["predicted"].shape == (2, 16, 16, 3)
    assert np.all(np.isfinite(result["train_loss"]))
    assert result["train_loss"][-1] < result["train_loss"][0]
