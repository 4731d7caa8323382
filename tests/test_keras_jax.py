"""The Keras tests on the JAX backend, in their own interpreter (skipped without JAX).

The backend is fixed when Keras is first imported, so the backend-agnostic Keras test files
(``test_keras.py``, ``test_keras_formats.py``, ``test_keras_numerics.py``) run again in a
fresh pytest process with ``KERAS_BACKEND=jax``: values against the PyTorch loss, jit-compiled
``fit``, range checks inside compiled steps (``jax.debug.callback``), cached targets, SSIM,
mixed precision and the gradient bound. Install JAX with
``bash scripts/install_keras_backends.sh``.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="Keras not installed"),
    pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                       reason="JAX not installed (bash scripts/install_keras_backends.sh)"),
]


def test_keras_tests_pass_on_jax() -> None:
    from keras_helpers import run_keras_tests

    output = run_keras_tests("jax")
    assert " passed" in output and "no tests ran" not in output
