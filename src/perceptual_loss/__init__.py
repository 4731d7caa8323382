"""Perceptual losses and metrics on the feature maps of frozen ImageNet CNNs.

Public API; see the README for a tour.
"""

from perceptual_loss.backbones import BackboneSpec, get_backbone, list_backbones
from perceptual_loss.extractor import DEFAULT_LAYERS, FeatureExtractor
from perceptual_loss.functional import (
    feature_distance,
    gram_matrix,
    normalize_channels,
    perceptual_loss,
    total_variation,
)
from perceptual_loss.losses import PerceptualLoss, TotalVariationLoss
from perceptual_loss.preprocess import NORMALIZATIONS, Normalization
from perceptual_loss.weights import (
    WeightsIntegrityError,
    WeightsNotFoundError,
    list_weights,
    resolve_weight_file,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LAYERS",
    "NORMALIZATIONS",
    "BackboneSpec",
    "FeatureExtractor",
    "Normalization",
    "PerceptualLoss",
    "TotalVariationLoss",
    "WeightsIntegrityError",
    "WeightsNotFoundError",
    "__version__",
    "feature_distance",
    "get_backbone",
    "gram_matrix",
    "list_backbones",
    "list_weights",
    "normalize_channels",
    "perceptual_loss",
    "resolve_weight_file",
    "total_variation",
]
