"""The Keras front end on the JAX backend (skipped where JAX is not installed).

The backend is fixed when Keras is first imported, so the checks run in a fresh interpreter
with ``KERAS_BACKEND=jax``. Tiny sizes: JAX compiles the train step once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from processes import run_group

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                       reason="JAX not installed (pip install jax jaxlib)"),
    pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="Keras not installed"),
]

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = """
import json, sys
import numpy as np
import torch
import keras
import jax
from perceptual_loss import PerceptualLoss as TorchPerceptualLoss
from perceptual_loss.backbones import get_backbone
from perceptual_loss.keras import PerceptualLoss

checkpoint = sys.argv[1]
torch.manual_seed(0)
torch.save(get_backbone("vgg11").build_features().state_dict(), checkpoint)
rng = np.random.default_rng(0)
y_true = rng.random((2, 16, 16, 3), dtype=np.float32)
y_pred = rng.random((2, 16, 16, 3), dtype=np.float32)
nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)
options = dict(layers=("block1_conv1", "conv2_1"), style_layers=("relu1_1",),
               criterion="charbonnier", pixel_mse=1.0, resize=20)
keras_value = float(PerceptualLoss("vgg11", weights=checkpoint, **options)(y_true, y_pred))
torch_value = float(TorchPerceptualLoss("vgg11", weights=checkpoint, **options)(
    nchw(y_pred), nchw(y_true)))

loss = PerceptualLoss("vgg11", layers=("relu1_1", "relu2_1"), weights=checkpoint,
                      pixel_mse=1.0)
try:
    loss(y_true, y_pred * 3)
    eager_range_error = ""
except ValueError as err:
    eager_range_error = str(err)

keras.utils.set_random_seed(0)
inputs = keras.Input((16, 16, 3))
x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
outputs = keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
x_train = np.clip(y_true + 0.1 * rng.standard_normal(y_true.shape), 0, 1).astype(np.float32)
before = float(model.evaluate(x_train, y_true, verbose=0))
model.fit(x_train, y_true, batch_size=2, epochs=8, verbose=0)
after = float(model.evaluate(x_train, y_true, verbose=0))
json.dump({"backend": keras.backend.backend(), "keras": keras_value, "torch": torch_value,
           "eager_range_error": eager_range_error, "before": before, "after": after,
           "predict_shape": list(model.predict(x_train, verbose=0).shape)}, sys.stdout)
"""


def test_jax_backend_matches_pytorch_and_trains(tmp_path: Path) -> None:
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = run_group(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path / "vgg11.pth")],
        env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["backend"] == "jax"
    assert report["keras"] == pytest.approx(report["torch"], rel=1e-5)
    assert "y_pred has values in" in report["eager_range_error"]
    assert report["after"] < 0.9 * report["before"], report
    assert report["predict_shape"] == [2, 16, 16, 3]
