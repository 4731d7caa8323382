"""The maths of the losses in backend-agnostic ``keras.ops``, for channels-last tensors.

Each function mirrors its PyTorch namesake in :mod:`perceptual_loss.functional` and returns
the same values for the same data (feature maps here are ``(N, H, W, C)`` where the PyTorch
side has ``(N, C, H, W)``). Distances return one value per sample, ``(N,)``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from perceptual_loss.functional import CRITERIA, Criterion, Ops
from perceptual_loss.keras._compat import import_keras

keras = import_keras()
ops = keras.ops

__all__ = [
    "KERAS_OPS",
    "feature_distance",
    "gram_matrix",
    "normalize_channels",
    "ssim",
    "total_variation",
]

Tensor = Any  # a backend tensor (torch.Tensor, jax.Array, tf.Tensor)


def _float32(x: Tensor) -> Tensor:
    """``x`` in at least float32 precision (float64 stays float64)."""
    if keras.backend.standardize_dtype(x.dtype) in ("float32", "float64"):
        return x
    return ops.cast(x, "float32")


def _mean(x: Tensor, axis: int | tuple[int, ...]) -> Tensor:
    """``ops.mean`` that keeps float64 in float64 (Keras' torch backend averages it in float32)."""
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        return ops.mean(x, axis=axis)
    axes = (axis,) if isinstance(axis, int) else axis
    count = 1
    for a in axes:
        count = count * ops.shape(x)[a]
    return ops.sum(x, axis=axis) / ops.cast(count, x.dtype)


def gram_matrix(features: Tensor) -> Tensor:
    """Gram matrices of channels-last feature maps, normalised by ``C * H * W``.

    Computed in float32 (float64 stays float64), whatever the dtype policy: a half-precision
    product of large activations loses precision or overflows.

    Args:
        features: ``(N, H, W, C)``.

    Returns:
        ``(N, C, C)``: ``G[n, i, j] = sum_hw F[n, hw, i] F[n, hw, j] / (C * H * W)``, the same
        matrix as :func:`perceptual_loss.gram_matrix` of the ``(N, C, H, W)`` layout.

    Raises:
        ValueError: ``features`` is not 4-dimensional.

    Example:
        >>> import numpy as np
        >>> keras.ops.convert_to_numpy(gram_matrix(np.ones((1, 3, 3, 2), "float32"))).tolist()
        [[[0.5, 0.5], [0.5, 0.5]]]

    References:
        Gatys et al., "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
        Johnson et al., "Perceptual Losses for Real-Time Style Transfer and
        Super-Resolution", ECCV 2016 (the ``C * H * W`` normalisation).
    """
    features = ops.convert_to_tensor(features)
    if len(features.shape) != 4:
        raise ValueError(
            f"gram_matrix expects channels-last feature maps (N, H, W, C); got shape "
            f"{tuple(features.shape)}"
        )
    _, h, w, c = ops.shape(features)
    flat = ops.reshape(_float32(features), (-1, h * w, c))
    return ops.matmul(ops.transpose(flat, (0, 2, 1)), flat) / ops.cast(c * h * w, flat.dtype)


def normalize_channels(features: Tensor, eps: float = 1e-10) -> Tensor:
    """Scale every feature vector (over the last, channel axis) to unit length, as LPIPS does.

    Uses ``f / sqrt(sum_c f^2 + eps^2)``, finite where a feature vector is all zero.

    Args:
        features: ``(N, H, W, C)``.
        eps: Stabiliser.

    Returns:
        ``(N, H, W, C)`` in float32, unit-length along ``C`` (zero where the input is zero).
    """
    f = _float32(ops.convert_to_tensor(features))
    return f * ops.rsqrt(ops.sum(ops.square(f), axis=-1, keepdims=True) + eps * eps)


def feature_distance(prediction: Tensor, target: Tensor, criterion: Criterion = "l1", *,
                     eps: float = 1e-3) -> Tensor:
    """Mean elementwise distance per sample.

    Args:
        prediction: ``(N, ...)``.
        target: Same shape, or broadcastable to it (``(1, ...)`` for one shared target).
        criterion: ``"l1"`` (mean absolute), ``"mse"``/``"l2"`` (mean squared),
            ``"charbonnier"`` (mean of ``sqrt(d^2 + eps^2)``, a smooth L1), or ``"sse"``
            (squared differences summed over channels, averaged over positions).
        eps: Charbonnier's smoothing constant.

    Returns:
        ``(N,)`` in float32 (float64 stays float64).

    Raises:
        ValueError: Unknown criterion; the message lists the valid ones.
    """
    diff = _float32(ops.convert_to_tensor(prediction)) - _float32(ops.convert_to_tensor(target))
    if criterion == "l1":
        per_element = ops.abs(diff)
    elif criterion in ("mse", "l2", "sse"):
        per_element = ops.square(diff)
    elif criterion == "charbonnier":
        per_element = ops.sqrt(ops.square(diff) + eps * eps)
    else:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    mean = _mean(per_element, axis=tuple(range(1, len(per_element.shape))))
    # "sse" sums over channels: the last axis here (channels last)
    return mean * per_element.shape[-1] if criterion == "sse" else mean


def total_variation(images: Tensor, kind: Literal["l1", "l2"] = "l1") -> Tensor:
    """Total variation per sample of channels-last images.

    Args:
        images: ``(N, H, W, C)`` with ``H, W >= 2``.
        kind: ``"l1"`` (anisotropic TV) or ``"l2"`` (squared differences, as Johnson et al.).

    Returns:
        ``(N,)``: mean over vertical differences plus mean over horizontal differences.

    Raises:
        ValueError: Wrong rank, too small, or unknown ``kind``.
    """
    images = ops.convert_to_tensor(images)
    shape = tuple(images.shape)
    if len(shape) != 4 or any(s is not None and s < 2 for s in shape[1:3]):
        raise ValueError(f"total_variation expects (N, H, W, C) with H, W >= 2; got {shape}")
    dy = images[:, 1:, :, :] - images[:, :-1, :, :]
    dx = images[:, :, 1:, :] - images[:, :, :-1, :]
    if kind == "l1":
        dy, dx = ops.abs(dy), ops.abs(dx)
    elif kind == "l2":
        dy, dx = ops.square(dy), ops.square(dx)
    else:
        raise ValueError(f"kind must be 'l1' or 'l2'; got {kind!r}")
    return _mean(dy, axis=(1, 2, 3)) + _mean(dx, axis=(1, 2, 3))


def ssim(prediction: Tensor, target: Tensor, *, data_range: float = 1.0,
         win_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per sample of channels-last images, as pytorch-msssim computes it.

    A separable Gaussian window (``win_size``, ``sigma``) without padding, ``K1=0.01``,
    ``K2=0.03``, the SSIM map averaged over positions and then channels; in float32.

    Args:
        prediction: ``(N, H, W, C)`` with ``H, W >= win_size``.
        target: Same shape.
        data_range: Span of the values (1 for images in ``[0, 1]``).
        win_size: Side of the Gaussian window.
        sigma: Its standard deviation in pixels.

    Returns:
        ``(N,)`` in ``[-1, 1]`` (1 for identical images).
    """
    x = _float32(ops.convert_to_tensor(prediction))
    y = _float32(ops.convert_to_tensor(target))
    shape = tuple(x.shape)
    if any(s is not None and s < win_size for s in shape[1:3]):
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size} pixels, got "
                         f"{shape[1]}x{shape[2]}; drop the SSIM term for smaller images")
    channels = shape[-1]
    coords = np.arange(win_size, dtype=np.float32) - win_size // 2
    window = np.exp(-(coords ** 2) / np.float32(2 * sigma ** 2)).astype(np.float32)
    window /= window.sum()
    rows = ops.cast(np.tile(window.reshape(win_size, 1, 1, 1), (1, 1, channels, 1)), x.dtype)
    cols = ops.cast(np.tile(window.reshape(1, win_size, 1, 1), (1, 1, channels, 1)), x.dtype)

    def blur(images: Tensor) -> Tensor:
        images = ops.depthwise_conv(images, rows, strides=1, padding="valid")
        return ops.depthwise_conv(images, cols, strides=1, padding="valid")

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    contrast = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = ((2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)) * contrast
    return _mean(ssim_map, axis=(1, 2, 3))


def _match_batch(reference: Tensor, like: Tensor) -> Tensor:
    """Repeat a cached target of one image (or of its channels) over a batch."""
    cached, batch = reference.shape[0], like.shape[0]
    if cached == batch or cached is None or batch is None:
        return reference
    if batch % cached == 0:
        return ops.tile(reference, (batch // cached,) + (1,) * (len(reference.shape) - 1))
    raise ValueError(f"cached target has batch {cached}, which does not fit a batch of "
                     f"{batch}; cache one image or a batch of the same size")


def _per_image(values: Tensor, n: Any) -> Tensor:
    """Average per-image values over the channels that ``per_channel`` mode stacked."""
    if values.shape[0] is not None and values.shape[0] == n:
        return values
    return _mean(ops.reshape(values, (n, -1)), axis=1)


#: Keras primitives for :func:`perceptual_loss.recipe.feature_terms` and ``pixel_terms``.
KERAS_OPS = Ops(
    distance=lambda p, t, criterion, eps: feature_distance(p, t, criterion, eps=eps),  # type: ignore[arg-type]
    gram=gram_matrix, normalize=normalize_channels, per_image=_per_image,
    match_batch=_match_batch, ssim=ssim, total_variation=total_variation,
)
