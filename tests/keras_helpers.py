"""Helpers shared by the Keras tests: data, weight files and gradients on any Keras backend.

The Keras tests run on every installed backend, each in its own interpreter
(``KERAS_BACKEND`` is fixed when Keras is imported): in this process on torch, and through
``test_keras_jax.py`` / ``test_keras_tf.py`` on JAX and TensorFlow. Import this module only
after ``KERAS_BACKEND`` is set.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import torch  # noqa: E402

from perceptual_loss.backbones import get_backbone  # noqa: E402
from processes import run_group  # noqa: E402

ops = keras.ops
BACKEND = keras.backend.backend()
TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
#: The files that hold the backend-agnostic Keras tests, run once per backend.
KERAS_TEST_FILES = ("test_keras.py", "test_keras_formats.py", "test_keras_numerics.py")


def to_numpy(x: object) -> np.ndarray:
    """A backend tensor (or anything array-like) as a numpy array."""
    return np.asarray(ops.convert_to_numpy(x))


def nchw(x: np.ndarray) -> torch.Tensor:
    """Channels-last numpy batch -> PyTorch (N, C, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def images(shape: tuple[int, ...], seed: int, low: float = 0.0, high: float = 1.0,
           dtype: str = "float32") -> np.ndarray:
    """Uniform random images in ``[low, high)``."""
    rng = np.random.default_rng(seed)
    return (low + (high - low) * rng.random(shape)).astype(dtype)


def random_trunk_file(path: Path, backbone: str = "vgg11", seed: int = 0) -> Path:
    """A random trunk of ``backbone`` saved as a torchvision-layout state dict."""
    torch.manual_seed(seed)
    torch.save(get_backbone(backbone).build_features().state_dict(), path)
    return path


def write_legacy_vgg16_h5(path: Path, seed: int = 1) -> Path:
    """A random VGG16 "notop" file in the Keras Applications HDF5 layout, written with h5py.

    The legacy layout: ``layer_names`` on the root, ``weight_names`` per layer, kernels
    ``(kh, kw, in, out)``, biases ``(out,)``, names ``block{b}_conv{i}`` / ``block{b}_pool``.
    """
    import h5py

    rng = np.random.default_rng(seed)
    config = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    layer_names = ["input_1"]
    with h5py.File(path, "w") as h5:
        h5.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S")
        in_channels = 3
        for block, convs in enumerate(config, start=1):
            for index, out_channels in enumerate(convs, start=1):
                name = f"block{block}_conv{index}"
                group = h5.create_group(name)
                std = np.sqrt(2.0 / (9 * in_channels))
                kernel = rng.normal(0.0, std, (3, 3, in_channels, out_channels))
                bias = rng.normal(0.0, 0.1, out_channels)
                group.create_dataset(f"{name}/kernel:0", data=kernel.astype(np.float32))
                group.create_dataset(f"{name}/bias:0", data=bias.astype(np.float32))
                group.attrs["weight_names"] = [f"{name}/kernel:0".encode(),
                                               f"{name}/bias:0".encode()]
                layer_names.append(name)
                in_channels = out_channels
            pool = f"block{block}_pool"
            h5.create_group(pool).attrs["weight_names"] = np.array([], dtype="S")
            layer_names.append(pool)
        h5.attrs["layer_names"] = [n.encode() for n in layer_names]
    return path


def input_gradient(fn: Callable[[object], object], x: np.ndarray) -> tuple[float, np.ndarray]:
    """``(fn(x), d fn / d x)`` for a scalar-valued ``fn`` of a backend tensor, any backend."""
    if BACKEND == "torch":
        tensor = torch.tensor(x, requires_grad=True)
        value = fn(tensor)
        if value.requires_grad:  # no graph at all: ``x`` does not reach the value
            value.backward()
        grad = tensor.grad
        return float(value), np.zeros_like(x) if grad is None else grad.numpy()
    if BACKEND == "jax":
        import jax

        value, grad = jax.value_and_grad(lambda v: fn(v))(ops.convert_to_tensor(x))
        return float(value), np.asarray(grad)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        tensor = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            value = fn(tensor)
        grad = tape.gradient(value, tensor)
        return float(value), np.zeros_like(x) if grad is None else grad.numpy()
    pytest.skip(f"no gradient helper for the {BACKEND} backend")
    raise AssertionError  # unreachable


def backend_installed(module: str) -> bool:
    """Whether a Keras backend's package imports in a fresh interpreter."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run_keras_tests(backend: str, files: Sequence[str] = KERAS_TEST_FILES, *,
                    timeout: float = 840, extra: Sequence[str] = ()) -> str:
    """Run the backend-agnostic Keras test files under ``backend`` in a fresh interpreter.

    The deadline stays below pytest-timeout's 900 s, so a hung child is killed with its group
    and reported here.

    Returns:
        pytest's output; the calling test fails with its tail when any test fails.
    """
    environment = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
                   "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-o", "addopts=", "-rs", *extra, *(str(TESTS / name) for name in files)]
    result = run_group(command, timeout=timeout, env=environment, cwd=str(TESTS.parent))
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"Keras tests on {backend} failed (exit {result.returncode}):\n"
                    f"{output[-6000:]}")
    return output
