"""The functional form of :class:`~perceptual_loss.PerceptualLoss`: one call, no module to keep.

:func:`perceptual_loss` validates its inputs and options, then calls a module built once per
recipe, device and dtype and kept in a small cache (an ``lru_cache`` of 8), so calling it in a
training loop never rebuilds a VGG. The module is built outside ``torch.compile``'s tracing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from perceptual_loss._checks import check_choice, check_image, check_pair
from perceptual_loss.execution import (
    ChannelsLast,
    ChunkSize,
    Convolution,
    check_channels_last,
    check_chunk_size,
    check_convolution,
)
from perceptual_loss.extractor import FeatureExtractor
from perceptual_loss.losses import PerceptualLoss
from perceptual_loss.recipe import Recipe, RecipeOptions, check_option_names

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["perceptual_loss"]


def perceptual_loss(prediction: torch.Tensor, target: torch.Tensor, *,
                    extractor: FeatureExtractor | None = None, backbone: str = "vgg16",
                    layers: Sequence[str] | None = None,
                    weights: str | os.PathLike[str] | None = "imagenet",
                    memory: Literal["lean", "plain"] = "lean",
                    channels_last: ChannelsLast = "auto", chunk_size: ChunkSize = "auto",
                    convolution: Convolution = "auto",
                    **options: Unpack[RecipeOptions]) -> torch.Tensor:
    """Functional form of :class:`~perceptual_loss.PerceptualLoss`.

    Inputs and options are validated first; the module is then built once per recipe,
    device and dtype and cached (up to 8), so calling this in a loop never rebuilds a VGG.

    Args:
        prediction: ``(N, C, H, W)`` in ``input_range``; gradients flow to it.
        target: Same shape.
        extractor: A prebuilt :class:`~perceptual_loss.FeatureExtractor` to use (its own
            layers, range and resize then apply unless ``layers`` is given).
        backbone: Backbone name (when no extractor is given).
        layers: Content layers (default: the extractor's, or relu1_2..relu4_3); ``()`` with
            ``style_layers`` for a pure style loss.
        weights: See :class:`~perceptual_loss.FeatureExtractor`.
        memory: See :class:`~perceptual_loss.PerceptualLoss`.
        channels_last: See :class:`~perceptual_loss.PerceptualLoss`.
        chunk_size: See :class:`~perceptual_loss.PerceptualLoss`.
        convolution: See :class:`~perceptual_loss.PerceptualLoss`.
        **options: Every other option of :class:`~perceptual_loss.PerceptualLoss`
            (``criterion``, ``layer_weights``, ``input_range``, ``resize``, ``reduction``,
            style and pixel terms...).

    Returns:
        Scalar, or ``(N,)`` with ``reduction="none"``.
    """
    check_image(prediction, "prediction")
    check_image(target, "target")
    check_pair(prediction, target)
    check_option_names(options, "perceptual_loss")
    loss_fn = _functional_module(extractor, backbone, layers, weights, memory, channels_last,
                                 chunk_size, convolution, prediction, options)
    return loss_fn(prediction, target)


@torch.compiler.disable  # built eagerly, also inside a compiled function: never traced
def _functional_module(extractor: FeatureExtractor | None, backbone: str, layers: Any,
                       weights: Any, memory: str, channels_last: ChannelsLast,
                       chunk_size: ChunkSize, convolution: Convolution,
                       prediction: torch.Tensor, options: dict[str, Any]) -> PerceptualLoss:
    """The module :func:`perceptual_loss` calls: built around ``extractor``, or cached."""
    if extractor is not None:
        return PerceptualLoss(extractor=extractor, layers=layers, **options)
    recipe = Recipe.create(backbone, layers, weights, **options)
    return _cached_loss(recipe, check_choice("memory", memory, ("lean", "plain")),
                        check_channels_last(channels_last), check_chunk_size(chunk_size),
                        check_convolution(convolution), str(prediction.device), prediction.dtype)


@functools.lru_cache(maxsize=8)
def _cached_loss(recipe: Recipe, memory: str, channels_last: ChannelsLast, chunk_size: ChunkSize,
                 convolution: Convolution, device: str, dtype: torch.dtype) -> PerceptualLoss:
    loss_fn = PerceptualLoss.from_recipe(recipe, memory=memory,  # type: ignore[arg-type]
                                         channels_last=channels_last, chunk_size=chunk_size,
                                         convolution=convolution)
    return loss_fn.to(device=torch.device(device), dtype=dtype)
