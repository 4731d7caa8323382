"""What every metric shares around its module: the functional twin's body, the scorer's weights.

A metric's functional twin (``lpips_distance``, ``dists_distance``) checks its inputs, builds
its module once per configuration and device, and reduces the module's ``(N,)`` values; a
metric's factory for ``perceptual compare`` puts the command's ``--weights`` on its trunk where
they fit and says otherwise. Both are written once, here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from perceptual_loss._checks import Reduction, check_image, check_reduction
from perceptual_loss._weight_files import WeightsIntegrityError
from perceptual_loss.functional import reduce
from perceptual_loss.metrics import MetricSettings
from perceptual_loss.weights import is_random

__all__ = ["twin_value", "weights_or_imagenet"]

_Metric = TypeVar("_Metric")


def twin_value(prediction: torch.Tensor, target: torch.Tensor, reduction: Reduction,
               metric: Any, build: Callable[[str], Any]) -> torch.Tensor:
    """A functional twin's value: ``metric`` (or ``build(device)``, cached by the caller).

    Raises:
        ValueError: A bad reduction or input, or a module built with a reduction of its own.
    """
    check_reduction(reduction)
    check_image(prediction, "prediction")
    check_image(target, "target")
    if metric is None:
        metric = build(str(prediction.device))
    if metric.reduction != "none":
        raise ValueError(
            f"metric=... was built with reduction={metric.reduction!r}; build it with "
            "reduction='none' and choose the reduction here"
        )
    return reduce(metric(prediction, target), reduction)


def weights_or_imagenet(build: Callable[[str | os.PathLike[str] | None], _Metric],
                        settings: MetricSettings, name: str, trunk: str
                        ) -> tuple[_Metric, str]:
    """``build`` with the command's ``--weights`` where they fit the trunk, else ImageNet's.

    ``--weights random`` gives a random trunk; weights that do not fit (another network's
    file) fall back to the trunk's ImageNet weights with a note in ``settings.notes``.

    Returns:
        ``(metric, weights label)``.
    """
    weights = settings.weights
    if is_random(weights):
        return build(None), "random"
    if weights not in ("imagenet", None):
        try:
            return build(weights), str(weights)
        except (WeightsIntegrityError, ValueError) as error:
            settings.notes.append(f"{name} uses the ImageNet weights of its {trunk} trunk: "
                                  f"--weights {weights} does not fit it ({error})")
    return build("imagenet"), "imagenet"
