"""Pure functions: the maths of the losses, free of modules and state.

Distances return one value per sample, ``(N,)``; reduce them with :func:`reduce`.
:data:`TORCH_OPS` bundles the primitives the shared term plan
(:mod:`perceptual_loss.recipe`) needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from perceptual_loss._checks import Reduction, check_reduction

__all__ = [
    "CRITERIA",
    "TORCH_OPS",
    "Ops",
    "Criterion",
    "Reduction",
    "feature_distance",
    "feature_distance_map",
    "gram_matrix",
    "import_ssim",
    "match_batch",
    "normalize_channels",
    "psnr",
    "reduce",
    "ssim",
    "total_variation",
    "unit_difference",
    "unit_feature_distance",
]

Criterion = Literal["l1", "mse", "l2", "charbonnier", "sse"]
CRITERIA: tuple[str, ...] = ("l1", "mse", "l2", "charbonnier", "sse")
SSIM_INSTALL_HINT = 'pip install "perceptual-loss[ssim]"'


def _float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32 precision (float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices of feature maps, normalised by ``C * H * W``.

    Computed in float32 (float64 stays float64) even under autocast, where a half-precision
    product of large activations would lose precision or overflow.

    Args:
        features: ``(N, C, H, W)``, or ``(N, C, D, H, W)`` (a 3D network's maps: normalised
            by ``C * D * H * W``).

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
    if features.ndim == 5:  # volumes: positions are D * H * W
        n, c = features.shape[:2]
        with torch.autocast(device_type=features.device.type, enabled=False):
            positions = features.shape[2] * features.shape[3] * features.shape[4]
            return _Gram.apply(_float32(features).reshape(n, c, -1), False, c * positions)
    if features.ndim != 4:
        raise ValueError(f"gram_matrix expects (N, C, H, W) or (N, C, D, H, W); got "
                         f"{tuple(features.shape)}")
    n, c, h, w = features.shape
    with torch.autocast(device_type=features.device.type, enabled=False):
        features = _float32(features)
        if not features.is_contiguous() and features.is_contiguous(
                memory_format=torch.channels_last):
            # (N, H*W, C) is a view of channels-last memory: no copy of the map
            rows = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
            return _Gram.apply(rows, True, c * h * w)
        return _Gram.apply(features.reshape(n, c, h * w), False, c * h * w)


class _Gram(torch.autograd.Function):
    """``A A^T / scale`` for ``A`` ``(N, C, K)`` (or ``A^T A`` for ``(N, K, C)`` rows).

    Autograd's own backward of ``bmm(A, A^T)`` takes two products and adds them in transposed
    layouts; the Gram's gradient is one product, ``(dG + dG^T) A / scale``. The backward is
    written in differentiable operations, so double backward works.
    """

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, rows: bool, scale: int) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(matrix)
        ctx.rows, ctx.scale = rows, scale
        transposed = matrix.transpose(1, 2)
        product = torch.bmm(transposed, matrix) if rows else torch.bmm(matrix, transposed)
        return product.div_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        (matrix,) = ctx.saved_tensors
        symmetric = grad + grad.transpose(1, 2)
        product = torch.bmm(matrix, symmetric) if ctx.rows else torch.bmm(symmetric, matrix)
        return product / ctx.scale, None, None


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


def unit_feature_distance(features_a: torch.Tensor, features_b: torch.Tensor, *,
                          groups: int = 1, channel_wise: bool = False,
                          eps: float = 1e-5) -> torch.Tensor:
    """MONAI's perceptual distance: unit-length features, squared difference, mean position.

    Each map's feature vectors are scaled to unit length over channels
    (:func:`normalize_channels` with ``eps``; ``1e-5`` is MONAI's ``eps^2 = 1e-10``), the
    squared difference is summed over channels and averaged over positions. This is the
    unlearned LPIPS distance of one layer times its channel count.

    Args:
        features_a: ``(N, C, ...)`` maps (2D or 3D).
        features_b: Maps of the same shape.
        groups: Blocks of channels normalised together but reported apart with
            ``channel_wise`` (a multi-channel volume through a single-channel network).
        channel_wise: One value per block of ``C / groups`` channels.
        eps: Stabiliser of the unit-length scaling.

    Returns:
        ``(N,)`` float32 (float64 stays float64), or ``(N, groups)`` with ``channel_wise``.

    Example:
        >>> a = torch.tensor([[[[1.0]], [[0.0]]]])
        >>> b = torch.tensor([[[[0.0]], [[2.0]]]])
        >>> unit_feature_distance(a, b, eps=0.0)
        tensor([2.])
    """
    with torch.autocast(device_type=features_a.device.type, enabled=False):
        diff = (normalize_channels(features_a, eps) - normalize_channels(features_b, eps)).pow(2)
        n = diff.shape[0]
        if channel_wise:
            return diff.reshape(n, groups, diff.shape[1] // groups, -1).sum(2).mean(-1)
        return diff.sum(1).reshape(n, -1).mean(1)


def unit_difference(first: torch.Tensor, second: torch.Tensor,
                    eps: float = 1e-10) -> torch.Tensor:
    """``normalize_channels(first) - normalize_channels(second)`` (LPIPS' difference).

    Args:
        first: ``(N, C, H, W)`` feature maps.
        second: Feature maps of the same shape.
        eps: As :func:`normalize_channels`.

    Returns:
        ``(N, C, H, W)`` in float32 (float64 stays float64). Without a gradient to record the
        norms are read in one pass each and the difference is built in place: three full-size
        passes and two allocations instead of six and three (large maps are memory-bound).
    """
    if torch.is_grad_enabled() and (first.requires_grad or second.requires_grad):
        return normalize_channels(first, eps) - normalize_channels(second, eps)
    with torch.autocast(device_type=first.device.type, enabled=False):
        first, second = _float32(first), _float32(second)
        difference = first * _inverse_norm(first, eps)
        # Two rounded products subtracted (not a fused multiply-add): equal maps give zeros.
        return difference.sub_(second * _inverse_norm(second, eps))


def _inverse_norm(features: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / sqrt(sum_c f^2 + eps^2)`` as ``(N, 1, H, W)``, from one read of ``features``."""
    norm = torch.linalg.vector_norm(features, dim=1, keepdim=True)
    return norm.square_().add_(eps * eps).rsqrt_()


def feature_distance(prediction: torch.Tensor, target: torch.Tensor,
                     criterion: Criterion = "l1", *, eps: float = 1e-3) -> torch.Tensor:
    """Mean elementwise distance per sample.

    Args:
        prediction: ``(N, ...)``.
        target: Same shape, or broadcastable to it (e.g. ``(1, ...)`` for one style image).
        criterion: ``"l1"`` (mean absolute), ``"mse"``/``"l2"`` (mean squared),
            ``"charbonnier"`` (mean of ``sqrt(d^2 + eps^2)``, a smooth L1), or ``"sse"``
            (squared differences summed over channels, dimension 1, and averaged over the
            rest: ``C`` times ``"mse"``; on unit-length features, ``normalize_features=True``,
            it is MONAI's perceptual distance and LPIPS without its learned heads).
        eps: Charbonnier's smoothing constant.

    Returns:
        ``(N,)``, computed in float32 (float64 stays float64).
    """
    if criterion == "l1":
        return _MeanAbsolutePerSample.apply(prediction, target)
    diff = _float32(prediction) - _float32(target)
    if criterion in ("mse", "l2", "sse"):
        per_element = diff.pow(2)
    elif criterion == "charbonnier":
        per_element = torch.sqrt(diff.pow(2) + eps * eps)
    else:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    mean = _mean_per_sample(per_element)
    return mean * per_element.shape[1] if criterion == "sse" else mean


def _mean_per_sample(values: torch.Tensor) -> torch.Tensor:
    """``(N, ...) -> (N,)``: the mean of each sample, read in memory order.

    A channels-last map is not copied first, as ``reshape(N, -1)`` would copy it.
    """
    if values.dim() == 1:
        return values
    return values.mean(dim=tuple(range(1, values.dim())))


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
        ctx.count = diff[0].numel()
        return _mean_per_sample(diff.abs_())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # noqa: ANN001
        (sign,) = ctx.saved_tensors
        scale = (grad / ctx.count).view(-1, *([1] * (sign.dim() - 1)))
        grad_diff = sign.to(scale.dtype).mul_(scale)
        grad_prediction = grad_target = None
        if ctx.needs_input_grad[0]:
            grad_prediction = grad_diff.sum_to_size(ctx.shapes[0]).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_target = (-grad_diff).sum_to_size(ctx.shapes[1]).to(ctx.dtypes[1])
        return grad_prediction, grad_target


def feature_distance_map(prediction: torch.Tensor, target: torch.Tensor,
                         criterion: Criterion = "l1", *, eps: float = 1e-3) -> torch.Tensor:
    """Elementwise distance summed over channels: a map ``(N, 1, H, W)`` in float32.

    ``map.sum((1, 2, 3)) / (C * H * W)`` is :func:`feature_distance` (``/ (H * W)`` for
    ``"sse"``, which sums over channels); maps of tiles can be stitched into the map of a
    whole image (:mod:`perceptual_loss.tiling`).
    """
    diff = _float32(prediction) - _float32(target)
    if criterion == "l1":
        per_element = diff.abs()
    elif criterion in ("mse", "l2", "sse"):
        per_element = diff.square()
    elif criterion == "charbonnier":
        per_element = torch.sqrt(diff.square() + eps * eps)
    else:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of: {', '.join(CRITERIA)}")
    return per_element.sum(dim=1, keepdim=True)


def total_variation(images: torch.Tensor, kind: Literal["l1", "l2"] = "l1") -> torch.Tensor:
    """Total variation per sample: mean absolute (or squared) difference of neighbours.

    Args:
        images: ``(N, C, H, W)`` with ``H, W >= 2``, or volumes ``(N, C, D, H, W)`` with
            every side ``>= 2``.
        kind: ``"l1"`` (anisotropic TV) or ``"l2"`` (squared differences, as Johnson et al.).

    Returns:
        ``(N,)``: mean over vertical differences plus mean over horizontal differences (plus,
        for volumes, the mean over differences along depth, first).
    """
    if images.ndim not in (4, 5) or min(images.shape[2:]) < 2:
        raise ValueError(f"total_variation expects (N, C, H, W) (or (N, C, D, H, W)) with "
                         f"every side >= 2; got {tuple(images.shape)}")
    if kind not in ("l1", "l2"):
        raise ValueError(f"kind must be 'l1' or 'l2'; got {kind!r}")
    total = None
    for axis in range(2, images.ndim):
        difference = images.diff(dim=axis)
        difference = difference.abs() if kind == "l1" else difference.pow(2)
        mean = difference.flatten(1).mean(1)
        total = mean if total is None else total + mean
    assert total is not None
    return total


def reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """Reduce per-sample values ``(N,)`` (or maps) over the batch, or keep them (``none``)."""
    check_reduction(reduction)
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def import_ssim():  # noqa: ANN201 - pytorch_msssim is optional
    """``pytorch_msssim.ssim``, or an ImportError that says how to install it."""
    try:
        from pytorch_msssim import ssim as msssim_ssim
    except ImportError as err:
        raise ImportError(f"SSIM needs pytorch-msssim: {SSIM_INSTALL_HINT}") from err
    return msssim_ssim


def ssim(prediction: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0,
         win_size: int = 11) -> torch.Tensor:
    """Structural similarity per sample (Gaussian window 11, sigma 1.5), via pytorch-msssim.

    Computed in float32, or float64 for float64 inputs, also under autocast.

    Args:
        prediction: ``(N, C, H, W)`` with ``H, W >= win_size``.
        target: Same shape.
        data_range: Span of the values (1 for images in ``[0, 1]``).
        win_size: Side of the Gaussian window.

    Returns:
        ``(N,)`` in ``[-1, 1]`` (1 for identical images).

    Raises:
        ImportError: pytorch-msssim is not installed.
        ValueError: Images smaller than the window.
    """
    if min(prediction.shape[-2:]) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size} pixels, got "
                         f"{tuple(prediction.shape[-2:])}; drop the SSIM term for smaller images")
    compute = import_ssim()
    with torch.autocast(device_type=prediction.device.type, enabled=False):
        return compute(_float32(prediction), _float32(target), data_range=data_range,
                       size_average=False, win_size=win_size)


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0
         ) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample, computed in float64.

    Args:
        prediction: ``(N, ...)``.
        target: Same shape.
        data_range: Span of the values (1 for images in ``[0, 1]``).

    Returns:
        ``(N,)`` float64; ``inf`` where the images are equal.

    Example:
        >>> round(float(psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1))), 2)
        20.0
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"psnr needs equal shapes, got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    mse = (prediction.double() - target.double()).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def match_batch(reference: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a target computed for one image (or one image's channels) over a batch.

    Callers check at the image level that a cached target holds 1 or ``N`` images, so a
    batch is never tiled from a partial one.
    """
    if reference.shape[0] == like.shape[0]:
        return reference
    if like.shape[0] % reference.shape[0]:
        raise ValueError(f"cached target batch {reference.shape[0]} does not fit a batch of "
                         f"{like.shape[0]}; cache one image or a batch of the same size")
    repeats = like.shape[0] // reference.shape[0]
    return reference.unsqueeze(0).expand(repeats, *reference.shape).reshape(
        like.shape[0], *reference.shape[1:])


@dataclass(frozen=True)
class Ops:
    """The backend primitives the shared term plan needs (:mod:`perceptual_loss.recipe`).

    Each backend (torch here, ``keras.ops`` in :mod:`perceptual_loss.keras.functional`)
    provides one instance; feature maps are in that backend's layout. Distances return one
    value per sample ``(N,)``.

    Attributes:
        distance: ``(prediction, target, criterion, eps) -> (N,)``.
        gram: Feature maps -> Gram matrices ``(N, C, C)`` in float32.
        normalize: Unit-length feature vectors over channels.
        per_image: ``(values, n) -> (N,)``: average the channels ``per_channel`` mode stacked.
        match_batch: ``(reference, like)``: broadcast a one-image target over a batch.
        ssim: ``(prediction01, target01) -> (N,)``.
        total_variation: Images -> ``(N,)``.
        distance_map: ``(prediction, target, criterion, eps) -> (N, 1, H, W)``: the distance
            summed over channels at each position (``None`` where a backend has none yet).
    """

    distance: Callable[[Any, Any, str, float], Any]
    gram: Callable[[Any], Any]
    normalize: Callable[[Any], Any]
    per_image: Callable[[Any, Any], Any]
    match_batch: Callable[[Any, Any], Any]
    ssim: Callable[[Any, Any], Any]
    total_variation: Callable[[Any], Any]
    distance_map: Callable[[Any, Any, str, float], Any] | None = None


def _per_image(values: torch.Tensor, n: int) -> torch.Tensor:
    """Average per-image values over the channels that ``per_channel`` mode stacked."""
    return values.view(n, -1).mean(1) if values.shape[0] != n else values


def _ssim_term(prediction01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
    """SSIM in the images' float precision (float32, or float64 for float64 images)."""
    value = ssim(prediction01, target01)
    return value.to(torch.float64 if prediction01.dtype == torch.float64 else torch.float32)


#: Torch primitives for :func:`perceptual_loss.recipe.feature_terms` and ``pixel_terms``.
TORCH_OPS = Ops(
    distance=lambda p, t, criterion, eps: feature_distance(p, t, criterion, eps=eps),  # type: ignore[arg-type]
    gram=gram_matrix, normalize=normalize_channels, per_image=_per_image,
    match_batch=match_batch, ssim=_ssim_term, total_variation=total_variation,
    distance_map=lambda p, t, criterion, eps: feature_distance_map(p, t, criterion, eps=eps),  # type: ignore[arg-type]
)
