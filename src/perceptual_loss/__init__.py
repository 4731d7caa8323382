"""Perceptual losses and metrics on the feature maps of frozen ImageNet CNNs.

Public API; see the README for a tour. Names are imported on first use, so that
``import perceptual_loss`` (and the ``perceptual`` command's ``--help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "BackboneSpec": "perceptual_loss.backbones",
    "get_backbone": "perceptual_loss.backbones",
    "list_backbones": "perceptual_loss.backbones",
    "DEFAULT_LAYERS": "perceptual_loss.extractor",
    "FeatureExtractor": "perceptual_loss.extractor",
    "feature_distance": "perceptual_loss.functional",
    "gram_matrix": "perceptual_loss.functional",
    "normalize_channels": "perceptual_loss.functional",
    "perceptual_loss": "perceptual_loss.functional_loss",
    "total_variation": "perceptual_loss.functional",
    "PerceptualLoss": "perceptual_loss.losses",
    "TotalVariationLoss": "perceptual_loss.losses",
    "DISTS": "perceptual_loss.metrics.dists",
    "LPIPS": "perceptual_loss.metrics.lpips",
    "MedicalPerceptualLoss": "perceptual_loss.medical",
    "lpips_distance": "perceptual_loss.metrics.lpips",
    "dists_distance": "perceptual_loss.metrics.dists",
    "NORMALIZATIONS": "perceptual_loss.preprocess",
    "OutOfRangeWarning": "perceptual_loss._checks",
    "Recipe": "perceptual_loss.recipe",
    "Normalization": "perceptual_loss.preprocess",
    "CT_WINDOWS": "perceptual_loss.volumes",
    "VolumePerceptualLoss": "perceptual_loss.volumes",
    "rescale_to_hu": "perceptual_loss.volumes",
    "volume_perceptual_loss": "perceptual_loss.volumes",
    "window_ct": "perceptual_loss.volumes",
    "WeightsIntegrityError": "perceptual_loss.weights",
    "WeightsNotFoundError": "perceptual_loss.weights",
    "list_weights": "perceptual_loss.weights",
    "resolve_weight_file": "perceptual_loss.weights",
    "VideoPerceptualLoss": "perceptual_loss.video",
    "temporal_lpips": "perceptual_loss.video",
}

__all__ = [
    "BackboneSpec",
    "CT_WINDOWS",
    "DEFAULT_LAYERS",
    "DISTS",
    "FeatureExtractor",
    "LPIPS",
    "MedicalPerceptualLoss",
    "NORMALIZATIONS",
    "Normalization",
    "OutOfRangeWarning",
    "PerceptualLoss",
    "Recipe",
    "TotalVariationLoss",
    "VideoPerceptualLoss",
    "VolumePerceptualLoss",
    "WeightsIntegrityError",
    "WeightsNotFoundError",
    "__version__",
    "dists_distance",
    "feature_distance",
    "get_backbone",
    "gram_matrix",
    "list_backbones",
    "list_weights",
    "lpips_distance",
    "normalize_channels",
    "perceptual_loss",
    "rescale_to_hu",
    "resolve_weight_file",
    "temporal_lpips",
    "total_variation",
    "volume_perceptual_loss",
    "window_ct",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'perceptual_loss' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from perceptual_loss._checks import OutOfRangeWarning
    from perceptual_loss.backbones import BackboneSpec, get_backbone, list_backbones
    from perceptual_loss.extractor import DEFAULT_LAYERS, FeatureExtractor
    from perceptual_loss.functional import (
        feature_distance,
        gram_matrix,
        normalize_channels,
        total_variation,
    )
    from perceptual_loss.functional_loss import perceptual_loss
    from perceptual_loss.losses import PerceptualLoss, TotalVariationLoss
    from perceptual_loss.medical import MedicalPerceptualLoss
    from perceptual_loss.metrics.dists import DISTS, dists_distance
    from perceptual_loss.metrics.lpips import LPIPS, lpips_distance
    from perceptual_loss.preprocess import NORMALIZATIONS, Normalization
    from perceptual_loss.recipe import Recipe
    from perceptual_loss.video import VideoPerceptualLoss, temporal_lpips
    from perceptual_loss.volumes import (
        CT_WINDOWS,
        VolumePerceptualLoss,
        rescale_to_hu,
        volume_perceptual_loss,
        window_ct,
    )
    from perceptual_loss.weights import (
        WeightsIntegrityError,
        WeightsNotFoundError,
        list_weights,
        resolve_weight_file,
    )
