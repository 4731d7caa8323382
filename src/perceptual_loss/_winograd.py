"""Winograd F(4x4, 3x3) convolution for the frozen 3x3 layers of a trunk, on CPU in float32.

A VGG trunk spends almost all of a training step in 3x3 convolutions, and oneDNN's direct
kernels already run them near the machine's float32 GEMM peak: the only way to a faster step
is fewer multiplications. Winograd's minimal filtering algorithm F(4x4, 3x3) (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016) computes a 4x4 output tile from a
6x6 input tile with 36 multiplications per channel pair instead of 144:

    Y = A^T [ sum_c (G g_c G^T) * (B^T d_c B) ] A

The sum over input channels is one batched GEMM (36 of them, one per tile position), run by
the BLAS; the input and output transforms are small GEMMs over the tiles. Frozen weights are
transformed once and cached (keyed by the tensor and its version counter, so a weight loaded
in place is transformed again).

Accuracy: the transforms use the interpolation points 0, +-1, +-2, whose coefficients are
small integers and simple fractions; measured on VGG16's layers the result is within 1.5e-6 of
a float64 convolution relative to the output's norm, 3.2e-6 for the input gradient (oneDNN's
direct kernels: 2e-7 to 1.2e-6), far inside what a loss or its gradient notices and inside
the ``rtol=1e-5`` the execution rule promises.

It pays only where the GEMM dominates the transforms: layers whose channel counts are both at
least :data:`MIN_CHANNELS` and one at least :data:`MIN_WIDE_CHANNELS` (on VGG16: ``conv3_1``
onward, 66% of the trunk's multiplications up to ``relu4_3``), measured at 0.36-0.52x of
oneDNN's time forward and 0.46-0.63x for the input gradient on a 2-core AVX-512 CPU
(``benchmarks/RESULTS-winograd.md``). Everything else keeps the direct kernels, and so do
CUDA (cuDNN chooses its own algorithms), autocast (Winograd's transforms lose too much in
16-bit floats) and float64.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

__all__ = ["MIN_CHANNELS", "MIN_WIDE_CHANNELS", "conv3x3", "conv3x3_input_grad", "usable"]

#: Both channel counts must be at least this for the transforms to pay.
MIN_CHANNELS = 128
#: ...and one of them at least this (``128 -> 128`` and ``64 -> 128`` layers measured 0.7-1.4x
#: oneDNN's time, varying from run to run: no dependable gain).
MIN_WIDE_CHANNELS = 256
#: Bytes of one band's transformed tiles: images are taken in bands of tile rows so that the
#: scratch buffers stay a few MiB, whatever the image size.
_BAND_TILE_BYTES = 8 * 2**20

# F(4x4, 3x3) with the points 0, 1, -1, 2, -2 and infinity.
_BT = ((4, 0, -5, 0, 1, 0),
       (0, -4, -4, 1, 1, 0),
       (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0),
       (0, 2, -1, -2, 1, 0),
       (0, 4, 0, -5, 0, 1))
_G = ((1 / 4, 0, 0),
      (-1 / 6, -1 / 6, -1 / 6),
      (-1 / 6, 1 / 6, -1 / 6),
      (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6),
      (0, 0, 1))
_AT = ((1, 1, 1, 1, 1, 0),
       (0, 1, -1, 2, -2, 0),
       (0, 1, 1, 4, 4, 0),
       (0, 1, -1, 8, -8, 1))

_TILE = 4  # output tile side
_SPAN = 6  # input tile side

_MATRIX_CACHE: dict[tuple[torch.device, str], Tensor] = {}
# id(weight) -> [weak reference, version, transformed filters];
# an entry leaves with its weight (tensors compare elementwise, so no WeakKeyDictionary).
_WEIGHT_CACHE: dict[int, list] = {}


def _kron(name: str, device: torch.device) -> Tensor:
    """``B^T (x) B^T`` (36x36) or ``A^T (x) A^T`` (16x36) as float32 on ``device`` (cached)."""
    key = (device, name)
    matrix = _MATRIX_CACHE.get(key)
    if matrix is None:
        small = torch.tensor(_BT if name == "input" else _AT, dtype=torch.float64)
        matrix = torch.kron(small, small).to(device=device, dtype=torch.float32)
        _MATRIX_CACHE[key] = matrix
    return matrix


def usable(x: Tensor, weight: Tensor, stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int], groups: int) -> bool:
    """Whether :func:`conv3x3` computes ``F.conv2d(x, weight, ...)`` here, and pays.

    True for a float32 CPU input outside autocast and a dense 3x3 convolution with stride 1,
    padding 1 and no dilation whose channel counts pass the thresholds above.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if x.dim() != 4 or torch.is_autocast_enabled("cpu"):
        return False
    out_channels, in_channels, kh, kw = weight.shape
    return (
        (kh, kw) == (3, 3) and stride == (1, 1) and padding == (1, 1) and dilation == (1, 1)
        and groups == 1 and min(in_channels, out_channels) >= MIN_CHANNELS
        and max(in_channels, out_channels) >= MIN_WIDE_CHANNELS
    )


def _transform_filter(weight: Tensor) -> Tensor:
    """``G g G^T`` for every filter: ``(C_out, C_in, 3, 3)`` -> ``(36, C_in, C_out)`` float32.

    Computed in float64, a block of output channels at a time (the float64 intermediates of a
    512x512 layer would otherwise take 150 MB for a moment).
    """
    out_channels, in_channels = weight.shape[:2]
    g = torch.tensor(_G, dtype=torch.float64, device=weight.device)
    result = weight.new_empty((_SPAN * _SPAN, in_channels, out_channels), dtype=torch.float32)
    block = max(1, 2**18 // (in_channels * 9))
    for first in range(0, out_channels, block):
        part = weight[first: first + block].detach().double()  # (o, C_in, 3, 3)
        transformed = torch.einsum("ai,ocij,bj->abco", g, part, g)
        result[:, :, first: first + block] = transformed.reshape(
            _SPAN * _SPAN, in_channels, part.shape[0])
    return result


def _transforms(weight: Tensor) -> Tensor:
    """The cached transformed filters of ``weight``, ``(36, C_in, C_out)``."""
    key = id(weight)
    entry = _WEIGHT_CACHE.get(key)
    if entry is None or entry[0]() is not weight or entry[1] != weight._version:
        entry = [weakref.ref(weight, lambda _, key=key: _WEIGHT_CACHE.pop(key, None)),
                 weight._version, _transform_filter(weight)]
        _WEIGHT_CACHE[key] = entry
    return entry[2]


def cached_bytes() -> int:
    """Bytes held by transformed filters (4x the float32 weights of the layers they serve)."""
    return sum(entry[2].numel() * entry[2].element_size() for entry in _WEIGHT_CACHE.values())


def _band_rows(n: int, tiles_h: int, tiles_w: int, channels: int) -> int:
    """Tile rows per band, so that one band's transformed tiles stay within the budget."""
    row_bytes = _SPAN * _SPAN * n * tiles_w * channels * 4
    return max(1, min(tiles_h, _BAND_TILE_BYTES // max(row_bytes, 1)))


def _zero_bordered(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """``F.pad`` of an ``(N, H, W, C)`` map with zero rows and columns, in one pass over ``x``.

    Only the border strips are zeroed (``F.pad`` fills the whole buffer first).
    """
    n, height, width, channels = x.shape
    out = x.new_empty((n, top + height + bottom, left + width + right, channels))
    out[:, :top].zero_()
    out[:, top + height:].zero_()
    out[:, top: top + height, :left].zero_()
    out[:, top: top + height, left + width:].zero_()
    out[:, top: top + height, left: left + width].copy_(x)
    return out


def _winograd(x: Tensor, filters: Tensor, bias: Tensor | None) -> Tensor:
    """The 'same' 3x3 convolution of ``x`` ``(N, C, H, W)`` with transformed ``filters``.

    Returns ``(N, C_out, H, W)`` float32 in ``torch.channels_last`` memory format.
    """
    n, channels, height, width = x.shape
    out_channels = filters.shape[2]
    tiles_h = -(-height // _TILE)
    tiles_w = -(-width // _TILE)
    # NHWC with the 1-pixel zero border, and zeros up to whole tiles at the bottom and right.
    padded = _zero_bordered(x.permute(0, 2, 3, 1), 1, _TILE * tiles_h - height + 1,
                            1, _TILE * tiles_w - width + 1)
    out = x.new_empty((n, height, width, out_channels))
    whole_tiles = height % _TILE == 0 and width % _TILE == 0
    input_kron = _kron("input", x.device)
    output_kron = _kron("output", x.device)
    band = _band_rows(n, tiles_h, tiles_w, max(channels, out_channels))
    s_n, s_h, s_w, s_c = padded.stride()
    for first in range(0, tiles_h, band):
        rows = min(band, tiles_h - first)
        tiles = padded.as_strided(
            (_SPAN, _SPAN, n, rows, tiles_w, channels),
            (s_h, s_w, s_n, _TILE * s_h, _TILE * s_w, s_c),
            padded.storage_offset() + _TILE * first * s_h,
        )
        transformed = torch.mm(input_kron, tiles.reshape(_SPAN * _SPAN, -1))
        products = torch.bmm(transformed.view(_SPAN * _SPAN, -1, channels), filters)
        blocks = torch.mm(output_kron, products.view(_SPAN * _SPAN, -1))
        # (4, 4, n, rows, tiles_w, C_out) -> rows 4*first.. of (n, H, W, C_out), cropped
        blocks = blocks.view(_TILE, _TILE, n, rows, tiles_w, out_channels)
        blocks = blocks.permute(2, 3, 0, 4, 1, 5)  # (n, rows, 4, tiles_w, 4, C_out)
        top = first * _TILE
        bottom = min(height, top + rows * _TILE)
        if whole_tiles:  # written in place through a tiled view: one pass
            target = out[:, top:bottom].view(n, rows, _TILE, tiles_w, _TILE, out_channels)
            source = blocks
        else:
            target = out[:, top:bottom]
            source = blocks.reshape(n, rows * _TILE, tiles_w * _TILE, out_channels)
            source = source[:, : bottom - top, :width]
        if bias is None:
            target.copy_(source)
        else:
            torch.add(source, bias, out=target)
    return out.permute(0, 3, 1, 2)


def _winograd_input_grad(grad_output: Tensor, filters: Tensor) -> Tensor:
    """The adjoint of :func:`_winograd`: ``(N, C_out, H, W)`` -> ``(N, C_in, H, W)``.

    Each output tile's gradient goes back through the same algorithm transposed,
    ``dd = B [ sum_o (G g G^T) * (A dY A^T) ] B^T``, and the overlapping 6x6 input tiles are
    added up; it reads the forward's transformed filters (no second cache).
    """
    n, out_channels, height, width = grad_output.shape
    channels = filters.shape[1]
    tiles_h = -(-height // _TILE)
    tiles_w = -(-width // _TILE)
    grad = grad_output.permute(0, 2, 3, 1)
    if height % _TILE or width % _TILE:
        grad = _zero_bordered(grad, 0, _TILE * tiles_h - height, 0, _TILE * tiles_w - width)
    # Padded input coordinates (1-pixel border), room for the last tiles' overhang: every
    # tile's top-left 4x4 is copied in (together they cover rows and columns 0..4*tiles-1),
    # its overhang added; only the strips that nothing copies into start at zero.
    summed = grad.new_empty((n, _TILE * (tiles_h + 1), _TILE * (tiles_w + 1), channels))
    summed[:, _TILE * tiles_h:].zero_()
    summed[:, :, _TILE * tiles_w:].zero_()
    output_kron_t = _kron("output", grad.device).t()
    input_kron_t = _kron("input", grad.device).t()
    filters_t = filters.transpose(1, 2)  # (36, C_out, C_in), a view
    band = _band_rows(n, tiles_h, tiles_w, max(channels, out_channels))
    # Bottom band first: a band's overhang lands on the rows the band below copied in.
    for first in reversed(range(0, tiles_h, band)):
        rows = min(band, tiles_h - first)
        blocks = grad[:, _TILE * first: _TILE * (first + rows)].reshape(
            n, rows, _TILE, tiles_w, _TILE, out_channels).permute(2, 4, 0, 1, 3, 5)
        spread = torch.mm(output_kron_t, blocks.reshape(_TILE * _TILE, -1))
        products = torch.bmm(spread.view(_SPAN * _SPAN, -1, out_channels), filters_t)
        tiles = torch.mm(input_kron_t, products.view(_SPAN * _SPAN, -1))
        tiles = tiles.view(_SPAN, _SPAN, n, rows, tiles_w, channels)
        # Overlap-add: tile (r, c) covers padded rows 4r..4r+5 and columns 4c..4c+5; its rows
        # 4 and 5 are the next tile row's rows 0 and 1 (the same for columns).
        window = summed[:, _TILE * first: _TILE * (first + rows + 1)]
        grid = window.view(n, rows + 1, _TILE, tiles_w + 1, _TILE, channels)
        grid[:, :rows, :, :tiles_w].copy_(tiles[:_TILE, :_TILE].permute(2, 3, 0, 4, 1, 5))
        for row_part, row_shift, col_part, col_shift in (
                (slice(0, _TILE), 0, slice(_TILE, _SPAN), 1),
                (slice(_TILE, _SPAN), 1, slice(0, _TILE), 0),
                (slice(_TILE, _SPAN), 1, slice(_TILE, _SPAN), 1)):
            part = tiles[row_part, col_part].permute(2, 3, 0, 4, 1, 5)
            grid[:, row_shift: row_shift + rows, :part.shape[2],
                 col_shift: col_shift + tiles_w, :part.shape[4]].add_(part)
    # A view: the next step (the ReLU mask, max-pool backward) reads it in place.
    return summed[:, 1: height + 1, 1: width + 1].permute(0, 3, 1, 2)


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` by Winograd F(4x4, 3x3).

    Args:
        x: ``(N, C_in, H, W)`` float32 on CPU, any memory format.
        weight: ``(C_out, C_in, 3, 3)`` float32, frozen (its transform is cached).
        bias: ``(C_out,)`` or ``None``.

    Returns:
        ``(N, C_out, H, W)`` float32, ``torch.channels_last``.
    """
    return _winograd(x, _transforms(weight), bias)


def conv3x3_input_grad(grad_output: Tensor, weight: Tensor) -> Tensor:
    """The input gradient of :func:`conv3x3`.

    ``(N, C_out, H, W)`` -> ``(N, C_in, H, W)`` float32, a channels-last view into a
    slightly larger buffer (strided, not contiguous).
    """
    return _winograd_input_grad(grad_output, _transforms(weight))
