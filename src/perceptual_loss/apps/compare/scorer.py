"""Scoring image pairs: MSE, PSNR, SSIM, the perceptual distance, LPIPS and DISTS.

For each pair this computes, on images in ``[0, 1]``:

- ``mse``: mean squared error over all pixels and channels;
- ``psnr``: ``10 * log10(1 / mse)`` in dB (``inf`` for identical images);
- ``ssim``: structural similarity (Gaussian window 11, sigma 1.5, ``data_range=1``, averaged
  over channels), from ``pytorch_msssim``;
- ``perceptual``: the :class:`~perceptual_loss.PerceptualLoss` value (each layer's distance a
  mean over its elements, summed over layers) and ``perceptual/<layer>`` per layer;
- every metric of the registry in :mod:`perceptual_loss.metrics` (``lpips``, ``dists``, and
  any registered with :func:`~perceptual_loss.metrics.register_metric`), when asked for.

:class:`ImageScorer` builds the networks once and scores batches of pairs; folders of pairs
are in :mod:`perceptual_loss.apps.compare.folders`, clips in
:mod:`perceptual_loss.apps.compare.video`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from perceptual_loss.apps.images.io import load_image
from perceptual_loss.apps.images.quality import SSIM_WINDOW, psnr_from_mse
from perceptual_loss.apps.images.quality import ssim as ssim_per_sample
from perceptual_loss.apps.runtime import progress_bar
from perceptual_loss.functional import import_ssim
from perceptual_loss.losses import PerceptualLoss
from perceptual_loss.metrics import MetricSettings, get_metric, list_metrics
from perceptual_loss.metrics.lpips import LPIPS
from perceptual_loss.recipe import Recipe
from perceptual_loss.weights import is_random

__all__ = [
    "AUTO_TILE_SIZE",
    "DEFAULT_METRICS",
    "ImageScorer",
    "all_metrics",
    "load_pair",
    "pair_channels",
    "parse_metrics",
]

#: The scorer's own values; the registered metrics (:mod:`perceptual_loss.metrics`) follow.
DEFAULT_METRICS: tuple[str, ...] = ("mse", "psnr", "ssim", "perceptual")
#: Images larger than this (pixels a side) are scored in overlapping tiles by default.
AUTO_TILE_SIZE = 512


def all_metrics() -> tuple[str, ...]:
    """Every metric name: the scorer's own four, then the registry's in registration order."""
    return DEFAULT_METRICS + tuple(spec.name for spec in list_metrics())


def parse_metrics(names: Iterable[str] | None) -> tuple[str, ...]:
    """Validate metric names; ``None``/empty gives :data:`DEFAULT_METRICS`, ``"all"`` all.

    Args:
        names: Metric names from :func:`all_metrics`, or ``"all"``.

    Returns:
        The metrics in the canonical order of :func:`all_metrics`, without duplicates.

    Raises:
        ValueError: For an unknown name; the message lists the valid ones.
    """
    known = all_metrics()
    chosen = [name.strip().lower() for name in (names or ()) if name.strip()]
    if not chosen:
        return DEFAULT_METRICS
    if "all" in chosen:
        return known
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise ValueError(
            f"unknown metric {unknown[0]!r}: choose from {', '.join(known)} or all"
        )
    return tuple(name for name in known if name in chosen)


class ImageScorer:
    """Scores batches of image pairs with the chosen metrics; the networks are built once.

    Args:
        metrics: Names from :func:`all_metrics` (default :data:`DEFAULT_METRICS`).
        backbone: Backbone of the perceptual distance (``vgg16``, ``vgg19``, ...).
        layers: Layers of the perceptual distance; ``None`` for the library's default
            (relu1_2, relu2_2, relu3_3, relu4_3).
        weights: ``"imagenet"``, ``None`` (random), a checkpoint path or a registry key, for
            the perceptual backbone. The registered metrics use them where they fit their
            trunks, else ImageNet weights (with a note), or random ones when ``None``.
        criterion: Feature distance of the perceptual term: ``"l1"`` or ``"mse"``.
        resize: Resize both images to this size before the backbone, or ``None``.
        lpips_net: LPIPS trunk: ``"alex"``, ``"vgg"`` or ``"squeeze"``.
        tile_size: Largest tile side for the perceptual and LPIPS metrics: images larger than
            this are evaluated in overlapping tiles (bounded memory, same values up to float
            rounding). ``None``: :data:`AUTO_TILE_SIZE`.
        device: Where the networks run.
        progress: Show a progress bar over the tiles of a large image.
    """

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        *,
        backbone: str = "vgg16",
        layers: Sequence[str] | None = None,
        weights: str | os.PathLike[str] | None = "imagenet",
        criterion: str = "l1",
        resize: int | None = None,
        lpips_net: str = "alex",
        tile_size: int | None = None,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> None:
        self.metrics = parse_metrics(metrics)
        self.progress = progress
        tile_size = AUTO_TILE_SIZE if tile_size is None else tile_size
        self._tile_size = tile_size
        self._settings = MetricSettings(weights=weights, tile_size=tile_size,
                                        lpips_net=lpips_net)
        self.notes: list[str] = self._settings.notes
        self._temporal: LPIPS | None = None
        self.device = torch.device(device)
        self.perceptual: PerceptualLoss | None = None
        self.layers: tuple[str, ...] = ()
        if "ssim" in self.metrics:
            try:
                import_ssim()
            except ImportError as error:
                raise ImportError(f"{error} (or leave ssim out with --metric)") from error
        if "perceptual" in self.metrics:
            self.recipe = Recipe.create(backbone, tuple(layers) if layers else None, weights,
                                        criterion=criterion, resize=resize, reduction="none")
            self.perceptual = PerceptualLoss.from_recipe(self.recipe, tile_size=tile_size
                                                         ).to(self.device)
            self.layers = self.recipe.layers
        #: The registered metrics chosen, by name: each maps (judged, reference) to (N,).
        self.modules: dict[str, Any] = {}
        used: dict[str, str] = {}
        for name in self.metrics:
            if name not in DEFAULT_METRICS:
                module, used[name] = get_metric(name).build(self._settings)
                self.modules[name] = module.to(self.device)
        self.config: dict[str, Any] = {
            "metrics": list(self.metrics),
            "backbone": backbone if self.perceptual is not None else None,
            "layers": list(self.layers),
            "weights": "random" if is_random(weights) else str(weights),
            "criterion": criterion,
            "resize": resize,
            "lpips_net": lpips_net if "lpips" in self.modules else None,
            "lpips_weights": used.get("lpips"),
            **{f"{name}_weights": label for name, label in used.items() if name != "lpips"},
            "notes": self.notes,
        }

    @property
    def lpips(self) -> LPIPS | None:
        """The lpips metric when chosen (the HTML heat map reads its trunk)."""
        return self.modules.get("lpips")

    @contextlib.contextmanager
    def _tile_progress(self, size: Sequence[int]) -> Iterator[None]:
        """A progress bar over the tiles of one large image (nothing for small ones)."""
        modules = [m for m in (self.perceptual, *self.modules.values())
                   if getattr(m, "tiler", None) is not None]
        tiles = sum(m.tiler.tile_count(*size) for m in modules)
        if not self.progress or tiles <= len(modules):
            yield
            return
        bar = progress_bar(tiles, description=f"tiles of {size[1]}x{size[0]}", unit="tile",
                           leave=False)
        for module in modules:
            module.tile_callback = bar.update
        try:
            yield
        finally:
            for module in modules:
                module.tile_callback = None
            bar.close()

    def temporal_metric(self) -> LPIPS:
        """The LPIPS of tLP: the lpips metric when chosen, else one built the same way once."""
        if self.lpips is not None:
            return self.lpips
        if self._temporal is None:
            net = self._settings.lpips_net
            self._temporal, used = get_metric("lpips").build(self._settings)
            self._temporal.to(self.device)
            self.config["tlp_lpips"] = f"{net} ({used} weights)"
        return self._temporal

    def value_names(self) -> list[str]:
        """Names of the values each pair gets, in output order."""
        names: list[str] = []
        for metric in self.metrics:
            names.append(metric)
            if metric == "perceptual":
                names.extend(f"perceptual/{layer}" for layer in self.layers)
        return names

    @torch.no_grad()
    def score(self, image_a: torch.Tensor, image_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score a batch of pairs.

        Args:
            image_a: Reference images ``(N, C, H, W)``, float, values in ``[0, 1]``.
            image_b: Judged images, same shape as ``image_a``.

        Returns:
            Value name -> ``(N,)`` float64 tensor on the CPU (names from
            :meth:`value_names`).

        Raises:
            ValueError: For mismatched shapes, values outside ``[0, 1]``, or images smaller
                than the SSIM window (11 pixels) when SSIM is asked for.
        """
        if image_a.shape != image_b.shape:
            raise ValueError(
                f"the two images must have the same shape, got {tuple(image_a.shape)} and "
                f"{tuple(image_b.shape)}"
            )
        if image_a.ndim != 4:
            raise ValueError(f"expected batches (N, C, H, W), got shape {tuple(image_a.shape)}")
        image_a = image_a.to(self.device, torch.float32)
        image_b = image_b.to(self.device, torch.float32)
        for label, image in (("first", image_a), ("second", image_b)):
            low, high = float(image.min()), float(image.max())
            if not (0.0 <= low and high <= 1.0):
                raise ValueError(
                    f"the {label} images have values in [{low:.4g}, {high:.4g}], expected [0, 1]"
                )
        out: dict[str, torch.Tensor] = {}
        difference = image_a.double() - image_b.double()
        mse = difference.pow(2).flatten(1).mean(dim=1)
        if "mse" in self.metrics:
            out["mse"] = mse.cpu()
        if "psnr" in self.metrics:
            out["psnr"] = psnr_from_mse(mse.cpu())
        if "ssim" in self.metrics:
            height, width = image_a.shape[-2:]
            if min(height, width) < SSIM_WINDOW:
                raise ValueError(
                    f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                    f"{height}x{width}; leave ssim out (e.g. --metric mse,psnr,perceptual)"
                )
            out["ssim"] = ssim_per_sample(image_a, image_b).double().cpu()
        with self._tile_progress(image_a.shape[-2:]):
            if self.perceptual is not None:
                total, parts = self.perceptual(image_b, image_a, return_parts=True)
                out["perceptual"] = total.double().cpu()
                for layer in self.layers:
                    out[f"perceptual/{layer}"] = parts[f"content/{layer}"].double().cpu()
            for name, module in self.modules.items():
                out[name] = module(image_b, image_a).double().cpu()
        return {name: out[name] for name in self.value_names()}


def pair_channels(image_a: torch.Tensor, image_b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Repeat a 1-channel image to 3 channels when its partner is RGB."""
    if image_a.shape[0] == 1 and image_b.shape[0] == 3:
        image_a = image_a.expand(3, -1, -1)
    elif image_b.shape[0] == 1 and image_a.shape[0] == 3:
        image_b = image_b.expand(3, -1, -1)
    return image_a, image_b


def load_pair(path_a: str | Path, path_b: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read two images as ``(C, H, W)`` in ``[0, 1]`` with the same channel count.

    Raises:
        ValueError: When the two images differ in size (the message gives both sizes).
    """
    image_a, image_b = pair_channels(load_image(path_a), load_image(path_b))
    if image_a.shape[-2:] != image_b.shape[-2:]:
        raise ValueError(
            f"{path_a} is {image_a.shape[-1]}x{image_a.shape[-2]} pixels but {path_b} is "
            f"{image_b.shape[-1]}x{image_b.shape[-2]} (width x height); compare images of the "
            "same size"
        )
    return image_a, image_b
