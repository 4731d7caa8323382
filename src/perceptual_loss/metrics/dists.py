"""DISTS: deep image structure and texture similarity, as a metric and as a loss.

DISTS (Ding et al. 2020) runs both images through VGG16 whose max poolings are replaced by
Hanning-window L2 pooling (:class:`~perceptual_loss.backbones.pooling.L2Pool2d`) and compares,
channel by channel, the global statistics of the image itself and of relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3:

    structure_kc = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
    texture_kc   = (2 cov_xy + c2) / (var_x + var_y + c2)
    D(x, y) = 1 - sum_k sum_c (alpha_kc structure_kc + beta_kc texture_kc)

with ``c1 = c2 = 1e-6`` and learned non-negative ``alpha``, ``beta`` normalised to sum 1 over
all 1475 channels. The published ``alpha``/``beta`` (MIT licence, as distributed with the
``DISTS_pytorch`` package) ship in ``data/dists/``; the trunk is torchvision's VGG16 file
through the weight registry. Given the same trunk weights the values equal ``DISTS_pytorch``'s.

**Evaluation protocol.** The official evaluation script (``prepare_image(resize=True)`` in
``DISTS_pt.py``) shrinks an image whose short side exceeds 256 px so that its short side is
256 (bilinear, antialiased, aspect ratio kept: the long side becomes
``int(256 * long / short)``) before scoring; published DISTS numbers are measured that way.
:class:`DISTS` does the same by default (``short_side=256``); ``short_side=None`` scores the
full resolution (training, or large-image use that wants every pixel seen). The resize runs
on tensors (``F.interpolate(..., antialias=True)``, PIL's filter); the official script
resizes 8-bit PIL images, so the two differ by that rounding (measured: 1e-5 relative on a
smooth 288x320 image).

What differs from ``DISTS_pytorch``, on purpose: the value range is declared and checked,
grayscale images are repeated to RGB (or compared channel by channel), and the statistics are
computed in float32 under autocast (L2 pooling squares activations, which overflows float16).

References:
    Ding, Ma, Wang, Simoncelli, "Image Quality Assessment: Unifying Structure and Texture
    Similarity", IEEE TPAMI 2020.
"""

from __future__ import annotations

import functools
import hashlib
import os
from importlib import resources
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss._checks import Reduction, check_input_range, check_reduction
from perceptual_loss._weight_files import (
    WeightsIntegrityError,
    check_tensor_values,
    read_tensor_file,
)
from perceptual_loss.extractor import FeatureExtractor
from perceptual_loss.functional import reduce
from perceptual_loss.metrics import MetricSettings
from perceptual_loss.metrics._twin import twin_value, weights_or_imagenet
from perceptual_loss.preprocess import ChannelMode, adapt_channels

__all__ = [
    "DISTS",
    "DISTS_LAYERS",
    "DISTS_SHORT_SIDE",
    "dists_distance",
    "load_dists_weights",
    "official_size",
    "scorer_metric",
]

#: The VGG16 layers DISTS compares after the image itself.
DISTS_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
#: Channels of the image and of each layer: 3 + 64 + 128 + 256 + 512 + 512 = 1475.
DISTS_CHANNELS: tuple[int, ...] = (3, 64, 128, 256, 512, 512)
#: SHA-256 of the shipped alpha/beta file (the one distributed with DISTS_pytorch 0.1).
ALPHA_BETA_SHA256 = "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218"
_STABILISER = 1e-6
#: The official evaluation protocol's short side: larger images are shrunk to it.
DISTS_SHORT_SIDE = 256


def official_size(height: int, width: int, short_side: int = DISTS_SHORT_SIDE
                  ) -> tuple[int, int]:
    """``(height, width)`` after the official DISTS resize (unchanged if already small).

    The short side becomes ``short_side`` when it exceeds it and the long side
    ``int(short_side * long / short)``, as torchvision's ``resize(image, 256)`` in the
    official script computes it.

    Example:
        >>> official_size(512, 768)
        (256, 384)
        >>> official_size(200, 900)
        (200, 900)
    """
    short, long = min(height, width), max(height, width)
    if short <= short_side:
        return height, width
    new_long = int(short_side * long / short)
    return (short_side, new_long) if height <= width else (new_long, short_side)


def load_dists_weights(path: str | os.PathLike[str] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The learned ``alpha`` and ``beta`` of DISTS, each ``(1475,)`` float32, not normalised.

    Args:
        path: A file of your own in the published format (``{"alpha": (1, 1475, 1, 1),
            "beta": (1, 1475, 1, 1)}``); ``None``: the shipped file, checked against its
            SHA-256.

    Raises:
        WeightsIntegrityError: A file that cannot be read, has other keys or shapes, negative,
            NaN or Inf values, or (shipped file) a different hash; the message names it.
    """
    if path is None:
        ref = resources.files("perceptual_loss") / "data" / "dists" / "alpha_beta.pt"
        with resources.as_file(ref) as file:
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            if digest != ALPHA_BETA_SHA256:
                raise WeightsIntegrityError(f"the shipped DISTS weights {file} are damaged "
                                            f"(sha256 {digest[:12]}...); reinstall the package")
            state = torch.load(file, map_location="cpu", weights_only=True)
        source = "the shipped DISTS weights"
    else:
        source = os.fspath(path)
        state = read_tensor_file(source, "DISTS weights file")
    total = sum(DISTS_CHANNELS)
    if not isinstance(state, dict) or set(state) != {"alpha", "beta"} or any(
            not isinstance(v, torch.Tensor) or v.numel() != total for v in state.values()):
        raise WeightsIntegrityError(f"{source}: expected {{'alpha', 'beta'}} of {total} values "
                                    "each, as DISTS_pytorch's weights.pt")
    check_tensor_values(state, source)
    alpha, beta = (state[k].detach().reshape(total).float() for k in ("alpha", "beta"))
    if bool((alpha < 0).any() or (beta < 0).any()) or float(alpha.sum() + beta.sum()) <= 0:
        raise WeightsIntegrityError(f"{source}: alpha and beta must be >= 0 with a positive "
                                    "sum")
    return alpha, beta


def _statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel spatial mean and variance, ``(N, C)`` each, in float32 (or float64)."""
    mean = features.mean(dim=(2, 3))
    variance = (features - mean[..., None, None]).square().mean(dim=(2, 3))
    return mean, variance


def _moments_in_place(x: torch.Tensor, y: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                 torch.Tensor]:
    """Means, variances and covariance ``(N, C)`` with one scratch map (nothing recorded).

    The same formulas as :func:`_statistics` (centred variance, ``E[xy] - E[x]E[y]``), but
    large maps are memory-bound: one allocation instead of five.
    """
    count = x.shape[2] * x.shape[3]
    mean_x, mean_y = x.mean(dim=(2, 3)), y.mean(dim=(2, 3))
    scratch = x - mean_x[..., None, None]
    var_x = scratch.square_().sum(dim=(2, 3)).div_(count)
    torch.sub(y, mean_y[..., None, None], out=scratch)
    var_y = scratch.square_().sum(dim=(2, 3)).div_(count)
    torch.mul(x, y, out=scratch)
    covariance = scratch.mean(dim=(2, 3)) - mean_x * mean_y
    return mean_x, mean_y, var_x, var_y, covariance


def _similarity(x: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
                ) -> torch.Tensor:
    """``sum_c alpha_c structure_c + beta_c texture_c`` of one layer, ``(N,)``."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x, y = x.to(dtype), y.to(dtype)
        if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
            mean_x, var_x = _statistics(x)
            mean_y, var_y = _statistics(y)
            covariance = (x * y).mean(dim=(2, 3)) - mean_x * mean_y
        else:
            mean_x, mean_y, var_x, var_y, covariance = _moments_in_place(x, y)
        structure = (2 * mean_x * mean_y + _STABILISER) / (
            mean_x.square() + mean_y.square() + _STABILISER)
        texture = (2 * covariance + _STABILISER) / (var_x + var_y + _STABILISER)
        return (structure * alpha.to(dtype)).sum(1) + (texture * beta.to(dtype)).sum(1)


class DISTS(nn.Module):
    """DISTS distance, usable as a metric and as a loss (finite gradients everywhere).

    Args:
        weights: VGG16 trunk weights: ``"imagenet"`` (torchvision's file, through the
            registry), a path, or ``None`` for random weights (tests only).
        input_range: ``(low, high)`` of the images (``(0, 1)`` like DISTS_pytorch).
        reduction: ``"none"`` (default): ``(N,)``; ``"mean"``/``"sum"`` over the batch (for a
            loss).
        channel_mode: ``"repeat"`` (grayscale repeated to RGB) or ``"per_channel"`` (each
            channel as its own grayscale image, distances averaged over channels).
        alpha_beta: A file of learned weights of your own instead of the published ones.
        check_values: Check inputs for NaN/Inf and range (synchronises the device).
        memory: ``"lean"`` or ``"plain"`` (see :class:`~perceptual_loss.PerceptualLoss`).
        short_side: The official evaluation protocol (default ``256``): images whose short
            side exceeds it are first shrunk so that it equals it (bilinear, antialiased,
            aspect kept; see :func:`official_size`), as the published DISTS numbers were
            measured. ``None``: full resolution, no resize (training, or to see every pixel).

    Shape:
        - prediction, target: ``(N, C, H, W)``, ``C`` in {1, 3} (any with ``"per_channel"``);
          scored at :func:`official_size` of ``(H, W)`` unless ``short_side=None``.
        - Output: ``(N,)`` with ``reduction="none"``, else a scalar; ``0`` for identical
          images, about ``[0, 1]`` otherwise.

    Example:
        >>> metric = DISTS(weights=None)  # random trunk: for illustration only
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)
        >>> metric(x, y).shape
        torch.Size([2])
    """

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = "imagenet",
        input_range: tuple[float, float] = (0.0, 1.0),
        reduction: Reduction = "none",
        channel_mode: ChannelMode = "repeat",
        alpha_beta: str | os.PathLike[str] | None = None,
        check_values: bool = True,
        memory: Literal["lean", "plain"] = "lean",
        short_side: int | None = DISTS_SHORT_SIDE,
    ) -> None:
        super().__init__()
        self.reduction: Reduction = check_reduction(reduction)
        if short_side is not None and (isinstance(short_side, bool)
                                       or not isinstance(short_side, int) or short_side < 1):
            raise ValueError(f"short_side must be a positive int (256: the official protocol) "
                             f"or None (full resolution); got {short_side!r}")
        self.short_side = short_side
        self.extractor = FeatureExtractor(
            "vgg16", DISTS_LAYERS, weights, input_range=input_range, channel_mode=channel_mode,
            normalization="imagenet", check_values=check_values, memory=memory, pooling="l2")
        alpha, beta = load_dists_weights(alpha_beta)
        scale = alpha.sum() + beta.sum()
        for index, (a, b) in enumerate(zip(alpha.split(DISTS_CHANNELS),
                                           beta.split(DISTS_CHANNELS), strict=True)):
            self.register_buffer(f"alpha{index}", (a / scale).view(1, -1), persistent=False)
            self.register_buffer(f"beta{index}", (b / scale).view(1, -1), persistent=False)

    @property
    def input_range(self) -> tuple[float, float]:
        """The declared ``(low, high)`` of the images."""
        return self.extractor.input_range

    @property
    def min_input_size(self) -> int:
        """Smallest image side accepted, in pixels."""
        return int(self.extractor.min_input_size)

    def train(self, mode: bool = True) -> DISTS:
        """Set the module's flag; the frozen trunk stays in eval mode."""
        super().train(mode)
        self.extractor.train(mode)
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """DISTS between ``prediction`` and ``target`` (symmetric); see the class for shapes."""
        self.extractor.check_pair(prediction, target)
        if self.short_side is not None:
            prediction, target = self.resize(prediction), self.resize(target)
        low, high = self.input_range
        mode = self.extractor.channel_mode
        similarity = _similarity(adapt_channels((prediction - low) / (high - low), mode),
                                 adapt_channels((target - low) / (high - low), mode),
                                 self.alpha0, self.beta0)
        streams = zip(self.extractor.stream(prediction, "prediction", check=False),
                      self.extractor.stream(target, "target", check=False), strict=True)
        for index, ((_, feature_x), (_, feature_y)) in enumerate(streams, start=1):
            similarity = similarity + _similarity(feature_x, feature_y,
                                                  getattr(self, f"alpha{index}"),
                                                  getattr(self, f"beta{index}"))
            del feature_x, feature_y
        distance = 1.0 - similarity
        if mode == "per_channel":
            distance = distance.view(prediction.shape[0], -1).mean(1)
        return reduce(distance, self.reduction)

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` ``(N, C, H, W)`` as the official protocol scores it (see the class)."""
        size = official_size(image.shape[-2], image.shape[-1],
                             self.short_side or max(image.shape[-2:]))
        if size == tuple(image.shape[-2:]):
            return image
        with torch.autocast(device_type=image.device.type, enabled=False):
            dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
            shrunk = F.interpolate(image.to(dtype), size=size, mode="bilinear",
                                   align_corners=False, antialias=True)
            return shrunk.to(image.dtype)

    def extra_repr(self) -> str:
        return (f"weights={self.extractor.weights_source!r}, input_range={self.input_range}, "
                f"reduction={self.reduction!r}, short_side={self.short_side}")



@functools.lru_cache(maxsize=8)
def _cached_metric(weights: str | None, input_range: tuple[float, float], channel_mode: str,
                   short_side: int | None, device: str) -> DISTS:
    metric = DISTS(weights=weights, input_range=input_range, channel_mode=channel_mode,  # type: ignore[arg-type]
                   short_side=short_side)
    return metric.to(device)


def dists_distance(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    weights: str | os.PathLike[str] | None = "imagenet",
    input_range: tuple[float, float] = (0.0, 1.0),
    channel_mode: ChannelMode = "repeat",
    short_side: int | None = DISTS_SHORT_SIDE,
    reduction: Reduction = "none",
    metric: DISTS | None = None,
) -> torch.Tensor:
    """DISTS as a function: the value of :class:`DISTS`, with no module for you to keep.

    Modules are kept in a cache of eight, one per configuration and device (the twin of
    :func:`~perceptual_loss.metrics.lpips.lpips_distance`); a loop pays for one VGG16.

    Args:
        prediction: The judged images ``(N, C, H, W)``, values in ``input_range``.
        target: The references, of the same shape, dtype and device.
        weights: VGG16 trunk weights (see :class:`DISTS`).
        input_range: ``(low, high)`` of the images.
        channel_mode: ``"repeat"`` or ``"per_channel"``.
        short_side: The official protocol's resize (see :class:`DISTS`); ``None``: full size.
        reduction: ``"none"`` (``(N,)``), ``"mean"`` or ``"sum"``.
        metric: A prebuilt :class:`DISTS` with ``reduction="none"``; the other options are
            then ignored except ``reduction``.

    Returns:
        ``(N,)`` distances, or their mean/sum.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)
        >>> dists_distance(x, y, weights=None).shape  # random trunk: for illustration only
        torch.Size([2])
    """
    weights_key = None if weights is None else os.fspath(weights)
    return twin_value(prediction, target, reduction, metric, lambda device: _cached_metric(
        weights_key, check_input_range(input_range), channel_mode, short_side, device))


def scorer_metric(settings: MetricSettings) -> tuple[DISTS, str]:
    """DISTS as ``perceptual compare`` scores with it (its registry factory).

    ``settings.weights`` go on the VGG16 trunk where they fit it; otherwise its ImageNet
    weights are used and a note says why. ``--weights random`` gives a random trunk.

    Returns:
        ``(metric, weights label)`` with ``reduction="none"``.
    """
    return weights_or_imagenet(lambda weights: DISTS(weights=weights), settings, "dists",
                               "vgg16")
