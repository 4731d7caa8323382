"""Feature maps as pictures: what each layer of the frozen backbone keeps of an image.

Shallow layers (``relu1_2``) respond to edges, colour and texture at full resolution; deeper
ones (``relu4_3``, ``relu5_3``) respond to larger shapes at a coarse resolution. Looking at
them helps choose the layers of a perceptual loss: texture-preserving losses use shallow
layers, shape-preserving ones deeper layers.

Every channel map is scaled to its own minimum and maximum before display, so a weak channel
is as visible as a strong one; the brightness of one channel says nothing about another's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from perceptual_loss.apps.images.grids import grid_shape, save_grid
from perceptual_loss.extractor import FeatureExtractor

__all__ = [
    "DEFAULT_FEATURE_LAYERS",
    "RANDOM_WEIGHTS_NOTE",
    "channel_grid",
    "check_colormap",
    "colorize",
    "extract_feature_maps",
    "fit_image",
    "normalize_maps",
    "save_feature_figures",
    "select_channels",
]

ChannelOrder = Literal["activation", "index"]

#: The warning put on pictures made with an untrained network.
RANDOM_WEIGHTS_NOTE = (
    "RANDOM WEIGHTS: an untrained network made these maps; they show what random filters "
    "respond to, not learned features (use --weights imagenet)"
)

#: Layers shown by default: one per block of VGG16, shallow to deep
#: (:func:`perceptual_loss.recipe.block_ends` gives them for any backbone).
DEFAULT_FEATURE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


def fit_image(image: torch.Tensor, max_size: int | None) -> torch.Tensor:
    """Shrink an image so its longer side is at most ``max_size`` (aspect ratio kept).

    Args:
        image: ``(C, H, W)`` in ``[0, 1]``.
        max_size: Longest side in pixels, or ``None`` to keep the image as it is.

    Returns:
        ``(C, H', W')``, antialiased when shrunk; the input itself when it already fits.
    """
    if max_size is None:
        return image
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    height, width = image.shape[-2:]
    scale = max_size / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    shrunk = F.interpolate(image[None], size=size, mode="bilinear", antialias=True,
                           align_corners=False)[0]
    return shrunk.clamp(0.0, 1.0)


def extract_feature_maps(
    image: torch.Tensor,
    *,
    backbone: str = "vgg16",
    layers: Sequence[str] = DEFAULT_FEATURE_LAYERS,
    weights: str | os.PathLike[str] | None = "imagenet",
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Run one image through the frozen backbone and return the chosen layers' maps.

    Args:
        image: ``(C, H, W)``, ``C`` in {1, 3}, values in ``[0, 1]`` (grayscale is repeated to
            RGB).
        backbone: Backbone name (``vgg16``, ``vgg19``, ...).
        layers: Layer names (ours or Keras aliases), in display order.
        weights: ``"imagenet"``, ``None`` (random), a checkpoint path or a registry key.
        device: Where the backbone runs.

    Returns:
        Layer name (canonical) -> ``(C_l, H_l, W_l)`` float32 tensor on the CPU.

    Raises:
        ValueError: For unknown layers, an image too small for the deepest layer, or values
            outside ``[0, 1]`` (raised by the library).
    """
    if image.ndim != 3:
        raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
    extractor = FeatureExtractor(backbone, layers=tuple(layers), weights=weights).to(device)
    with torch.no_grad():
        maps = extractor(image[None].to(device, torch.float32))
    return {name: maps[name][0].float().cpu() for name in extractor.layers}


def select_channels(
    feature_map: torch.Tensor, count: int, order: ChannelOrder = "activation"
) -> torch.Tensor:
    """Indices of the channels to show.

    Args:
        feature_map: ``(C, H, W)``.
        count: How many channels, ``>= 1`` (fewer when the layer has fewer).
        order: ``"activation"``: the channels with the largest mean absolute response first
            (the ones the image excites); ``"index"``: channels ``0..count-1``.

    Returns:
        ``(min(count, C),)`` long tensor.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if order not in ("activation", "index"):
        raise ValueError(f"order must be 'activation' or 'index', got {order!r}")
    channels = feature_map.shape[0]
    count = min(count, channels)
    if order == "index":
        return torch.arange(count)
    strength = feature_map.abs().flatten(1).mean(dim=1)
    return torch.argsort(strength, descending=True, stable=True)[:count]


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of ``(K, H, W)`` to ``[0, 1]`` by its own min and max (flat maps -> 0)."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    span = high - low
    scaled = (maps - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, scaled, torch.zeros_like(scaled)).clamp(0.0, 1.0)


def _fit_cell(maps: torch.Tensor, cell_size: int) -> torch.Tensor:
    """Resize ``(K, H, W)`` so the longer side is ``cell_size``: nearest up, area down."""
    height, width = maps.shape[-2:]
    scale = cell_size / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size == (height, width):
        return maps
    mode = "nearest" if scale > 1 else "area"
    return F.interpolate(maps[None], size=size, mode=mode)[0]


def check_colormap(colormap: str) -> None:
    """Fail early, before any network runs, on a colour map that :func:`colorize` rejects."""
    colorize(torch.zeros(1, 1, 1), colormap)


def colorize(maps: torch.Tensor, colormap: str = "gray") -> torch.Tensor:
    """Turn ``(K, H, W)`` maps in ``[0, 1]`` into images ``(K, C, H, W)``.

    Args:
        maps: Values in ``[0, 1]``.
        colormap: ``"gray"`` (1 channel, pillow only) or a matplotlib colormap name such as
            ``"viridis"`` or ``"magma"`` (3 channels; needs matplotlib).

    Returns:
        ``(K, 1, H, W)`` for gray, ``(K, 3, H, W)`` otherwise, values in ``[0, 1]``.

    Raises:
        ImportError: A colour map other than gray without matplotlib installed.
        ValueError: An unknown colour map name.
    """
    if colormap == "gray":
        return maps[:, None]
    try:
        from matplotlib import colormaps
    except ImportError as error:
        raise ImportError(
            f"colormap {colormap!r} needs matplotlib: pip install 'perceptual-loss[cli]' "
            "(or use --colormap gray)"
        ) from error
    if colormap not in colormaps:
        raise ValueError(
            f"unknown colormap {colormap!r}; try gray, viridis, magma, inferno or plasma"
        )
    table = torch.tensor(colormaps[colormap](torch.linspace(0, 1, 256).numpy())[:, :3],
                         dtype=torch.float32)
    indices = (maps.clamp(0, 1) * 255).round().long()
    return table[indices].permute(0, 3, 1, 2).contiguous()


def channel_grid(
    feature_map: torch.Tensor,
    *,
    max_channels: int = 64,
    order: ChannelOrder = "activation",
    cell_size: int = 96,
    padding: int = 2,
    colormap: str = "gray",
) -> torch.Tensor:
    """Tile the channels of one feature map into a single picture.

    Args:
        feature_map: ``(C, H, W)`` of one layer.
        max_channels: Show at most this many channels (chosen by ``order``).
        order: ``"activation"`` (strongest first) or ``"index"``.
        cell_size: Longer side of each tile in pixels (small deep maps are enlarged with
            nearest-neighbour so their coarse cells stay visible).
        padding: Pixels of white between tiles.
        colormap: ``"gray"`` or a matplotlib colour map name.

    Returns:
        ``(1 or 3, H_grid, W_grid)`` in ``[0, 1]``; tiles in row-major order.
    """
    if feature_map.ndim != 3:
        raise ValueError(f"feature_map must be (C, H, W), got {tuple(feature_map.shape)}")
    if cell_size < 1 or padding < 0:
        raise ValueError(f"cell_size must be >= 1 and padding >= 0, got {cell_size}, {padding}")
    chosen = feature_map[select_channels(feature_map, max_channels, order)]
    tiles = colorize(normalize_maps(_fit_cell(chosen, cell_size)), colormap)
    count, channels, height, width = tiles.shape
    rows, columns = grid_shape(count)
    grid = torch.ones(channels, rows * height + (rows + 1) * padding,
                      columns * width + (columns + 1) * padding)
    for index in range(count):
        row, column = divmod(index, columns)
        top = padding + row * (height + padding)
        left = padding + column * (width + padding)
        grid[:, top : top + height, left : left + width] = tiles[index]
    return grid


def save_feature_figures(
    image: torch.Tensor,
    feature_maps: dict[str, torch.Tensor],
    out_dir: str | Path,
    *,
    max_channels: int = 64,
    overview_channels: int = 8,
    order: ChannelOrder = "activation",
    cell_size: int = 96,
    colormap: str = "gray",
    note: str | None = None,
) -> list[Path]:
    """Write one channel grid per layer and an overview figure.

    Files: ``<out_dir>/<layer>.png`` for every layer, and ``<out_dir>/overview.png``: the input
    image on the first row, then one row per layer (shallow to deep) with its
    ``overview_channels`` strongest channels, all drawn at the same size so texture at shallow
    layers and coarse shapes at deep ones can be compared side by side.

    Args:
        image: The input ``(C, H, W)`` in ``[0, 1]`` (as fed to the backbone).
        feature_maps: Layer -> ``(C_l, H_l, W_l)``, e.g. from :func:`extract_feature_maps`.
        out_dir: Output folder (created).
        max_channels: Channels per layer grid.
        overview_channels: Channels per layer in the overview.
        order: Channel choice, ``"activation"`` or ``"index"``.
        cell_size: Tile size of the layer grids in pixels.
        colormap: ``"gray"`` or a matplotlib colour map name.
        note: A warning drawn across the top of every figure, e.g. :data:`RANDOM_WEIGHTS_NOTE`
            when the maps come from random weights.

    Returns:
        Paths written, the layer grids in layer order, then the overview.
    """
    if not feature_maps:
        raise ValueError("feature_maps is empty: name at least one layer")
    if overview_channels < 1:
        raise ValueError(f"overview_channels must be >= 1, got {overview_channels}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for layer, feature_map in feature_maps.items():
        grid = channel_grid(feature_map, max_channels=max_channels, order=order,
                            cell_size=cell_size, colormap=colormap)
        written.append(save_grid([[grid]], out_dir / f"{layer}.png", padding=0, note=note))

    display = 128
    shown = _fit_cell(image, display).clamp(0, 1)
    rows: list[list[torch.Tensor]] = [[shown]]
    labels = ["input"]
    for layer, feature_map in feature_maps.items():
        chosen = feature_map[select_channels(feature_map, overview_channels, order)]
        size = tuple(shown.shape[-2:])
        enlarged = F.interpolate(chosen[None], size=size,
                                 mode="nearest" if chosen.shape[-1] < size[-1] else "area")[0]
        rows.append(list(colorize(normalize_maps(enlarged), colormap)))
        channels, height, width = feature_map.shape
        labels.append(f"{layer} ({channels}x{height}x{width})")
    written.append(save_grid(rows, out_dir / "overview.png", row_labels=labels, note=note))
    return written
