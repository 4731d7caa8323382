"""ReLU masks packed eight to a byte, for the lean trunk's ``bits=True`` plans.

A lean convolution + ReLU step saves where its output is positive; as ``torch.bool`` that is
one byte per element, packed here one bit (8x less mask memory for a few percent more time).
The packing follows the mask's memory order, so a ``channels_last`` mask packs without a copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pack_mask", "unpack_mask"]

_BIT_WEIGHTS_CACHE: dict[torch.device, Tensor] = {}


def _bit_weights(device: torch.device) -> Tensor:
    """``[1, 2, 4, ..., 128]`` as uint8 on ``device`` (cached)."""
    weights = _BIT_WEIGHTS_CACHE.get(device)
    if weights is None:
        weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=device)
        _BIT_WEIGHTS_CACHE[device] = weights
    return weights


def _memory_order(t: Tensor) -> tuple[Tensor, bool]:
    """A view of ``t`` whose logical order is its memory order, and whether it was permuted."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last
    ):
        return t.permute(0, 2, 3, 1), True
    return t.contiguous(), False


def pack_mask(mask: Tensor) -> tuple[Tensor, torch.Size, bool]:
    """Pack a boolean tensor into bits, eight elements per byte.

    Args:
        mask: Boolean tensor of any shape, contiguous or ``channels_last``.

    Returns:
        ``(packed, shape, permuted)``: ``packed`` is a 1-D ``torch.uint8`` tensor of
        ``ceil(mask.numel() / 8)`` bytes; pass all three to :func:`unpack_mask`.

    Raises:
        TypeError: If ``mask`` is not boolean.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"pack_mask expects a torch.bool tensor, got {mask.dtype}")
    ordered, permuted = _memory_order(mask)
    flat = ordered.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    as_bytes = flat.view(-1, 8).view(torch.uint8)
    packed = (as_bytes * _bit_weights(mask.device)).sum(dim=1, dtype=torch.uint8)
    return packed, ordered.shape, permuted


def unpack_mask(packed: Tensor, shape: torch.Size, permuted: bool) -> Tensor:
    """Inverse of :func:`pack_mask`: the boolean tensor, in its original memory format."""
    numel = 1
    for size in shape:
        numel *= size
    bits = (packed.unsqueeze(1) & _bit_weights(packed.device)).ne(0).view(-1)[:numel]
    mask = bits.view(shape)
    return mask.permute(0, 3, 1, 2) if permuted else mask
