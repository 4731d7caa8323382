"""Pure functions: the maths of the losses, free of modules and state.

Distances return one value per sample, ``(N,)``; reduce them with :func:`reduce`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from perceptual_loss.extractor import FeatureExtractor

__all__ = [
    "CRITERIA",
    "Criterion",
    "Reduction",
    "feature_distance",
    "gram_matrix",
    "normalize_channels",
    "perceptual_loss",
    "reduce",
    "total_variation",
]

Criterion = Literal["l1", "mse", "l2", "charbonnier"]
Reduction = Literal["none", "mean", "sum"]
CRITERIA: tuple[str, ...] = ("l1", "mse", "l2", "charbonnier")


def _float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32 precision (float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices of feature maps, normalised by ``C * H * W``.

    Computed in float32 (float64 stays float64) even under autocast, where a half-precision
    product of large activations would lose precision or overflow.

    Args:
        features: ``(N, C, H, W)``.

    Returns:
        ``(N, C, C)``: ``G[n, i, j] = sum_hw F[n, i, hw] F[n, j, hw] / (C * H * W)``.

    Example:
        >>> g = gram_matrix(torch.ones(1, 2, 3, 3))
        >>> g
        tensor([[[0.5000, 0.5000],
                 [0.5000, 0.5000]]])

    References:
        Gatys et al., "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
        Johnson et al., "Perceptual Losses for Real-Time Style Transfer and
        Super-Resolution", ECCV 2016 (the ``C * H * W`` normalisation).
    """
    if features.ndim != 4:
        raise ValueError(f"gram_matrix expects (N, C, H, W); got {tuple(features.shape)}")
    n, c, h, w = features.shape
    with torch.autocast(device_type=features.device.type, enabled=False):
        flat = _float32(features).reshape(n, c, h * w)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def normalize_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale every feature vector (over channels) to unit length, as LPIPS does.

    Uses ``f / sqrt(sum_c f^2 + eps^2)``: equal to LPIPS' ``f / (||f|| + eps)`` up to
    ``eps``, but with a finite gradient where a feature vector is all zero (a dead ReLU
    location), where LPIPS' form gives NaN. Computed in float32 under autocast.

    Args:
        features: ``(N, C, H, W)``.
        eps: Stabiliser.

    Returns:
        ``(N, C, H, W)`` with unit-length vectors along ``C`` (zero where the input is zero).
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = _float32(features)
        return f * torch.rsqrt(f.pow(2).sum(dim=1, keepdim=True) + eps * eps)


def feature_distance(prediction: torch.Tensor, target: torch.Tensor,
                     criterion: Criterion = "l1", *, eps: float = 1e-3) -> torch.Tensor:
    """Mean elementwise distance per sample.

    Args:
        prediction: ``(N, ...)``.
        target: Same shape, or broadcastable to it (e.g. ``(1, ...)`` for one style image).
        criterion: ``"l1"`` (mean absolute), ``"mse"``/``"l2"`` (mean squared), or
            ``"charbonnier"`` (mean of ``sqrt(d^2 + eps^2)``, a smooth L1).
        eps: Charbonnier's smoothing constant.

    Returns:
        ``(N,)``, computed in float32 (float64 stays float64).
    """
    if criterion == "l1":
        return _MeanAbsolutePerSample.apply(prediction, target)
    diff = _float32(prediction) - _float32(target)
    if criterion in ("mse", "l2"):
        per_element = diff.pow(2)
    elif criterion == "charbonnier":
        per_element = torch.sqrt(diff.pow(2) + eps * eps)
    else:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    return per_element.reshape(per_element.shape[0], -1).mean(dim=1)


class _MeanAbsolutePerSample(torch.autograd.Function):
    """``mean(|p - t|)`` per sample that keeps only ``sign(p - t)`` (int8) for backward.

    Plain autograd keeps the float difference (4 bytes an element) until backward; the
    gradient needs only its sign. Values and gradients equal ``(p - t).abs().mean``'s,
    including the zero gradient where ``p == t``. ``t`` may be broadcast to ``p``.
    """

    @staticmethod
    def forward(ctx, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        diff = _float32(prediction) - _float32(target)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ctx.save_for_backward(torch.sign(diff).to(torch.int8))
            ctx.shapes = (prediction.shape, target.shape)
            ctx.dtypes = (prediction.dtype, target.dtype)
        per_sample = diff.abs_().reshape(diff.shape[0], -1)
        ctx.count = per_sample.shape[1]
        return per_sample.mean(dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # noqa: ANN001
        (sign,) = ctx.saved_tensors
        scale = (grad / ctx.count).view(-1, *([1] * (sign.dim() - 1)))
        grad_diff = sign.to(scale.dtype) * scale
        grad_prediction = grad_target = None
        if ctx.needs_input_grad[0]:
            grad_prediction = grad_diff.sum_to_size(ctx.shapes[0]).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_target = (-grad_diff).sum_to_size(ctx.shapes[1]).to(ctx.dtypes[1])
        return grad_prediction, grad_target


def total_variation(images: torch.Tensor, kind: Literal["l1", "l2"] = "l1") -> torch.Tensor:
    """Total variation per sample: mean absolute (or squared) difference of neighbours.

    Args:
        images: ``(N, C, H, W)`` with ``H, W >= 2``.
        kind: ``"l1"`` (anisotropic TV) or ``"l2"`` (squared differences, as Johnson et al.).

    Returns:
        ``(N,)``: mean over vertical differences plus mean over horizontal differences.
    """
    if images.ndim != 4 or min(images.shape[-2:]) < 2:
        raise ValueError(f"total_variation expects (N, C, H, W) with H, W >= 2; "
                         f"got {tuple(images.shape)}")
    dy = images[:, :, 1:, :] - images[:, :, :-1, :]
    dx = images[:, :, :, 1:] - images[:, :, :, :-1]
    if kind == "l1":
        dy, dx = dy.abs(), dx.abs()
    elif kind == "l2":
        dy, dx = dy.pow(2), dx.pow(2)
    else:
        raise ValueError(f"kind must be 'l1' or 'l2'; got {kind!r}")
    return dy.flatten(1).mean(1) + dx.flatten(1).mean(1)


def reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Reduce per-sample values ``(N,)`` to a scalar (``mean``/``sum``) or keep them (``none``)."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum'; got {reduction!r}")


def perceptual_loss(prediction: torch.Tensor, target: torch.Tensor, *,
                    extractor: FeatureExtractor | None = None,
                    backbone: str = "vgg16",
                    layers: Sequence[str] | None = None,
                    weights: str | os.PathLike[str] | None = "imagenet",
                    criterion: Criterion = "l1",
                    layer_weights: Sequence[float] | Mapping[str, float] | None = None,
                    input_range: tuple[float, float] = (0.0, 1.0),
                    resize: int | None = None,
                    reduction: Reduction = "mean",
                    **options: object) -> torch.Tensor:
    """Functional form of :class:`~perceptual_loss.PerceptualLoss`.

    Reuses ``extractor`` when given; otherwise builds the backbone once per configuration and
    device and caches it, so calling this in a loop never rebuilds a VGG.

    Args:
        prediction: ``(N, C, H, W)`` in ``input_range``; gradients flow to it.
        target: Same shape.
        extractor: A prebuilt :class:`~perceptual_loss.FeatureExtractor` to use (its own
            layers, range and resize then apply unless ``layers`` is given).
        backbone: Backbone name (when no extractor is given).
        layers: Content layers (default: the extractor's, or relu1_2..relu4_3).
        weights: See :class:`~perceptual_loss.FeatureExtractor`.
        criterion: ``"l1"``, ``"mse"``/``"l2"`` or ``"charbonnier"``.
        layer_weights: One weight per layer (sequence or ``{layer: weight}``).
        input_range: ``(low, high)`` of the images.
        resize: Resize before the backbone (e.g. 224), or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(N,)``).
        **options: Other :class:`~perceptual_loss.PerceptualLoss` options (style, pixel...).

    Returns:
        Scalar, or ``(N,)`` with ``reduction="none"``.
    """
    from perceptual_loss.losses import PerceptualLoss

    if extractor is not None:
        loss_fn = PerceptualLoss(extractor=extractor, layers=layers, criterion=criterion,
                                 layer_weights=layer_weights, reduction=reduction,
                                 **options)  # type: ignore[arg-type]
    else:
        key = (backbone, tuple(layers) if layers is not None else None,
               os.fspath(weights) if weights is not None else None,
               criterion, _freeze(layer_weights), tuple(input_range), resize, reduction,
               tuple(sorted((k, _freeze(v)) for k, v in options.items())),
               str(prediction.device), prediction.dtype)
        loss_fn = _cached_loss(key)
    return loss_fn(prediction, target)


def _freeze(value: object) -> object:
    if isinstance(value, Mapping):
        return tuple(sorted(value.items()))
    if isinstance(value, list):
        return tuple(value)
    return value


@functools.lru_cache(maxsize=8)
def _cached_loss(key: tuple) -> torch.nn.Module:
    from perceptual_loss.extractor import DEFAULT_LAYERS
    from perceptual_loss.losses import PerceptualLoss

    (backbone, layers, weights, criterion, layer_weights, input_range, resize, reduction,
     options, device, dtype) = key
    if isinstance(layer_weights, tuple) and layer_weights and isinstance(layer_weights[0], tuple):
        layer_weights = dict(layer_weights)
    extra = {k: (dict(v) if isinstance(v, tuple) and v and isinstance(v[0], tuple) else v)
             for k, v in options}
    loss_fn = PerceptualLoss(backbone=backbone, layers=layers or DEFAULT_LAYERS, weights=weights,
                             criterion=criterion, layer_weights=layer_weights,
                             input_range=input_range, resize=resize, reduction=reduction,
                             **extra)
    return loss_fn.to(device=torch.device(device), dtype=dtype)
