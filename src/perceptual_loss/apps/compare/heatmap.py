"""Where two images differ: a heat map per pair, computed by the networks that scored it.

The heat map is, per pixel:

- with ``lpips`` among the metrics: the LPIPS spatial map (``LPIPS(net, spatial=True)``), whose
  mean over the picture is close to the pair's LPIPS value;
- else, with ``perceptual``: :func:`perceptual_distance_map`, the loss's own content terms
  placed where they sit (:func:`perceptual_loss.recipe.feature_distance_maps`: its criterion,
  normalised features and layer weights), each layer's map upsampled bilinearly to the image
  size and summed over the layers; its mean is the pair's perceptual distance (exactly so
  when the image sides are multiples of the deepest layer's stride);
- else: the squared pixel difference averaged over channels (its mean is the MSE).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from perceptual_loss.apps.compare.scorer import ImageScorer, pair_channels
from perceptual_loss.frozen import copy_frozen_weights
from perceptual_loss.functional import TORCH_OPS
from perceptual_loss.losses import PerceptualLoss
from perceptual_loss.metrics.lpips import LPIPS
from perceptual_loss.recipe import feature_distance_maps

__all__ = [
    "HEATMAP_COLORMAP",
    "DistanceMapper",
    "colorbar",
    "colormap_of",
    "display_size",
    "heatmap_picture",
    "perceptual_distance_map",
    "shrink_map",
]

#: Matplotlib colour map of the heat maps.
HEATMAP_COLORMAP = "inferno"


@torch.no_grad()
def perceptual_distance_map(loss: PerceptualLoss, prediction: torch.Tensor,
                            target: torch.Tensor) -> torch.Tensor:
    """Where a perceptual loss's value sits in the picture: one map per image.

    Each content layer's term at each of its positions
    (:func:`~perceptual_loss.recipe.feature_distance_maps`), upsampled bilinearly to the image
    size and summed over the layers, plus the pixel terms at each pixel (on images mapped to
    ``[0, 1]``). The map's mean over the picture is the loss's value per image
    (``reduction="none"``) when the image sides are multiples of the deepest layer's stride
    (and up to a border effect otherwise).

    Args:
        loss: The loss; style, SSIM and TV terms have no per-pixel form and are refused.
        prediction: ``(N, C, H, W)`` in the loss's ``input_range``.
        target: Same shape.

    Returns:
        ``(N, H, W)`` float32 on the inputs' device, values ``>= 0``.

    Raises:
        ValueError: A loss with style, SSIM or TV terms, or inputs the loss refuses.

    Example:
        >>> loss = PerceptualLoss(weights=None, layers=("relu1_2", "relu2_2"),
        ...                       reduction="none")
        >>> a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
        >>> heat = perceptual_distance_map(loss, b, a)
        >>> torch.allclose(heat.mean((1, 2)), loss(b, a), rtol=1e-4)
        True
    """
    recipe = loss.recipe
    if recipe.style_layers or recipe.ssim_weight or recipe.tv_weight:
        raise ValueError("style, SSIM and TV terms have no per-pixel map; draw the heat map "
                         "with a loss of content and pixel terms only")
    height, width = prediction.shape[-2:]
    total = torch.zeros(prediction.shape[0], 1, height, width, device=prediction.device)
    if recipe.layers:
        fx = loss.extractor
        assert fx is not None
        pairs = ((layer, p, t) for (layer, p), (_, t) in zip(
            fx.stream(prediction, "prediction"), fx.stream(target, "target"), strict=True))
        maps = feature_distance_maps(recipe, pairs, TORCH_OPS, prediction.shape[0])
        for layer_map in maps.values():
            total += F.interpolate(layer_map.float(), size=(height, width), mode="bilinear",
                                   align_corners=False)
    low, high = recipe.input_range
    difference = (prediction.float() - target.float()) / (high - low)
    if recipe.pixel_mse:
        total += recipe.pixel_mse * difference.square().mean(dim=1, keepdim=True)
    if recipe.pixel_l1:
        total += recipe.pixel_l1 * difference.abs().mean(dim=1, keepdim=True)
    return total[:, 0].clamp_min(0.0)


class DistanceMapper:
    """Maps of where two images differ, from the networks of an :class:`ImageScorer`.

    The maps use the scorer's own networks (or copies of their weights), so with random
    weights the map shows the same untrained network that gave the scores.

    Args:
        scorer: The scorer that produced the scores.

    Attributes:
        kind: ``"lpips"``, ``"perceptual"`` or ``"pixel"`` (see the module docstring).
        description: One sentence for the page saying what the map shows.
    """

    def __init__(self, scorer: ImageScorer) -> None:
        self.device = scorer.device
        self._lpips: torch.nn.Module | None = None
        self._perceptual: PerceptualLoss | None = None
        config = scorer.config
        if scorer.lpips is not None:
            self.kind = "lpips"
            net = str(config.get("lpips_net") or "alex")
            spatial = LPIPS(net, weights=None, spatial=True, reduction="none",
                            tile_size=getattr(scorer.lpips, "tile_size", None))
            copy_frozen_weights(scorer.lpips, spatial)  # the scorer's very weights
            self._lpips = spatial.to(self.device).eval()
            self.description = (
                f"LPIPS ({net}) spatial map: each layer's weighted squared difference of "
                "unit-length features, upsampled to the image and summed; its mean over the "
                "picture is close to the pair's lpips value."
            )
        elif scorer.perceptual is not None:
            self.kind = "perceptual"
            self._perceptual = scorer.perceptual
            recipe = scorer.perceptual.recipe
            self.description = (
                f"Perceptual distance map: each layer's term ({', '.join(recipe.layers)}; "
                f"{recipe.criterion} distance"
                + (" of unit-length features" if recipe.normalize_features else "")
                + ", weighted as in the loss) at each position, upsampled bilinearly to the "
                "image and summed over the layers; its mean over the picture is (close to) the "
                "pair's perceptual value."
            )
        else:
            self.kind = "pixel"
            self.description = (
                "Squared pixel difference averaged over the channels (no perceptual metric "
                "was chosen); its mean over the picture is the pair's mse."
            )

    @torch.no_grad()
    def __call__(self, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
        """The distance map of one pair.

        Args:
            image_a: Reference ``(C, H, W)``, ``C`` in {1, 3}, values in ``[0, 1]``.
            image_b: Judged image, same height and width.

        Returns:
            ``(H, W)`` float32 tensor on the CPU, values ``>= 0``.
        """
        image_a, image_b = pair_channels(image_a, image_b)
        a = image_a[None].to(self.device, torch.float32)
        b = image_b[None].to(self.device, torch.float32)
        if self._lpips is not None:
            result = self._lpips(b, a)
            return result[0, 0].float().cpu().clamp_min(0.0)
        if self._perceptual is not None:
            return perceptual_distance_map(self._perceptual, b, a)[0].cpu()
        return (a - b).double().square().mean(dim=1)[0].float().cpu()


def display_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Shrink to ``size`` on the longer side; grow small images by a whole factor only."""
    longest = max(height, width)
    scale = size / longest if longest > size else float(max(1, size // longest))
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink_map(distance: torch.Tensor, size: int) -> np.ndarray:
    """A distance map at display size: area mean when shrunk, nearest when grown."""
    height, width = display_size(*distance.shape[-2:], size)
    grow = height > distance.shape[-2]
    resized = F.interpolate(distance[None, None].float(), size=(height, width),
                            mode="nearest" if grow else "area")
    return resized[0, 0].numpy()


def colormap_of(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Matplotlib's colour map ``name``: values in ``[0, 1]`` -> RGBA.

    Raises:
        ImportError: Without matplotlib (the ``cli`` extra).
        ValueError: An unknown colour map.
    """
    try:
        from matplotlib import colormaps
    except ImportError as error:
        raise ImportError(
            "the HTML report's heat maps need matplotlib: pip install 'perceptual-loss[cli]'"
        ) from error
    if name not in colormaps:
        raise ValueError(f"unknown colormap {name!r}; try inferno, magma or viridis")
    return colormaps[name]


def heatmap_picture(values: np.ndarray, scale: float, colormap: str) -> Image.Image:
    """An RGB picture of ``values`` (``(H, W)``, ``>= 0``): 0 to ``scale`` over the colours."""
    rgba = colormap_of(colormap)(np.clip(values / scale, 0.0, 1.0))
    return Image.fromarray(np.round(rgba[..., :3] * 255).astype(np.uint8))


def colorbar(colormap: str, width: int = 256, height: int = 14) -> Image.Image:
    """The colour scale as a ``width`` x ``height`` picture, low values on the left."""
    ramp = np.tile(np.linspace(0.0, 1.0, width), (height, 1))
    return heatmap_picture(ramp, 1.0, colormap)
