"""Trunk geometry: channels, stride, receptive field and minimum input size of each tap.

Computed once from shapes alone (modules built on the ``meta`` device, no weights, no data),
and read by every consumer: the extractor (input size errors, ``feature_info``), the LPIPS
metric and the tiled perceptual metric (tile alignment and overlap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["TapGeometry", "TrunkGeometry", "round_up"]

_MAX_PROBE_SIZE = 4096


@dataclass(frozen=True)
class TapGeometry:
    """Where one tapped feature map lies relative to the input image.

    Attributes:
        channels: Channels of the map.
        stride: Input pixels per feature pixel.
        receptive: Side of the receptive field of one feature pixel, in input pixels.
        offset: Input position of the receptive field of feature pixel 0 (negative where
            padding reaches outside the image); feature pixel ``i`` sees
            ``[offset + i * stride, offset + i * stride + receptive)``.
    """

    channels: int
    stride: int
    receptive: int
    offset: int

    @property
    def margin(self) -> int:
        """Context in pixels a tile needs beyond its core for exact values at its edge."""
        return max(-self.offset, self.offset + self.receptive - 1, 0)


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return int(math.ceil(value / multiple) * multiple)


def _windows(module: nn.Module) -> list[tuple[int, int, int, int]]:
    """``(kernel, stride, padding, dilation)`` of each sliding window in ``module``, in order.

    Modules with children are walked in registration order, as if their windows ran one after
    the other; for parallel branches (SqueezeNet's Fire) this overestimates the receptive
    field, which only makes tile margins safer.
    """
    def first(value: int | Sequence[int]) -> int:
        return int(value if isinstance(value, int) else max(value))

    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            pad = (first(module.kernel_size) - 1) // 2 * first(module.dilation)
        else:
            pad = first(module.padding)
        return [(first(module.kernel_size), first(module.stride), pad, first(module.dilation))]
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) or hasattr(module, "kernel_size"):
        dilation = first(getattr(module, "dilation", 1))
        stride = module.stride if module.stride is not None else module.kernel_size
        return [(first(module.kernel_size), first(stride), first(module.padding), dilation)]
    windows: list[tuple[int, int, int, int]] = []
    for name, child in module.named_children():
        if name == "downsample":
            continue  # a ResNet shortcut runs beside the main path and sees less than it
        windows.extend(_windows(child))
    return windows


def _fits(modules: Sequence[nn.Module], size: int, channels: int = 3,
          spatial_dims: int = 2) -> bool:
    """Whether a ``size`` x ``size`` image (or cube) passes through ``modules`` (shapes only)."""
    x = torch.empty(1, channels, *(size,) * spatial_dims, device="meta")
    try:
        for module in modules:
            x = module(x)
            if min(x.shape[2:]) < 1:
                return False
    except RuntimeError:
        return False
    return True


class TrunkGeometry:
    """Geometry of the taps of a sequential trunk, from a shapes-only copy of it.

    Args:
        meta_modules: The trunk's modules up to the deepest tap, on the ``meta`` device and in
            eval mode (batch norm in eval mode accepts 1x1 maps).
        taps: ``{module index: layer name}``.
        in_channels: Channels of the trunk's input.
        spatial_dims: 2 for images, 3 for volumes (probed with cubes).

    Attributes:
        min_input_size: Smallest square input side every module accepts.
        taps: ``{layer name: TapGeometry}`` in depth order.
    """

    def __init__(self, meta_modules: Sequence[nn.Module], taps: Mapping[int, str], *,
                 in_channels: int = 3, spatial_dims: int = 2) -> None:
        self._modules = list(meta_modules)
        self._input = (in_channels, spatial_dims)
        self._taps = dict(sorted(taps.items()))
        self.min_input_size = self._min_input_size()
        self.taps: dict[str, TapGeometry] = self._describe()

    def _min_input_size(self) -> int:
        low, high = 1, 8
        while not _fits(self._modules, high, *self._input):
            low, high = high + 1, high * 2
            if high > _MAX_PROBE_SIZE:
                raise ValueError(f"no input size up to {_MAX_PROBE_SIZE} fits this backbone")
        while low < high:
            mid = (low + high) // 2
            if _fits(self._modules, mid, *self._input):
                high = mid
            else:
                low = mid + 1
        return high

    def _describe(self) -> dict[str, TapGeometry]:
        # Channels from a probe; the stride from the growth of each map between two probe
        # sizes 1024 pixels apart (the rounding of strided layers does not bias it).
        base = max(self.min_input_size, 64) * 4
        probes: list[dict[int, tuple[int, int]]] = []
        for size in (base, base + 1024):
            probes.append(dict(zip(self._taps, self.map_shapes(size, size), strict=True)))
        stride, receptive, offset = 1, 1, 0
        found: dict[str, TapGeometry] = {}
        for index, module in enumerate(self._modules):
            for kernel, step, pad, dilation in _windows(module):
                receptive += (kernel - 1) * dilation * stride
                offset -= pad * stride
                stride *= step
            if index in self._taps:
                grown = probes[1][index][1] - probes[0][index][1]
                found[self._taps[index]] = TapGeometry(
                    channels=probes[0][index][0], stride=max(1, round(1024 / grown)),
                    receptive=receptive, offset=offset)
        return found

    def map_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(channels, width)`` of each tapped map for a ``height`` x ``width`` image."""
        return [(c, w) for c, _, w in self._probe(height, width)]

    def map_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(height, width)`` of each tapped map, in depth order."""
        return [(h, w) for _, h, w in self._probe(height, width)]

    def _probe(self, height: int, width: int) -> list[tuple[int, int, int]]:
        channels, spatial_dims = self._input
        x = torch.empty(1, channels, *(height,) * (spatial_dims - 1), width, device="meta")
        shapes = []
        for index, module in enumerate(self._modules):
            x = module(x)
            if index in self._taps:
                shapes.append((int(x.shape[1]), int(x.shape[-2]), int(x.shape[-1])))
        return shapes
