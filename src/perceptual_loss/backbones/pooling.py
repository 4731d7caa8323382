"""Pooling layers a trunk can use in place of its max pooling: average and L2 (DISTS).

The trained network pools with 2x2 max pooling; Gatys et al. prefer average pooling for
style, and DISTS (Ding et al. 2020) uses L2 pooling with a Hanning window, which is free of
aliasing. :func:`replace_pooling` swaps them in on the same weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["POOLINGS", "L2Pool2d", "replace_pooling"]

#: ``"max"`` (as trained), ``"avg"`` (2x2 average) or ``"l2"`` (DISTS' Hanning L2 pooling).
POOLINGS: tuple[str, ...] = ("max", "avg", "l2")


class L2Pool2d(nn.Module):
    """``sqrt(hanning * x^2 + 1e-12)`` per channel, stride 2: DISTS' anti-aliased pooling.

    The window is the 3x3 outer product of ``hanning(5)[1:-1] = (0.5, 1, 0.5)``, normalised to
    sum 1, with padding 1, so an ``H`` x ``W`` map becomes ``ceil(H/2)`` x ``ceil(W/2)``.
    Computed in float32 (float64 stays float64), also under autocast: squares of large
    activations overflow float16. The result is float32 under autocast, else the input's
    dtype (a network converted with ``.half()`` stays half).

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, ceil(H/2), ceil(W/2))``.

    References:
        Ding, Ma, Wang, Simoncelli, "Image Quality Assessment: Unifying Structure and Texture
        Similarity", IEEE TPAMI 2020.
    """

    kernel_size, stride, padding = 3, 2, 1

    def __init__(self) -> None:
        super().__init__()
        hanning = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
        window = torch.outer(hanning, hanning)
        self.register_buffer("window", (window / window.sum()).float().view(1, 1, 3, 3),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``x``; see the class docstring for shapes."""
        autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(
            x.device.type)
        dtype = x.dtype
        no_autocast = (torch.autocast(device_type=x.device.type, enabled=False)
                       if x.device.type in ("cpu", "cuda") else contextlib.nullcontext())
        with no_autocast:
            x = x if x.dtype in (torch.float32, torch.float64) else x.float()
            window = self.window.to(x.device, x.dtype).expand(x.shape[1], 1, 3, 3)
            pooled = F.conv2d(x * x, window, stride=self.stride, padding=self.padding,
                              groups=x.shape[1])
            pooled = (pooled + 1e-12).sqrt()
        # Under autocast the next convolution casts for itself; a network converted to half
        # precision (.half()) needs its own dtype back.
        return pooled if autocast else pooled.to(dtype)


def replace_pooling(modules: Sequence[nn.Module], pooling: str) -> list[nn.Module]:
    """``modules`` with every ``MaxPool2d`` replaced as ``pooling`` says (same weights).

    Args:
        modules: A trunk's modules in order.
        pooling: One of :data:`POOLINGS`; ``"avg"`` keeps each window's kernel and stride.

    Returns:
        A new list (the modules themselves are shared, not copied).
    """
    if pooling == "max":
        return list(modules)
    if pooling == "avg":
        return [nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
                if isinstance(m, nn.MaxPool2d) else m for m in modules]
    if pooling == "l2":
        return [L2Pool2d() if isinstance(m, nn.MaxPool2d) else m for m in modules]
    raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
