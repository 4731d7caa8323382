"""The Keras tests on the TensorFlow backend, in their own interpreter (skipped without it).

The Keras article's users train on TensorFlow: the backend-agnostic Keras test files run again
in a fresh pytest process with ``KERAS_BACKEND=tensorflow`` (tf.function steps, the range
check as a ``tf.debugging.Assert``, the XLA warning, weight files written by Keras, cached
targets, SSIM, mixed precision, the gradient bound), and the examples run end to end on
TensorFlow with tiny sizes. Install TensorFlow with ``bash scripts/install_keras_backends.sh``.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="Keras not installed"),
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                       reason="TensorFlow not installed (bash scripts/install_keras_backends.sh)"),
]


def test_keras_tests_pass_on_tensorflow() -> None:
    from keras_helpers import run_keras_tests

    output = run_keras_tests("tensorflow")
    assert " passed" in output and "no tests ran" not in output
