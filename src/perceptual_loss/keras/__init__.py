"""Keras 3 front end: perceptual losses for ``model.compile(loss=...)`` on channels-last images.

Needs the ``keras`` extra: ``pip install "perceptual-loss[keras]"``. Importing
:mod:`perceptual_loss` never imports Keras; importing this subpackage does, so choose the
backend first (``KERAS_BACKEND=torch``, ``jax`` or ``tensorflow``).

The backbone is the same VGG with the same weight files as the PyTorch side: the torchvision
``.pth`` files and the Keras Applications "notop" HDF5 files (``weights="keras-imagenet"``,
with their Caffe preprocessing), resolved by :mod:`perceptual_loss.weights`, and any VGG file
Keras writes (legacy ``.h5``, ``.weights.h5``, ``.keras``). Tested on the torch, JAX and
TensorFlow backends.

Example:
    >>> import keras
    >>> from perceptual_loss.keras import PerceptualLoss
    >>> loss = PerceptualLoss(layers=("block1_conv2", "block2_conv2", "block3_conv3"),
    ...                       pixel_mse=1.0, weights="keras-imagenet")  # doctest: +SKIP
    >>> model.compile(optimizer="adam", loss=loss)  # doctest: +SKIP
"""

from perceptual_loss.keras._compat import INSTALL_HINT, import_keras

import_keras()

from perceptual_loss.keras.backbone import build_backbone, keras_trunk  # noqa: E402
from perceptual_loss.keras.extractor import FeatureExtractor  # noqa: E402
from perceptual_loss.keras.functional import (  # noqa: E402
    feature_distance,
    gram_matrix,
    normalize_channels,
    total_variation,
)
from perceptual_loss.keras.losses import PerceptualLoss  # noqa: E402

__all__ = [
    "INSTALL_HINT",
    "FeatureExtractor",
    "PerceptualLoss",
    "build_backbone",
    "feature_distance",
    "gram_matrix",
    "keras_trunk",
    "normalize_channels",
    "total_variation",
]
