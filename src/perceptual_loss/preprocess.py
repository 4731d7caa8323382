"""From user images to backbone inputs: value range, channels, normalisation, resize.

All images are ``(N, C, H, W)`` (or volumes ``(N, C, D, H, W)``) floats in a declared
``input_range``. The pipeline is: map the range to ``[0, 1]``, adapt the channels to the ones
the backbone expects (3, or 1 for MedicalNet), normalise the way the weights were trained
(torchvision mean/std, Caffe BGR 0-255 mean subtraction, LPIPS scaling, RadImageNet's BGR minus
the mean, or MedicalNet's z-score), and optionally resize. Range mapping and an affine
normalisation are fused into one affine map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "NORMALIZATIONS",
    "ChannelMode",
    "Normalization",
    "ZSCORE_EPS",
    "Preprocessor",
    "adapt_channels",
    "affine_parameters",
    "as_size",
    "get_normalization",
    "zscore_intensity",
]

ChannelMode = Literal["repeat", "per_channel"]
ZScore = Literal["batch", "volume"]

#: Added to the variance of the z-score (in units of the declared range mapped to [0, 1]):
#: a constant volume gives 0 instead of MONAI's NaN; negligible for any real volume.
ZSCORE_EPS = 1e-5


@dataclass(frozen=True)
class Normalization:
    """How a backbone expects its input, starting from RGB in ``[0, 1]``.

    The backbone input is ``(flip(x) * scale - mean) / std`` where ``flip`` reverses RGB to
    BGR when ``bgr`` is true.

    Attributes:
        name: Registry name.
        mean: Per-channel mean in the backbone's channel order and scale.
        std: Per-channel divisor in the backbone's channel order and scale.
        scale: Factor applied to ``[0, 1]`` values first (255 for Caffe weights).
        bgr: Whether the backbone takes BGR channel order.
        zscore: ``None`` for the affine map above, or ``"batch"``/``"volume"``: the
            ``[0, 1]`` values z-scored instead (MedicalNet; see :func:`zscore_intensity`).
    """

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0
    bgr: bool = False
    zscore: ZScore | None = None


def _lpips_normalization() -> Normalization:
    # LPIPS scales [-1, 1] inputs with (x - shift) / scale; expressed here on [0, 1].
    shift = (-0.030, -0.088, -0.188)
    scale = (0.458, 0.448, 0.450)
    return Normalization(
        name="lpips",
        mean=tuple((1.0 + s) / 2.0 for s in shift),  # type: ignore[arg-type]
        std=tuple(s / 2.0 for s in scale),  # type: ignore[arg-type]
    )


NORMALIZATIONS: dict[str, Normalization] = {
    "imagenet": Normalization("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe": Normalization("caffe", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0),
                           scale=255.0, bgr=True),
    "lpips": _lpips_normalization(),
    "none": Normalization("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    # RadImageNet's Keras training: BGR, minus the ImageNet mean in BGR order, no scaling.
    "radimagenet": Normalization("radimagenet", (0.406, 0.456, 0.485), (1.0, 1.0, 1.0),
                                 bgr=True),
    # MedicalNet (as MONAI feeds it): one mean and std over the whole batch tensor.
    "zscore": Normalization("zscore", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), zscore="batch"),
}


def get_normalization(name: str | Normalization | Sequence[Sequence[float]]) -> Normalization:
    """A normalisation by name (``imagenet``, ``caffe``, ``lpips``, ``none``) or ``(mean, std)``.

    ``(mean, std)`` are 3 numbers each, for RGB images in ``[0, 1]``; ``std`` must be
    positive.
    """
    if isinstance(name, Normalization):
        return name
    if not isinstance(name, str):
        try:
            mean, std = (tuple(float(v) for v in part) for part in name)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"normalization must be a name ({', '.join(NORMALIZATIONS)}) or "
                             f"(mean, std) with 3 numbers each; got {name!r}") from None
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or not all(
                math.isfinite(v) for v in mean + std):
            raise ValueError(f"normalization (mean, std) needs 3 finite numbers each and std "
                             f"> 0; got {name!r}")
        return Normalization("custom", mean, std)  # type: ignore[arg-type]
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown normalization {name!r}; choose one of: {', '.join(NORMALIZATIONS)}"
        ) from None


def adapt_channels(x: torch.Tensor, mode: ChannelMode = "repeat", channels: int = 3
                   ) -> torch.Tensor:
    """Give ``x`` the channels a backbone expects (3, or 1 for single-channel networks).

    Args:
        x: ``(N, C, H, W)`` (or ``(N, C, D, H, W)``).
        mode: ``"repeat"``: ``channels`` channels pass through, 1 channel (grayscale, CT, MRI)
            is repeated to 3; anything else is an error. ``"per_channel"``: each of the ``C``
            channels is treated as its own grayscale image, giving ``(N * C, channels, ...)``;
            reshape the results back with ``view(N, C, ...)``.
        channels: What the backbone takes: 3 (RGB) or 1.

    Returns:
        ``(N, channels, ...)`` or, in ``"per_channel"`` mode, ``(N * C, channels, ...)``.
    """
    n, c, *spatial = x.shape
    if mode == "per_channel":
        return x.reshape(n * c, 1, *spatial).expand(n * c, channels, *spatial)
    if mode != "repeat":
        raise ValueError(f"channel_mode must be 'repeat' or 'per_channel'; got {mode!r}")
    if c == channels:
        return x
    if c == 1:
        return x.expand(n, channels, *spatial)
    if channels == 1:
        raise ValueError(f"this network takes 1 channel; got {c}: pass "
                         "channel_mode='per_channel' to compare each channel on its own")
    raise ValueError(
        f"expected images with 1 (grayscale) or 3 (RGB) channels; got {c}. For RGBA drop the "
        "alpha channel (x[:, :3]); for other multi-channel images (e.g. multi-echo MRI) pass "
        "channel_mode='per_channel' to compare each channel as a grayscale image."
    )


def affine_parameters(normalization: Normalization, input_range: tuple[float, float]
                      ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(shift, divisor)`` per channel so that the backbone input is ``(x - shift) / divisor``.

    Range mapping and normalisation fused: ``(flip(x01) * scale - mean) / std`` with
    ``x01 = (x - low) / (high - low)``, written so that the default case is exactly
    ``(x - mean) / std``. Both front ends use these numbers, so they round alike.

    Args:
        normalization: How the weights expect their input.
        input_range: ``(low, high)`` of the user's images.

    Returns:
        Two 3-tuples in the backbone's channel order.
    """
    low, high = input_range
    span = (high - low) / normalization.scale
    shift = tuple(low + m * span for m in normalization.mean)
    divisor = tuple(s * span for s in normalization.std)
    return shift, divisor


class Preprocessor(nn.Module):
    """Map images in ``input_range`` to normalised backbone inputs, optionally resized.

    Args:
        normalization: How the weights expect their input (see :data:`NORMALIZATIONS`).
        input_range: ``(low, high)`` of the user's images.
        channel_mode: See :func:`adapt_channels`.
        resize: ``None``, an int (square) or ``(height, width)``: bilinear resize
            (``align_corners=False``, no antialiasing) after normalisation.

    Shape:
        - Input: ``(N, C, H, W)`` in ``input_range``.
        - Output: ``(N, 3, H', W')`` (``(N * C, 3, H', W')`` in ``"per_channel"`` mode).
    """

    def __init__(self, normalization: str | Normalization = "imagenet",
                 input_range: tuple[float, float] = (0.0, 1.0),
                 channel_mode: ChannelMode = "repeat",
                 resize: int | Sequence[int] | None = None, *, channels: int = 3) -> None:
        super().__init__()
        self.normalization = get_normalization(normalization)
        self.input_range = input_range
        self.channel_mode = channel_mode
        self.channels = channels
        if channel_mode not in ("repeat", "per_channel"):
            raise ValueError(
                f"channel_mode must be 'repeat' or 'per_channel'; got {channel_mode!r}")
        self.resize = as_size(resize)
        shift, divisor = affine_parameters(self.normalization, input_range)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("divisor", torch.tensor(divisor).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocess ``x``; see the class docstring for shapes."""
        x = adapt_channels(x, self.channel_mode, self.channels)
        if self.normalization.zscore is not None:
            low, high = self.input_range
            with torch.autocast(device_type=x.device.type, enabled=False):
                x = x if x.dtype == torch.float64 else x.float()
                return zscore_intensity((x - low) / (high - low), self.normalization.zscore)
        if self.normalization.bgr:
            x = x.flip(1)
        x = (x - self.shift.to(x.dtype)) / self.divisor.to(x.dtype)
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            x = F.interpolate(x, size=self.resize, mode="bilinear", align_corners=False)
        return x


def zscore_intensity(volume: torch.Tensor, mode: ZScore = "batch",
                     eps: float = ZSCORE_EPS) -> torch.Tensor:
    """Z-score intensities as MONAI does for MedicalNet, with a guard for constant volumes.

    Args:
        volume: ``(N, C, D, H, W)`` (any shape for ``"batch"``).
        mode: ``"batch"`` (MONAI): one mean and one standard deviation over the whole tensor,
            all samples and channels together, so a sample's value depends on the rest of the
            batch. ``"volume"``: one mean/std per sample and channel.
        eps: ``std = sqrt(var + eps^2)`` (unbiased variance, as ``torch.std``).

    Returns:
        float32 (float64 stays float64) tensor of ``volume``'s shape.

    Example:
        >>> z = zscore_intensity(torch.arange(8.0).view(1, 1, 2, 2, 2))
        >>> round(float(z.mean()), 6), round(float(z.std()), 4)
        (0.0, 1.0)
    """
    if mode not in ("batch", "volume"):
        raise ValueError(f"mode must be 'batch' or 'volume'; got {mode!r}")
    x = volume if volume.dtype == torch.float64 else volume.float()
    dims = tuple(range(x.ndim)) if mode == "batch" else tuple(range(2, x.ndim))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps * eps)


def as_size(resize: int | Sequence[int] | None) -> tuple[int, int] | None:
    """Validate a ``resize`` option: ``None``, a positive int, or ``(height, width)``."""
    if resize is None:
        return None
    try:
        if isinstance(resize, bool):
            raise TypeError
        size = (int(resize), int(resize)) if isinstance(resize, int) else tuple(
            int(v) for v in resize)  # type: ignore[union-attr]
        valid = len(size) == 2 and min(size) >= 1 and all(
            float(v) == int(v) for v in ((resize,) if isinstance(resize, int) else resize))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"resize must be None, a positive int or (height, width); got {resize!r}")
    return size  # type: ignore[return-value]
