"""What makes a picture worse: noise, bicubic downscaling, blur and a small shift.

Training degradations are callables ``degradation(image, generator) -> image`` on ``(C, H, W)``
images in ``[0, 1]`` (:class:`GaussianNoise`, :class:`PoissonNoise`, :class:`BicubicDownscale`,
chosen on the command line with :func:`parse_noise`); every random draw comes from the
generator it is given. :func:`distort` cuts a crop with one of the demo's distortions (a shift,
:func:`gaussian_blur`, noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "BicubicDownscale",
    "Degradation",
    "GaussianNoise",
    "PoissonNoise",
    "distort",
    "gaussian_blur",
    "parse_noise",
]

#: ``degradation(clean image, generator) -> degraded image``.
Degradation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class GaussianNoise:
    """Additive white Gaussian noise, clipped to ``[0, 1]`` like a saved picture.

    Args:
        sigma: Standard deviation in ``[0, 1]`` units (25/255 ~ 0.098 is the classic
            "sigma 25"), or ``(low, high)`` to draw one sigma per image uniformly (blind
            denoising).

    Example:
        >>> noisy = GaussianNoise(0.1)(torch.full((1, 4, 4), 0.5), torch.Generator())
        >>> noisy.shape
        torch.Size([1, 4, 4])
    """

    def __init__(self, sigma: float | tuple[float, float]) -> None:
        low, high = (sigma, sigma) if isinstance(sigma, int | float) else tuple(sigma)
        if not (0.0 <= low <= high) or not math.isfinite(high):
            raise ValueError(
                f"sigma must be a non-negative number or a (low, high) range, got {sigma!r}"
            )
        if high > 1.0:
            raise ValueError(
                f"sigma is in [0, 1] image units (sigma 25 on 0..255 is 25/255 = 0.098), "
                f"got {sigma!r}"
            )
        self.low, self.high = float(low), float(high)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return a noisy copy of ``image`` (same shape, values in ``[0, 1]``)."""
        sigma = self.low + (self.high - self.low) * float(torch.rand((), generator=generator))
        noise = torch.randn(image.shape, generator=generator, dtype=image.dtype)
        return (image + sigma * noise).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        spread = f"{self.low:g}" if self.low == self.high else f"{self.low:g}..{self.high:g}"
        return f"GaussianNoise(sigma={spread})"


class PoissonNoise:
    """Shot noise: ``Poisson(peak * x) / peak``, the photon-limited noise of low dose/light.

    Args:
        peak: Photon count that a pixel of value 1 receives; smaller is noisier
            (e.g. 10 very noisy, 100 mild).
    """

    def __init__(self, peak: float) -> None:
        if not isinstance(peak, int | float) or not math.isfinite(peak) or peak <= 0:
            raise ValueError(f"peak must be a positive number of photons, got {peak!r}")
        self.peak = float(peak)

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return a noisy copy of ``image`` (same shape, values in ``[0, 1]``)."""
        counts = torch.poisson(image.clamp(min=0.0) * self.peak, generator=generator)
        return (counts / self.peak).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return f"PoissonNoise(peak={self.peak:g})"


class BicubicDownscale:
    """Bicubic (antialiased) downscaling by an integer factor: the SR degradation.

    Args:
        scale: Downscaling factor (2 or 4 for the SR network).
    """

    def __init__(self, scale: int) -> None:
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 2:
            raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
        self.scale = scale

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None):
        """Downscale ``(C, H, W)`` (H, W multiples of ``scale``) to ``(C, H/s, W/s)``."""
        height, width = image.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(
                f"an image of {height}x{width} is not a multiple of the scale {self.scale}; "
                "crop it first (modcrop)"
            )
        small = F.interpolate(
            image.unsqueeze(0),
            size=(height // self.scale, width // self.scale),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
        return small.squeeze(0).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return f"BicubicDownscale(scale={self.scale})"


def parse_noise(spec: str) -> GaussianNoise | PoissonNoise:
    """Parse a noise model from the command line.

    Args:
        spec: ``"gaussian:SIGMA"`` (SIGMA in [0, 1] units, or ``LOW-HIGH`` for a range),
            or ``"poisson:PEAK"``.

    Returns:
        The degradation.

    Raises:
        ValueError: If the text does not follow either form.

    Example:
        >>> parse_noise("gaussian:0.1"), parse_noise("poisson:30")
        (GaussianNoise(sigma=0.1), PoissonNoise(peak=30))
    """
    kind, _, value = str(spec).partition(":")
    kind = kind.strip().lower()
    usage = "expected 'gaussian:SIGMA' (e.g. gaussian:0.1 or gaussian:0.02-0.2) or 'poisson:PEAK'"
    if not value:
        raise ValueError(f"noise {spec!r}: {usage}")
    try:
        if kind == "gaussian":
            if "-" in value.strip().lstrip("-"):
                low, high = (float(v) for v in value.split("-"))
                return GaussianNoise((low, high))
            return GaussianNoise(float(value))
        if kind == "poisson":
            return PoissonNoise(float(value))
    except ValueError as error:
        raise ValueError(f"noise {spec!r}: {error}; {usage}") from None
    raise ValueError(f"unknown noise {kind!r} in {spec!r}: {usage}")


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (kernel radius ``ceil(3 sigma)``).

    Args:
        images: ``(N, C, H, W)``.
        sigma: Standard deviation in pixels, ``> 0``.

    Returns:
        Blurred ``(N, C, H, W)``.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    blurred = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(blurred, vertical, groups=channels)


def distort(
    picture: torch.Tensor, top: int, left: int, size: int, kind: str, amount: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Cut the ``size`` crop at ``(top, left)`` of ``picture`` with one distortion.

    A shift cuts the crop ``amount`` pixels further right (the same scene seen from a
    camera moved by that much; no wrap-around), blur and noise change the crop itself.

    Args:
        picture: ``(C, H, W)`` in ``[0, 1]`` with room for the crop plus the shift.
        top: Row of the crop.
        left: Column of the crop.
        size: Side of the crop.
        kind: ``"shift"``, ``"blur"`` or ``"noise"``.
        amount: Pixels, blur sigma, or noise sigma.
        generator: Source of the noise.

    Returns:
        ``(C, size, size)`` in ``[0, 1]``.
    """
    if kind == "shift":
        start = left + int(amount)
        return picture[:, top : top + size, start : start + size]
    crop = picture[:, top : top + size, left : left + size]
    if kind == "blur":
        # Blur the surroundings too, so the crop's border is blurred like its inside.
        pad = max(1, math.ceil(3 * amount))
        y0, x0 = max(0, top - pad), max(0, left - pad)
        region = picture[:, y0 : top + size + pad, x0 : left + size + pad].unsqueeze(0)
        blurred = gaussian_blur(region, amount).squeeze(0)
        return blurred[:, top - y0 : top - y0 + size, left - x0 : left - x0 + size]
    if kind == "noise":
        noise = torch.randn(crop.shape, generator=generator, dtype=crop.dtype)
        return (crop + amount * noise).clamp(0.0, 1.0)
    raise ValueError(f"unknown distortion {kind!r}; expected shift, blur or noise")
