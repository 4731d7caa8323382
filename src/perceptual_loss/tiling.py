"""Evaluate a per-layer distance map in overlapping tiles, with bounded memory.

A large image (2048 x 2048 and up) through a VGG trunk needs gigabytes of activations. Here
the image is cut into tiles of at most ``tile_size`` pixels a side: each tile contributes only
its *core*, and gets ``overlap`` pixels of context around it so that the feature pixels of the
core see what they would see in the whole image. Core boundaries are multiples of the deepest
tap's stride, so each tile's feature grid lines up with the whole image's. With the default
overlap (the deepest layer's receptive margin) the tiled maps equal the whole-image maps up to
float round-off; smaller overlaps are faster and differ slightly.

Used by :class:`~perceptual_loss.LPIPS` and :class:`~perceptual_loss.PerceptualLoss`
(``tile_size=``) alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from perceptual_loss._checks import check_positive_int
from perceptual_loss.backbones.geometry import TrunkGeometry, round_up

__all__ = ["Tiler", "core_bounds"]

TileMaps = Callable[[torch.Tensor, torch.Tensor], list[torch.Tensor]]


def core_bounds(length: int, tile: int, margin: int, align: int, min_size: int
                ) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into cores whose tiles (core plus ``margin``) fit in ``tile``.

    Core boundaries are multiples of ``align`` so that every tile's feature grid lines up with
    the whole image's. A last tile smaller than ``min_size`` is merged into the one before.
    """
    if length <= tile:
        return [(0, length)]
    first = (tile - margin) // align * align
    step = (tile - 2 * margin) // align * align
    bounds = [(0, first)]
    start = first
    while length - start > tile - margin:
        bounds.append((start, start + step))
        start += step
    if length - start + margin < min_size:
        start = bounds.pop()[0]
    bounds.append((start, length))
    return bounds


class Tiler:
    """Tiles for the taps ``layers`` of a trunk, and the loop that stitches their maps.

    Args:
        geometry: The trunk's geometry (strides, receptive fields, map sizes).
        layers: The tapped layers whose maps are stitched, in the order maps are returned.
        tile_size: Largest tile side in pixels, or ``None`` (whole images).
        tile_overlap: Context each tile gets beyond its core; ``None``: the deepest layer's
            receptive margin (exact). Rounded up to the alignment and to at least
            :attr:`min_overlap`.
        name: The trunk's name, for messages.

    Raises:
        ValueError: A tile too small for its overlap or for the trunk.
    """

    def __init__(self, geometry: TrunkGeometry, layers: Sequence[str], tile_size: int | None,
                 tile_overlap: int | None = None, *, name: str = "the backbone") -> None:
        self.geometry = geometry
        self.layers = tuple(layers)
        taps = [geometry.taps[layer] for layer in self.layers]
        self.strides = tuple(tap.stride for tap in taps)
        self.align = max(self.strides)
        self.receptive_margin = round_up(max(tap.margin for tap in taps), self.align)
        self.min_overlap = self._smallest_overlap()
        check_positive_int("tile_overlap", tile_overlap, allow_none=True, minimum=0)
        self.overlap = (self.receptive_margin if tile_overlap is None
                        else max(self.min_overlap, round_up(tile_overlap, self.align)))
        if tile_size is not None:
            if not isinstance(tile_size, int) or isinstance(tile_size, bool):
                raise TypeError(f"tile_size must be None or an int; got "
                                f"{type(tile_size).__name__}")
            smallest = 2 * self.overlap + self.align
            if tile_size < max(smallest, geometry.min_input_size):
                raise ValueError(
                    f"tile_size={tile_size} is too small for tile_overlap={self.overlap} on "
                    f"{name}: tiles need at least 2 * overlap + {self.align} = {smallest} "
                    "pixels. Use a larger tile_size or a smaller tile_overlap."
                )
        self.tile_size = tile_size

    def _smallest_overlap(self) -> int:
        """Smallest overlap at which every tile still yields all its core's feature pixels.

        Without padding on the right, a convolution or pooling drops the last output pixels
        of a tile; the overlap must cover them. Sizes grow by ``align / stride`` per ``align``
        pixels, so one core size decides for all.
        """
        core = 4 * self.align
        for overlap in range(0, self.receptive_margin + 1, self.align):
            interior = self.geometry.map_sizes(core + 2 * overlap, core + 2 * overlap)
            first = self.geometry.map_sizes(core + overlap, core + overlap)
            if all(size_i[0] >= (core + overlap) // stride and size_f[0] >= core // stride
                   for size_i, size_f, stride in zip(interior, first, self.strides,
                                                     strict=True)):
                return overlap
        return self.receptive_margin

    def needed(self, height: int, width: int) -> bool:
        """Whether an image of this size is cut into tiles."""
        return self.tile_size is not None and max(height, width) > self.tile_size

    def tile_count(self, height: int, width: int) -> int:
        """How many tiles an image of this size takes."""
        if not self.needed(height, width):
            return 1
        assert self.tile_size is not None
        rows = core_bounds(height, self.tile_size, self.overlap, self.align,
                           self.geometry.min_input_size)
        cols = core_bounds(width, self.tile_size, self.overlap, self.align,
                           self.geometry.min_input_size)
        return len(rows) * len(cols)

    def maps(self, prediction: torch.Tensor, target: torch.Tensor, tile_maps: TileMaps,
             batch: int, on_tile: Callable[[], None] | None = None) -> list[torch.Tensor]:
        """Per-layer maps ``(batch, 1, H_l, W_l)`` of the whole images, from tiles.

        Args:
            prediction: ``(N, C, H, W)``.
            target: Same shape.
            tile_maps: ``(tile_a, tile_b) -> [map per layer]``, each ``(batch, 1, h_l, w_l)``.
            batch: Rows of each map (``N``, or ``N * C`` in per-channel mode).
            on_tile: Called after each tile (progress).

        Under autograd each tile is checkpointed, so memory stays bounded in a training step
        too.
        """
        height, width = prediction.shape[-2:]
        if not self.needed(height, width):
            return tile_maps(prediction, target)
        assert self.tile_size is not None
        min_size = self.geometry.min_input_size
        rows = core_bounds(height, self.tile_size, self.overlap, self.align, min_size)
        cols = core_bounds(width, self.tile_size, self.overlap, self.align, min_size)
        sizes = self.geometry.map_sizes(height, width)
        sizes = [sizes[list(self.geometry.taps).index(layer)] for layer in self.layers]
        dtype = torch.float64 if prediction.dtype == torch.float64 else torch.float32
        maps = [prediction.new_zeros((batch, 1, h, w), dtype=dtype) for h, w in sizes]
        grad = torch.is_grad_enabled() and (prediction.requires_grad or target.requires_grad)
        for row0, row1 in rows:
            top, bottom = max(0, row0 - self.overlap), min(height, row1 + self.overlap)
            for col0, col1 in cols:
                left, right = max(0, col0 - self.overlap), min(width, col1 + self.overlap)
                tile_a = prediction[..., top:bottom, left:right]
                tile_b = target[..., top:bottom, left:right]
                parts = (checkpoint(tile_maps, tile_a, tile_b, use_reentrant=False) if grad
                         else tile_maps(tile_a, tile_b))
                for whole, part, stride, (h, w) in zip(maps, parts, self.strides, sizes,
                                                       strict=True):
                    r0, c0 = row0 // stride, col0 // stride
                    r1 = h if row1 == height else row1 // stride
                    c1 = w if col1 == width else col1 // stride
                    whole[:, :, r0:r1, c0:c1] = part[:, :, r0 - top // stride:r1 - top // stride,
                                                     c0 - left // stride:c1 - left // stride]
                del parts
                if on_tile is not None:
                    on_tile()
        return maps
