"""Input validation shared by every entry point.

Every check raises :class:`TypeError` or :class:`ValueError` with a message that names the
problem, what was observed, and how to fix it. Checks that read values (NaN/Inf, range) force a
device synchronisation; callers let users switch them off with ``check_values=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["check_image", "check_input_range", "check_pair", "check_values"]

# Values this far outside the declared range (as a fraction of its span) are still accepted:
# round-off of a clamp followed by a resize or a low-precision cast lands there.
RANGE_TOLERANCE = 1e-3


def check_input_range(input_range: Sequence[float]) -> tuple[float, float]:
    """Validate a declared value range ``(low, high)`` and return it as floats."""
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_range must be a pair (low, high) such as (0, 1), (-1, 1) or (0, 255); "
            f"got {input_range!r}"
        ) from None
    if not high > low:
        raise ValueError(f"input_range must have low < high; got {input_range!r}")
    return low, high


def check_image(x: object, name: str = "input") -> torch.Tensor:
    """Check that ``x`` is a floating-point image batch ``(N, C, H, W)``.

    Raises:
        TypeError: Not a tensor, or an integer/bool tensor (with how to convert it).
        ValueError: Not 4-dimensional or empty.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W); "
                        f"got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} has dtype {x.dtype}; expected a floating-point tensor. Convert it, e.g. "
            f"{name}.float() / 255 for 8-bit images (then input_range=(0, 1)), or "
            f"{name}.float() with input_range=(0, 255)."
        )
    if x.ndim != 4:
        hint = " Add a batch dimension with x.unsqueeze(0)." if x.ndim == 3 else ""
        if x.ndim == 5:
            hint = " For 3D volumes (N, C, D, H, W) use perceptual_loss.volumes."
        raise ValueError(f"{name} must have shape (N, C, H, W); got {tuple(x.shape)}.{hint}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    return x


def check_pair(prediction: torch.Tensor, target: torch.Tensor) -> None:
    """Check that prediction and target agree in shape, dtype and device."""
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction and target must have the same shape; got {tuple(prediction.shape)} "
            f"and {tuple(target.shape)}"
        )
    if prediction.dtype != target.dtype:
        raise TypeError(
            f"prediction and target must have the same dtype; got {prediction.dtype} and "
            f"{target.dtype}. Convert one with .to(other.dtype)."
        )
    if prediction.device != target.device:
        raise ValueError(
            f"prediction and target must be on the same device; got {prediction.device} and "
            f"{target.device}. Move one with .to(other.device)."
        )


def check_values(x: torch.Tensor, name: str, input_range: tuple[float, float]) -> None:
    """Check that ``x`` is finite and inside the declared ``input_range``.

    One reduction and one device synchronisation.

    Raises:
        ValueError: NaN or Inf found, or values outside the range (with the observed min/max).
    """
    low, high = input_range
    with torch.no_grad():
        lo_hi = torch.aminmax(x.detach().float())
        observed_min, observed_max = (float(v) for v in torch.stack(lo_hi).tolist())
    if observed_min != observed_min or observed_max != observed_max:  # NaN
        raise ValueError(f"{name} contains NaN values; check the network that produced it "
                         "(e.g. its learning rate) or the data.")
    if observed_min in (float("inf"), float("-inf")) or observed_max in (float("inf"),
                                                                         float("-inf")):
        raise ValueError(f"{name} contains Inf values (observed min {observed_min}, "
                         f"max {observed_max}).")
    slack = RANGE_TOLERANCE * (high - low)
    if observed_min < low - slack or observed_max > high + slack:
        raise ValueError(
            f"{name} has values in [{observed_min:.4g}, {observed_max:.4g}] but "
            f"input_range=({low:g}, {high:g}) was declared. Declare the range your images "
            f"use (e.g. input_range=(-1, 1) or (0, 255)), clamp them (x.clamp({low:g}, "
            f"{high:g})), or pass check_values=False to skip this check."
        )
