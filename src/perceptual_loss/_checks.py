"""Validation shared by every entry point: options, images, pairs and values.

Every check raises :class:`TypeError` or :class:`ValueError` with a one-line message that names
the option or input, what was observed, and how to fix it. Checks that read values (NaN/Inf,
range) force a device synchronisation; callers let users switch them off with
``check_values=False``. The Keras front end uses the same option checks and the same value
rule (:func:`range_verdict`) on values it reads through ``keras.ops``.

The value rule tells data mistakes from network outputs: data (targets) must lie in the
declared range, up to the overshoot resampling produces; a prediction that records a gradient
is checked for NaN/Inf only, since a network's output may overshoot while it learns.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch

__all__ = [
    "RANGE_MARGIN",
    "REDUCTIONS",
    "OutOfRangeWarning",
    "Reduction",
    "ValueRole",
    "check_choice",
    "check_image",
    "check_input_range",
    "check_min_size",
    "check_pair",
    "check_positive_int",
    "check_positive_number",
    "check_reduction",
    "check_values",
    "check_values_of",
    "check_weight",
    "range_verdict",
    "value_role",
    "warn_once",
]

#: Values more than this fraction of the span outside the declared range are images in another
#: convention (0..255 or [-1, 1] declared as (0, 1)). Anything closer is an overshoot: one bicubic
#: resampling of data in range (torch's kernel, a=-0.75) reaches at most 0.445 of the span
#: (measured on Set5/Set14/BSD68/Urban100: up to 0.30), and a network's output drifts there
#: while it learns.
RANGE_MARGIN = 0.5

#: How values are judged: data (targets), a network's output (metric use), a network's output
#: that records a gradient (a training step).
ValueRole = Literal["data", "output", "training output"]


class OutOfRangeWarning(UserWarning):
    """A prediction that records a gradient lies far outside the declared ``input_range``."""

Reduction = Literal["none", "mean", "sum"]
#: ``"none"`` keeps one value per sample ``(N,)``; ``"mean"``/``"sum"`` reduce over the batch.
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")


# ---------------------------------------------------------------------------------- options
def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices`` (strings) and return it."""
    if not isinstance(value, str) or value not in choices:
        quoted = [repr(c) for c in choices]
        listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise ValueError(f"{name} must be {listed}; got {value!r}")
    return value


def check_reduction(value: object) -> Reduction:
    """Check a ``reduction`` option (``"none"``, ``"mean"`` or ``"sum"``)."""
    return check_choice("reduction", value, REDUCTIONS)  # type: ignore[return-value]


def check_weight(name: str, value: object) -> float:
    """Check that a term or layer weight is a finite number ``>= 0`` and return it as float.

    Raises:
        TypeError: Not a real number (e.g. a string or a tensor with several values).
        ValueError: Negative, NaN or infinite: the loss would be meaningless.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
            isinstance(value, torch.Tensor) and value.numel() == 1):
        raise TypeError(f"{name} must be a number >= 0; got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {number!r}. Use 0 to turn "
                         "a term off.")
    return number


def check_positive_number(name: str, value: object) -> float:
    """Check that ``value`` is a finite number ``> 0`` (a stabiliser, a ratio) and return it.

    Raises:
        TypeError: Not a real number.
        ValueError: Zero, negative, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number > 0; got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return number


def check_positive_int(name: str, value: object, *, allow_none: bool = False,
                       minimum: int = 1) -> int | None:
    """Check an option that counts something (a size, a chunk) and return it as int."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an int >= {minimum}{none}; got {value!r}")
    return int(value)


def check_input_range(input_range: Sequence[float]) -> tuple[float, float]:
    """Validate a declared value range ``(low, high)`` and return it as floats.

    Raises:
        ValueError: Not a pair of numbers, not finite, or ``high <= low``.
    """
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_range must be a pair (low, high) such as (0, 1), (-1, 1) or (0, 255); "
            f"got {input_range!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"input_range must be finite; got {input_range!r}")
    if not high > low:
        raise ValueError(f"input_range must have low < high; got {input_range!r}. Declare "
                         "the range your images use, e.g. (0, 1) or (0, 255).")
    return low, high


# ---------------------------------------------------------------------------------- images
def check_image(x: object, name: str = "input",
                spatial_dims: int | tuple[int, ...] = 2) -> torch.Tensor:
    """Check that ``x`` is a floating-point image batch ``(N, C, H, W)``.

    With ``spatial_dims=3`` a batch of volumes ``(N, C, D, H, W)`` is expected instead (3D
    networks such as MedicalNet); ``(2, 3)`` accepts either.

    Raises:
        TypeError: Not a tensor, or an integer/bool tensor (with how to convert it).
        ValueError: Not 4-dimensional (5 for volumes) or empty.
    """
    allowed = (spatial_dims,) if isinstance(spatial_dims, int) else tuple(spatial_dims)
    layout = " or ".join({2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}[d] for d in allowed)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}; "
                        f"got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(
            f"{name} has dtype {x.dtype}; expected a floating-point tensor. Convert it, e.g. "
            f"{name}.float() / 255 for 8-bit images (then input_range=(0, 1)), or "
            f"{name}.float() with input_range=(0, 255)."
        )
    if x.ndim - 2 not in allowed:
        hint = ""
        if x.ndim == 4:
            hint = (" This network is 3D. For 2D slices use 'radimagenet_resnet50' or "
                    "'resnet50'.")
        elif x.ndim == 3:
            hint = (" One (C, H, W) image: x.unsqueeze(0); a batch of grayscale (N, H, W): "
                    "x.unsqueeze(1).")
        elif x.ndim == 2:
            hint = " One grayscale (H, W) image: x[None, None]."
        elif x.ndim <= 1:
            hint = (" These networks compare 2D images; a 1D signal has no height and width "
                    "(reshape it only if it really is an image, e.g. x.view(1, 1, H, W)).")
        elif x.ndim == 5:
            hint = (" For 3D volumes (N, C, D, H, W) use perceptual_loss.volumes, or a 3D "
                    "backbone such as 'medicalnet_resnet10'.")
        raise ValueError(f"{name} must have shape {layout}; got {tuple(x.shape)}.{hint}")
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


def check_min_size(x: torch.Tensor, minimum: int, network: str, why: str) -> None:
    """Check that every spatial side of ``x`` (``(N, C, *sides)``) is at least ``minimum``.

    Raises:
        ValueError: A side is smaller; the message gives the sizes, ``why`` and the fix.
    """
    sides = tuple(int(side) for side in x.shape[2:])
    if min(sides) < minimum:
        needed = "x".join([str(minimum)] * len(sides))
        raise ValueError(
            f"inputs of spatial size {'x'.join(map(str, sides))} are too small for {network!r}: "
            f"it needs at least {needed} ({why}); pad or resize them")


def value_role(x: torch.Tensor, *, prediction: bool = False) -> ValueRole:
    """The role of ``x`` under the value rule (see :func:`range_verdict`).

    Images that autograd records are a network's output being trained: ``"training output"``.
    Otherwise a ``prediction`` is ``"output"`` (metric or validation use) and anything else
    ``"data"``.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return "training output"
    return "output" if prediction else "data"


def range_verdict(name: str, role: ValueRole, observed_min: float, observed_max: float,
                  input_range: tuple[float, float]) -> tuple[str | None, str | None]:
    """Judge observed values by the value rule: ``(error, warning)``, each a message or ``None``.

    The rule, shared by the torch and Keras front ends:

    - NaN or Inf is an error for every role.
    - Values up to :data:`RANGE_MARGIN` (half the span) outside the declared range are an
      overshoot: resampling data produces it, and so does a network while it learns. They
      are accepted as they are (never clamped).
    - Beyond that margin the images are in another convention (0..255, [-1, 1]): an error for
      ``"data"`` (targets, style images) and ``"output"`` (a prediction under
      ``torch.no_grad``: metric and validation use), whose value would be meaningless, and one
      warning for a ``"training output"`` (a prediction that records a gradient), which is
      never refused for its range: a check must not kill a training run.

    Args:
        name: What the values are (``"prediction"``, ``"target"``, ``"y_true"``).
        role: See above.
        observed_min: Smallest value seen.
        observed_max: Largest value seen.
        input_range: The declared ``(low, high)``.
    """
    if math.isnan(observed_min) or math.isnan(observed_max):
        return (f"{name} contains NaN values; check the network that produced it (e.g. its "
                "learning rate) or the data."), None
    if math.isinf(observed_min) or math.isinf(observed_max):
        return (f"{name} contains Inf values (observed min {observed_min}, max "
                f"{observed_max})."), None
    low, high = input_range
    margin = RANGE_MARGIN * (high - low)
    if low - margin <= observed_min and observed_max <= high + margin:
        return None, None
    observed = (f"{name} has values in [{observed_min:.4g}, {observed_max:.4g}] but "
                f"input_range=({low:g}, {high:g}) was declared, more than {RANGE_MARGIN:g} of "
                "its span outside it: ")
    if role == "data":
        return (f"{observed}the data look like another convention. Declare the range your "
                "data use (e.g. input_range=(-1, 1) or (0, 255)) or rescale them."), None
    convention = (f"{observed}the images look like another convention. Declare the range "
                  "they use (e.g. input_range=(-1, 1) or (0, 255)) or map them to the "
                  "declared one")
    if role == "output":
        return convention + ".", None
    return None, (convention + ". Training goes on: a network's output in training is never "
                  "refused for its range (this warning is given once).")


def warn_once(message: str, warned: set[str], key: str) -> None:
    """Warn with :class:`OutOfRangeWarning` unless ``key`` is already in ``warned``."""
    if key not in warned:
        warned.add(key)
        warnings.warn(message, OutOfRangeWarning, stacklevel=4)


def check_values(x: torch.Tensor, name: str, input_range: tuple[float, float],
                 role: ValueRole = "data", warned: set[str] | None = None) -> None:
    """Check ``x`` by the value rule (see :func:`range_verdict`) for its ``role``.

    One reduction and one device synchronisation.

    Raises:
        ValueError: NaN or Inf found, or values the rule refuses (with the observed min/max).
    """
    check_values_of(((x, name, role),), input_range, warned)


def check_values_of(named: Sequence[tuple[torch.Tensor, str, ValueRole]],
                    input_range: tuple[float, float], warned: set[str] | None = None) -> None:
    """:func:`check_values` for several tensors with one device synchronisation in all.

    Args:
        named: ``(tensor, name, role)`` triples.
        input_range: The declared ``(low, high)``.
        warned: Names already warned about, updated here (a module keeps one set so that
            each warning is given once); ``None`` warns every time.

    Raises:
        ValueError: For the first tensor (in the order given) that the rule refuses.
    """
    with torch.no_grad():
        stats = torch.stack([torch.stack(torch.aminmax(x.detach().float()))
                             for x, _, _ in named])
        observed = stats.tolist()  # the one synchronisation
    for (_, name, role), (observed_min, observed_max) in zip(named, observed, strict=True):
        error, warning = range_verdict(name, role, float(observed_min), float(observed_max),
                                       input_range)
        if error is not None:
            raise ValueError(error)
        if warning is not None:
            warn_once(warning, set() if warned is None else warned, name)
