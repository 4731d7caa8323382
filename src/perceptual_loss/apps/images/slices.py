"""16-bit CT/MRI slices: raw values read exactly, windowed to ``[0, 1]`` for training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["apply_window", "load_slices", "parse_window", "read_raw_grayscale"]


def read_raw_grayscale(path: str | Path) -> np.ndarray:
    """Read a grayscale PNG's stored values without scaling (16-bit CT/MRI slices).

    For a CT slice stored as ``HU + 1024`` this returns ``HU + 1024``; for 8-bit files
    the values are 0..255.

    Args:
        path: A single-channel image file (PIL modes ``L``, ``I;16``, ``I``).

    Returns:
        ``(H, W)`` float32 array of the stored values.

    Raises:
        ValueError: If the file is missing or not single-channel.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file {str(path)!r} does not exist")
    with Image.open(path) as picture:
        if picture.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
            raise ValueError(
                f"{path.name} is a {picture.mode} image; CT/MRI windowing needs a "
                "single-channel (grayscale, 8- or 16-bit) file"
            )
        return np.asarray(picture).astype(np.float32)


def parse_window(text: str) -> tuple[float, float]:
    """Parse a display window ``"LOW,HIGH"`` given in the file's stored values.

    Args:
        text: Two numbers separated by a comma, e.g. ``"984,1104"`` (a CT window of
            -40..80 HU for files that store ``HU + 1024``).

    Returns:
        ``(low, high)`` with ``low < high``.

    Raises:
        ValueError: If the text is not two numbers or ``low >= high``.
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise ValueError(
            f"a window is 'LOW,HIGH' in stored pixel values (e.g. '984,1104'), got {text!r}"
        ) from None
    if not low < high:
        raise ValueError(f"window LOW must be below HIGH, got {text!r}")
    return low, high


def apply_window(raw: np.ndarray | torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map stored values to ``[0, 1]``: ``low`` and below -> 0, ``high`` and above -> 1.

    Args:
        raw: ``(H, W)`` stored values (e.g. from :func:`read_raw_grayscale`).
        low: Stored value shown as black.
        high: Stored value shown as white; must be above ``low``.

    Returns:
        ``(1, H, W)`` float32 tensor in ``[0, 1]``.

    Example:
        >>> apply_window(np.array([[0.0, 50.0, 100.0, 200.0]]), 0, 100)
        tensor([[[0.0000, 0.5000, 1.0000, 1.0000]]])
    """
    if not low < high:
        raise ValueError(f"window low ({low}) must be below high ({high})")
    values = torch.as_tensor(np.asarray(raw), dtype=torch.float32)
    if values.ndim != 2:
        raise ValueError(f"expected a single (H, W) slice, got shape {tuple(values.shape)}")
    return ((values - low) / (high - low)).clamp(0.0, 1.0).unsqueeze(0)


def load_slices(
    paths: Sequence[str | Path], window: tuple[float, float] | None = None
) -> tuple[list[torch.Tensor], tuple[float, float]]:
    """Load grayscale CT/MRI slices (16-bit PNG) and window them to ``[0, 1]``.

    Args:
        paths: Single-channel image files.
        window: ``(low, high)`` in stored values; ``None`` uses the minimum and maximum
            over all files, one window for the whole set so that intensities stay
            comparable between slices.

    Returns:
        ``(images, window)``: ``(1, H, W)`` float32 tensors and the window used (store it
        with the model so held-out slices are windowed the same way).

    Raises:
        ValueError: If ``paths`` is empty, a file is not grayscale, or all files are one
            constant value and no window was given.
    """
    if not paths:
        raise ValueError("no slices given")
    raws = [read_raw_grayscale(path) for path in paths]
    if window is None:
        low = float(min(raw.min() for raw in raws))
        high = float(max(raw.max() for raw in raws))
        if not low < high:
            raise ValueError(
                f"all slices hold the single value {low}; give a window explicitly"
            )
        window = (low, high)
    return [apply_window(raw, *window) for raw in raws], window
