"""Keras front end: checks inside compiled steps, cached targets, SSIM, mixed precision, gradients.

Backend-agnostic, like ``test_keras.py``: collected here on torch, and run on JAX and
TensorFlow in their own interpreters by ``test_keras_jax.py`` and ``test_keras_tf.py``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("keras") is None or importlib.util.find_spec("h5py") is None:
    pytest.skip('the keras extra is not installed: pip install "perceptual-loss[keras]"',
                allow_module_level=True)
os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import torch  # noqa: E402

from keras_helpers import (  # noqa: E402
    BACKEND,
    images,
    input_gradient,
    nchw,
    random_trunk_file,
    to_numpy,
)
from perceptual_loss import PerceptualLoss as TorchPerceptualLoss  # noqa: E402
from perceptual_loss.backbones import get_backbone  # noqa: E402
from perceptual_loss.keras import FeatureExtractor, PerceptualLoss  # noqa: E402
from processes import run_group  # noqa: E402

ops = keras.ops
# Input gradients of the Keras loss against the PyTorch loss's, in float32: at most this
# fraction of the gradient's largest magnitude, anywhere and on average (see docs/keras.md,
# "Gradients": rounding decides the branch at ReLU, max-pool and L1 kinks; in float64 the two
# agree to GRADIENT_FLOAT64).
GRADIENT_MAX, GRADIENT_MEAN, GRADIENT_FLOAT64 = 1e-2, 2e-4, 1e-9


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_trunk_file(tmp_path_factory.mktemp("weights") / "vgg11_random.pth")


def small_model(size: int = 16) -> keras.Model:
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="sigmoid")(x))


class CountSteps(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1


# ---------------------------------------------------------------------- values in compiled steps
def test_compiled_fit_on_0_255_data_fails_at_the_first_step(checkpoint: Path) -> None:
    """The article's mistake: 8-bit targets with the default input_range=(0, 1)."""
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=checkpoint, pixel_mse=1.0)
    model = small_model()
    model.compile(optimizer="adam", loss=loss)  # jit-compiled on JAX, tf.function on TF
    x = images((4, 16, 16, 3), 0)
    counter = CountSteps()
    with pytest.raises(Exception, match=r"y_true has values (in \[.*, 25\d|outside input_range)"):
        model.fit(x, x * 255.0, batch_size=4, epochs=3, verbose=0, callbacks=[counter])
    assert counter.steps == 0


def linear_head_model(size: int = 16) -> keras.Model:
    """EDSR-style: the last layer is linear, and its bias starts at 1.02 so outputs overshoot."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(
        3, 3, padding="same", kernel_initializer=keras.initializers.RandomNormal(0.0, 0.05, 0),
        bias_initializer=keras.initializers.Constant(1.02))(x)
    return keras.Model(inputs, outputs)


def test_compiled_fit_trains_a_linear_head_whose_outputs_leave_the_range(
        checkpoint: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=checkpoint, pixel_mse=1.0)
    model = linear_head_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)  # jit / tf.function
    x = images((4, 16, 16, 3), 3)
    assert to_numpy(model.predict(x, verbose=0)).max() > 1.01  # the outputs really overshoot
    counter = CountSteps()
    history = model.fit(x, x, batch_size=2, epochs=6, verbose=0, callbacks=[counter])
    assert counter.steps == 12
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_a_model_compiled_with_the_loss_saves_and_loads_in_a_fresh_process(
        checkpoint: Path, tmp_path: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=checkpoint, pixel_mse=1.0)
    model = linear_head_model()
    model.compile(optimizer="adam", loss=loss)
    x = images((2, 16, 16, 3), 4)
    model.fit(x, x, batch_size=2, epochs=1, verbose=0)
    expected = float(to_numpy(model.loss(x, model(x))))
    path = tmp_path / "linear_head.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import numpy as np, keras, perceptual_loss.keras\n"
        f"model = keras.saving.load_model({str(path)!r})\n"
        f"x = np.load({str(tmp_path / 'x.npy')!r})\n"
        "print(float(keras.ops.convert_to_numpy(model.loss(x, model(x)))))\n")
    result = run_group([sys.executable, "-c", script], timeout=300, env={
        **os.environ, "KERAS_BACKEND": BACKEND, "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-5)


def test_compiled_steps_catch_nan_in_the_prediction(checkpoint: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=checkpoint)
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Lambda(lambda t: t * ops.log(t - 2.0))(inputs)  # log of < 0: NaN
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=loss)
    x = images((2, 16, 16, 3), 1)
    with pytest.raises(Exception, match=r"y_pred (contains NaN|has values outside)"):
        model.evaluate(x, x, verbose=0)


def test_check_values_false_lets_compiled_steps_run(checkpoint: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=checkpoint, check_values=False)
    model = small_model()
    model.compile(optimizer="adam", loss=loss)
    x = images((4, 16, 16, 3), 2)
    history = model.fit(x, x * 255.0, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="XLA steps of TensorFlow only")
def test_xla_compiled_tensorflow_steps_warn_that_they_cannot_check(checkpoint: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=checkpoint)
    model = small_model()
    model.compile(optimizer="adam", loss=loss, jit_compile=True)
    x = images((2, 16, 16, 3), 3)
    with pytest.warns(RuntimeWarning, match=r"cannot run inside an XLA-compiled.*jit_compile"):
        model.fit(x, x, epochs=1, verbose=0)


# ---------------------------------------------------------------------- cached targets
TARGET_OPTIONS = dict(layers=("relu1_1", "relu2_1"), style_layers=("relu1_1",), pixel_mse=1.0,
                      ssim_weight=0.5, tv_weight=0.1)


@pytest.mark.parametrize("batch", [1, 2])
def test_set_target_equals_pytorch_and_ignores_y_true(checkpoint: Path, batch: int) -> None:
    target, y_pred = images((batch, 16, 16, 3), 4), images((2, 16, 16, 3), 5)
    keras_loss = PerceptualLoss("vgg11", weights=checkpoint, reduction="none", **TARGET_OPTIONS)
    torch_loss = TorchPerceptualLoss("vgg11", weights=checkpoint, reduction="none",
                                     **TARGET_OPTIONS)
    keras_loss.set_target(target)
    torch_loss.set_target(nchw(target))
    expected = torch_loss(nchw(y_pred)).detach().numpy()
    np.testing.assert_allclose(to_numpy(keras_loss(None, y_pred)), expected, rtol=1e-5)
    unrelated = images((2, 16, 16, 3), 6)
    np.testing.assert_allclose(to_numpy(keras_loss(unrelated, y_pred)), expected, rtol=1e-5)
    parts = keras_loss.compute_parts(None, y_pred)
    np.testing.assert_allclose(sum(to_numpy(v) for v in parts.values()), expected, rtol=1e-5)

    # One rule on both front ends: the cached target is the target. Keras must pass y_true and
    # ignores it; the PyTorch loss refuses a second target rather than ignore it.
    with pytest.raises(ValueError, match=r"a target is cached with set_target"):
        torch_loss(nchw(y_pred), nchw(unrelated))
    keras_loss.clear_target()
    torch_loss.clear_target()
    np.testing.assert_allclose(
        to_numpy(keras_loss(unrelated, y_pred)),
        torch_loss(nchw(y_pred), nchw(unrelated)).detach().numpy(), rtol=1e-5)


def test_a_cached_target_is_used_by_compiled_steps(checkpoint: Path) -> None:
    """Compiled steps hold the target they were traced with: compile again after a change."""
    loss = PerceptualLoss("vgg11", layers=("relu1_1", "relu2_1"), weights=checkpoint,
                          pixel_mse=1.0)
    model = small_model()
    x = images((2, 16, 16, 3), 7)
    for seed in (8, 9):
        loss.set_target(images((1, 16, 16, 3), seed))
        model.compile(optimizer="adam", loss=loss)
        eager = float(to_numpy(loss(None, model.predict(x, verbose=0))))
        np.testing.assert_allclose(model.evaluate(x, x, batch_size=2, verbose=0), eager,
                                   rtol=1e-5)
    history = model.fit(x, x, batch_size=2, epochs=2, verbose=0)  # y only sets the length
    assert np.all(np.isfinite(history.history["loss"]))


def test_a_cached_style_target_is_used_by_compiled_steps(checkpoint: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("relu2_1",), style_layers=("relu1_1", "relu2_1"),
                          style_weight=10.0, weights=checkpoint)
    loss.set_style_target(images((1, 24, 20, 3), 10))
    model = small_model()
    model.compile(optimizer="adam", loss=loss)
    x = images((2, 16, 16, 3), 11)
    eager = float(to_numpy(loss(x, model.predict(x, verbose=0))))
    np.testing.assert_allclose(model.evaluate(x, x, batch_size=2, verbose=0), eager, rtol=1e-5)


def test_cached_target_errors_say_what_to_do(checkpoint: Path) -> None:
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=checkpoint)
    y_pred = images((2, 16, 16, 3), 12)
    with pytest.raises(ValueError, match=r"y_true is None.*set_target"):
        loss(None, y_pred)
    loss.set_target(images((1, 12, 12, 3), 13))
    with pytest.raises(ValueError, match=r"cached target has shape \(1, 12, 12, 3\).*clear_target"):
        loss(None, y_pred)
    with pytest.raises(ValueError, match=r"target has values in \[0, 255\]"):
        loss.set_target(np.concatenate([np.zeros((1, 16, 8, 3)), np.full((1, 16, 8, 3), 255.0)],
                                       axis=2).astype("float32"))


# ---------------------------------------------------------------------- SSIM
@pytest.mark.skipif(importlib.util.find_spec("pytorch_msssim") is None,
                    reason="pytorch-msssim not installed (the reference)")
@pytest.mark.parametrize("input_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_ssim_term_equals_pytorch_msssim(input_range: tuple[float, float]) -> None:
    from pytorch_msssim import ssim as reference_ssim

    low, high = input_range
    y_true = images((2, 24, 20, 3), 14, low, high)
    y_pred = 0.5 * y_true + 0.5 * images((2, 24, 20, 3), 15, low, high)
    loss = PerceptualLoss(layers=(), weights=None, ssim_weight=1.0, reduction="none",
                          input_range=input_range)
    got = 1.0 - to_numpy(loss(y_true, y_pred))
    to01 = lambda a: nchw(((a - low) / (high - low)).astype("float32"))  # noqa: E731
    expected = reference_ssim(to01(y_pred), to01(y_true), data_range=1.0,
                              size_average=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert float(expected.max()) < 0.9  # a real difference, not two identical images


# ---------------------------------------------------------------------- mixed precision
@pytest.fixture
def mixed_float16() -> Iterator[None]:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.fixture(scope="module")
def loud_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VGG11 whose first convolution is scaled up: activations ~100, fine in float16, but
    their Gram matrices and squared norms (sums of 10^4-sized products) overflow float16."""
    torch.manual_seed(0)
    trunk = get_backbone("vgg11").build_features()
    with torch.no_grad():
        trunk[0].weight.mul_(60.0)
        trunk[0].bias.mul_(60.0)
    path = tmp_path_factory.mktemp("weights") / "vgg11_loud.pth"
    torch.save(trunk.state_dict(), path)
    return path


OPTIONS_16 = dict(layers=("relu1_1", "relu2_1"), style_layers=("relu1_1", "relu2_1"),
                  normalize_features=True, reduction="none")


@pytest.fixture(scope="module")
def full_precision_value(loud_checkpoint: Path) -> np.ndarray:
    loss = PerceptualLoss("vgg11", weights=loud_checkpoint, **OPTIONS_16)
    return to_numpy(loss(images((2, 16, 16, 3), 16), images((2, 16, 16, 3), 17)))


def test_mixed_float16_grams_and_norms_are_float32(loud_checkpoint: Path,
                                                   full_precision_value: np.ndarray,
                                                   mixed_float16: None) -> None:
    y_true, y_pred = images((2, 16, 16, 3), 16), images((2, 16, 16, 3), 17)
    features = FeatureExtractor("vgg11", layers=("relu1_1",), weights=loud_checkpoint)(
        y_pred)["relu1_1"]
    mixed_loss = PerceptualLoss("vgg11", weights=loud_checkpoint, **OPTIONS_16)
    mixed = to_numpy(mixed_loss(y_true, y_pred))
    parts = {k: to_numpy(v) for k, v in mixed_loss.compute_parts(y_true, y_pred).items()}

    # The backbone ran in float16, and a float16 Gram of its output would overflow ...
    assert keras.backend.standardize_dtype(features.dtype) == "float16"
    assert 50 < float(np.abs(to_numpy(features)).max()) < 65504
    flat = ops.reshape(features, (2, -1, features.shape[-1]))
    naive = to_numpy(ops.matmul(ops.transpose(flat, (0, 2, 1)), flat))
    assert not np.all(np.isfinite(naive))
    # ... but the loss's Grams and norms are float32: finite and equal to the float32 loss.
    assert all(np.all(np.isfinite(v)) for v in parts.values())
    np.testing.assert_allclose(mixed, full_precision_value, rtol=1e-3)


# ---------------------------------------------------------------------- gradients
def _gradients(checkpoint: Path, dtype: str, **options: object) -> tuple[np.ndarray, np.ndarray]:
    # reduction="sum": Keras' own "mean" divides in float32 on the torch and JAX backends, even
    # for float64 losses (as do their matmuls), which would hide what this compares.
    options = dict(layers=("relu1_1", "relu2_1", "relu3_2", "relu4_2"), reduction="sum",
                   **options)
    y_true, y_pred = images((2, 32, 32, 3), 18, dtype=dtype), images((2, 32, 32, 3), 19,
                                                                     dtype=dtype)
    keras_loss = PerceptualLoss("vgg11", weights=checkpoint, **options)
    _, got = input_gradient(lambda p: keras_loss(y_true, p), y_pred)
    torch_loss = TorchPerceptualLoss("vgg11", weights=checkpoint, **options).to(
        getattr(torch, dtype))
    prediction = nchw(y_pred).clone().requires_grad_(True)
    torch_loss(prediction, nchw(y_true)).backward()
    return got, prediction.grad.permute(0, 2, 3, 1).numpy()


def test_input_gradients_equal_pytorch_within_the_stated_bound(checkpoint: Path) -> None:
    got, expected = _gradients(checkpoint, "float32", style_layers=("relu2_1",))
    scale = float(np.abs(expected).max())
    difference = np.abs(got - expected)
    assert float(difference.max()) <= GRADIENT_MAX * scale, difference.max() / scale
    assert float(difference.mean()) <= GRADIENT_MEAN * scale, difference.mean() / scale


@pytest.fixture
def float64() -> Iterator[None]:
    previous = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # layers follow the policy, once one is set
    context = None
    if BACKEND == "jax":
        import jax

        context = jax.enable_x64(True)
        context.__enter__()
    try:
        yield
    finally:
        if context is not None:
            context.__exit__(None, None, None)
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(previous)


def test_input_gradients_equal_pytorch_in_float64(checkpoint: Path, float64: None) -> None:
    """The maths is the same: without float32 rounding the gradients agree to 1e-9."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, expected = _gradients(checkpoint, "float64")
    assert got.dtype == np.float64
    scale = float(np.abs(expected).max())
    assert float(np.abs(got - expected).max()) <= GRADIENT_FLOAT64 * scale
