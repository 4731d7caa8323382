"""3D volumes as 2.5D slices, and CT windowing.

A 2D perceptual loss (trained on photographs) does not take ``(N, C, D, H, W)`` volumes. The
2.5D approach cuts the volume into planes along one or more axes, scores corresponding planes
of prediction and target with the 2D loss, and averages:

    loss(x, y) = mean_{axis in axes} mean_{i in slices(axis)} loss_2d(x[axis=i], y[axis=i])

**A mean, not MONAI's sum.** MONAI's ``PerceptualLoss(is_fake_3d=True)`` sums its three
axis values, so its value is three times this one with all three axes. The mean is kept on
purpose: the value stays on the 2D loss's scale whatever the number of axes, and an axis
left out (``axes=``, or a thin axis skipped) does not shrink the loss by a third. For MONAI's
value itself, give the volumes to :class:`~perceptual_loss.medical.MedicalPerceptualLoss`
with a 2D network (its fake 3D sums as MONAI does), or multiply by ``len(axes)``.

Rules a user can rely on:

- **Axes.** ``axes`` chooses the slicing axes by name (``"D"``, ``"H"``, ``"W"``) or dimension
  (``2``, ``3``, ``4`` or ``-3``, ``-2``, ``-1``); all three by default. Slicing along ``D``
  gives ``H x W`` planes, along ``H`` gives ``D x W`` planes, along ``W`` gives ``D x H``.
- **Slice ratio.** ``slice_ratio`` in ``(0, 1]`` keeps ``k = max(1, ceil(ratio * n))`` of the
  ``n`` slices of each axis, drawn without replacement, the same slices for every volume of
  the batch and for prediction and target. ``ratio=1`` uses every slice and draws nothing.
- **Determinism.** ``seed=s`` draws the same slices on every call (validation); a
  ``generator=`` draws a reproducible sequence; neither draws from torch's global generator
  (reproducible under ``torch.manual_seed``).
- **Thin axes.** An axis whose planes are smaller than the 2D loss's minimum input size (e.g.
  ``D x W`` planes of a 4-slice volume through VGG's deep layers) cannot be scored. With
  ``thin_axes="skip"`` (default) it is left out of the mean with a :class:`UserWarning`
  naming it; with ``"error"`` it raises. If every requested axis is thin, it is a
  :class:`ValueError` either way. An axis with few slices is fine: it gets at least one.

CT values are Hounsfield units (air -1000, water 0, bone several hundred and up); a loss on
``[0, 1]`` images needs them windowed first: :func:`window_ct` maps a ``(level, width)``
window linearly onto the loss's ``input_range`` and clips outside it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from perceptual_loss._checks import Reduction, check_reduction
from perceptual_loss.functional import reduce

__all__ = [
    "CT_WINDOWS",
    "VolumePerceptualLoss",
    "rescale_to_hu",
    "volume_perceptual_loss",
    "window_ct",
]

ThinAxes = Literal["skip", "error"]

#: Common CT display windows, ``name: (level, width)`` in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "soft_tissue": (40.0, 400.0),
    "mediastinum": (50.0, 350.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}

_AXIS_NAMES = ("D", "H", "W")
_AXIS_ALIASES = {"d": 2, "depth": 2, "h": 3, "height": 3, "w": 4, "width": 4,
                 2: 2, 3: 3, 4: 4, -3: 2, -2: 3, -1: 4}


def rescale_to_hu(stored: torch.Tensor, slope: float = 1.0, intercept: float = -1024.0
                  ) -> torch.Tensor:
    """Convert stored CT values to Hounsfield units: ``HU = stored * slope + intercept``.

    The DICOM tags RescaleSlope (0028,1053) and RescaleIntercept (0028,1052) give ``slope``
    and ``intercept``; ``-1024`` is the most common intercept (unsigned 12-bit storage).

    Args:
        stored: Stored values of any shape and dtype (e.g. ``uint16`` or ``int16`` pixels).
        slope: RescaleSlope.
        intercept: RescaleIntercept.

    Returns:
        float32 tensor of the same shape, in HU.
    """
    if not isinstance(stored, torch.Tensor):
        raise TypeError(f"stored must be a torch.Tensor; got {type(stored).__name__}. Convert "
                        "numpy arrays with torch.from_numpy(array.astype('float32')).")
    if slope == 0:
        raise ValueError("slope must be non-zero (DICOM RescaleSlope is usually 1)")
    values = stored if torch.is_floating_point(stored) else stored.to(torch.float32)
    return values.to(torch.float32) * slope + intercept


def window_ct(hu: torch.Tensor, window: str | tuple[float, float] = "soft_tissue", *,
              output_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Map Hounsfield units through a display window onto a loss's input range.

    Values ``level - width / 2`` and below map to ``output_range[0]``, ``level + width / 2``
    and above to ``output_range[1]``, linearly in between (clipped outside, so the gradient
    there is zero).

    Args:
        hu: CT values in Hounsfield units, any shape (e.g. ``(N, 1, D, H, W)``); integer
            tensors are converted to float32.
        window: A name from :data:`CT_WINDOWS` (``"brain"``, ``"soft_tissue"``, ``"lung"``,
            ``"bone"``, ...) or ``(level, width)`` in HU.
        output_range: ``(low, high)`` to map onto: the ``input_range`` of the loss, e.g.
            ``(0, 1)`` (default) or ``(-1, 1)``.

    Returns:
        float tensor (float32 unless ``hu`` is float64) of ``hu``'s shape, values in
        ``output_range``.

    Example:
        >>> window_ct(torch.tensor([-1000.0, 40.0, 240.0, 3000.0]), "soft_tissue")
        tensor([0.0000, 0.5000, 1.0000, 1.0000])
    """
    if not isinstance(hu, torch.Tensor):
        raise TypeError(f"hu must be a torch.Tensor; got {type(hu).__name__}. Convert numpy "
                        "arrays with torch.from_numpy(array.astype('float32')).")
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; choose one of: "
                             f"{', '.join(CT_WINDOWS)}, or pass (level, width) in HU")
        level, width = CT_WINDOWS[window]
    else:
        try:
            level, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise ValueError(f"window must be a name or (level, width) in HU; got {window!r}"
                             ) from None
    if not width > 0:
        raise ValueError(f"window width must be positive; got {width:g} HU")
    low_out, high_out = (float(v) for v in output_range)
    if not high_out > low_out:
        raise ValueError(f"output_range must have low < high; got {output_range!r}")
    values = hu if hu.dtype == torch.float64 else hu.to(torch.float32)
    unit = ((values - (level - width / 2)) / width).clamp(0.0, 1.0)
    return unit * (high_out - low_out) + low_out


def _axis_index(axis: int | str) -> int:
    key = axis.lower() if isinstance(axis, str) else axis
    if isinstance(key, bool) or key not in _AXIS_ALIASES:
        raise ValueError(
            f"unknown axis {axis!r}; use 'D', 'H', 'W' or dimensions 2, 3, 4 (-3, -2, -1) "
            "of (N, C, D, H, W)"
        )
    return _AXIS_ALIASES[key]


def _min_size_of(loss_2d: Callable[..., torch.Tensor]) -> int:
    """The smallest plane side ``loss_2d`` accepts, from what it tells about itself."""
    size = getattr(loss_2d, "min_input_size", None)
    if size is None:
        extractor = getattr(loss_2d, "extractor", None)
        size = getattr(extractor, "min_input_size", None)
    return int(size) if size is not None else 1


class VolumePerceptualLoss(nn.Module):
    """2.5D perceptual loss over 3D volumes, from any 2D loss with per-image values.

    Args:
        loss_2d: A 2D loss returning one value per image, ``(B, C, h, w) x 2 -> (B,)``: e.g.
            ``PerceptualLoss(..., reduction="none")`` or ``LPIPS(..., reduction="none")``.
            Volume values must be in its declared input range (see :func:`window_ct`).
        axes: Slicing axes: names ``"D"``, ``"H"``, ``"W"`` or dimensions 2-4 (``-3..-1``).
            All three by default.
        slice_ratio: Fraction of each axis' slices to score, in ``(0, 1]``; at least one
            slice per axis.
        seed: Draw the same slices on every call.
        generator: Draw slices from this generator (a reproducible sequence). Not with ``seed``.
        thin_axes: ``"skip"`` (default; warn and leave out axes whose planes are too small for
            ``loss_2d``) or ``"error"``.
        min_slice_size: Smallest plane side ``loss_2d`` accepts; ``None`` reads
            ``loss_2d.min_input_size`` or ``loss_2d.extractor.min_input_size`` (else 1).
        max_batch: Score at most this many planes per call of ``loss_2d`` (bounds memory
            without gradients); ``None``: all planes of an axis at once.
        reduction: ``"none"`` (``(N,)``), ``"mean"`` or ``"sum"`` over the batch.

    Shape:
        - prediction, target: ``(N, C, D, H, W)`` with ``C`` what ``loss_2d`` takes (1 for CT
          or MRI with a loss in ``"repeat"`` channel mode).
        - Output: ``(N,)`` with ``reduction="none"``, else a scalar.

    Example:
        >>> from perceptual_loss import PerceptualLoss
        >>> loss_2d = PerceptualLoss("vgg11", layers=("relu1_1", "relu2_1"), weights=None,
        ...                          reduction="none")
        >>> loss = VolumePerceptualLoss(loss_2d, slice_ratio=0.5, seed=0)
        >>> gen = torch.Generator().manual_seed(0)
        >>> volume = torch.rand(2, 1, 8, 16, 16, generator=gen)
        >>> loss(volume, volume.flip(-1)).shape
        torch.Size([])
    """

    def __init__(
        self,
        loss_2d: Callable[..., torch.Tensor],
        axes: Sequence[int | str] = ("D", "H", "W"),
        *,
        slice_ratio: float = 1.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        thin_axes: ThinAxes = "skip",
        min_slice_size: int | None = None,
        max_batch: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if not callable(loss_2d):
            raise TypeError(f"loss_2d must be a callable 2D loss; got {type(loss_2d).__name__}")
        self.loss_2d = loss_2d
        if isinstance(axes, (str, int)):
            axes = (axes,)
        indices = [_axis_index(a) for a in axes]
        if not indices:
            raise ValueError("axes must name at least one axis, e.g. ('D', 'H', 'W')")
        if len(set(indices)) != len(indices):
            raise ValueError(f"axes contains the same axis twice: {tuple(axes)!r}")
        self.axes: tuple[int, ...] = tuple(indices)
        if not isinstance(slice_ratio, (int, float)) or not 0 < slice_ratio <= 1:
            raise ValueError(f"slice_ratio must be in (0, 1]; got {slice_ratio!r}")
        self.slice_ratio = float(slice_ratio)
        if seed is not None and generator is not None:
            raise ValueError("pass either seed= (same slices every call) or generator= "
                             "(a reproducible sequence), not both")
        self.seed = seed
        self.generator = generator
        if thin_axes not in ("skip", "error"):
            raise ValueError(f"thin_axes must be 'skip' or 'error'; got {thin_axes!r}")
        self.thin_axes: ThinAxes = thin_axes
        if min_slice_size is not None and (not isinstance(min_slice_size, int)
                                           or min_slice_size < 1):
            raise ValueError(f"min_slice_size must be None or an int >= 1; got {min_slice_size!r}")
        self.min_slice_size = _min_size_of(loss_2d) if min_slice_size is None else min_slice_size
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"max_batch must be None or an int >= 1; got {max_batch!r}")
        self.max_batch = max_batch
        self.reduction: Reduction = check_reduction(reduction)

    def usable_axes(self, shape: Sequence[int]) -> tuple[int, ...]:
        """The axes of ``self.axes`` whose planes are large enough for the 2D loss.

        Args:
            shape: ``(N, C, D, H, W)`` of the volumes.

        Raises:
            ValueError: An axis is thin and ``thin_axes="error"``, or every axis is thin.
        """
        usable: list[int] = []
        for axis in self.axes:
            plane = [int(shape[d]) for d in (2, 3, 4) if d != axis]
            if min(plane) >= self.min_slice_size:
                usable.append(axis)
                continue
            message = (
                f"slicing along {_AXIS_NAMES[axis - 2]} gives {plane[0]}x{plane[1]} planes, "
                f"smaller than the {self.min_slice_size}x{self.min_slice_size} the 2D loss "
                "needs"
            )
            if self.thin_axes == "error":
                raise ValueError(message + "; choose other axes (axes=...) or shallower layers")
            warnings.warn(message + "; that axis is skipped (thin_axes='skip')", UserWarning,
                          stacklevel=2)
        if not usable:
            raise ValueError(
                f"no axis of a volume of shape {tuple(shape)} can be sliced into planes of at "
                f"least {self.min_slice_size}x{self.min_slice_size} for the 2D loss; use "
                "shallower layers, larger volumes, or resize the planes"
            )
        return tuple(usable)

    def select_slices(self, count: int) -> torch.Tensor:
        """Indices (sorted, ``int64``) of the slices scored out of ``count`` along one axis.

        Draws from ``seed``/``generator``/the global generator as documented in the module;
        with ``slice_ratio=1`` returns every index without drawing.
        """
        keep = max(1, math.ceil(self.slice_ratio * count - 1e-9))
        if keep >= count:
            return torch.arange(count)
        generator = self.generator
        if self.seed is not None:
            generator = torch.Generator().manual_seed(self.seed)
        chosen = torch.randperm(count, generator=generator)[:keep]
        return chosen.sort().values

    def forward(self, prediction: torch.Tensor, target: torch.Tensor,
                return_parts: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """2.5D loss between two volume batches.

        Args:
            prediction: ``(N, C, D, H, W)``.
            target: Same shape, dtype and device.
            return_parts: Also return each used axis' value, keyed ``"axis/D"`` etc.,
                reduced like the total.

        Returns:
            The loss (see the class docstring for shapes), and the parts if asked for.
        """
        _check_volumes(prediction, target)
        axes = self.usable_axes(prediction.shape)
        parts: dict[str, torch.Tensor] = {}
        for axis in axes:
            indices = self.select_slices(prediction.shape[axis]).to(prediction.device)
            planes_a = _planes(prediction, axis, indices)
            planes_b = _planes(target, axis, indices)
            values = self._score(planes_a, planes_b)
            parts[f"axis/{_AXIS_NAMES[axis - 2]}"] = values.view(prediction.shape[0], -1).mean(1)
        per_volume = torch.stack(list(parts.values())).mean(dim=0)
        total = reduce(per_volume, self.reduction)
        if return_parts:
            return total, {name: reduce(value, self.reduction) for name, value in parts.items()}
        return total

    def _score(self, planes_a: torch.Tensor, planes_b: torch.Tensor) -> torch.Tensor:
        step = self.max_batch or planes_a.shape[0]
        values = []
        for start in range(0, planes_a.shape[0], step):
            chunk_a, chunk_b = planes_a[start:start + step], planes_b[start:start + step]
            value = self.loss_2d(chunk_a, chunk_b)
            if not isinstance(value, torch.Tensor) or value.shape != (chunk_a.shape[0],):
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
                raise ValueError(
                    f"loss_2d must return one value per plane, shape ({chunk_a.shape[0]},); got "
                    f"{shape}. Build it with reduction='none' (and spatial=False for LPIPS)."
                )
            values.append(value)
        return torch.cat(values)

    def extra_repr(self) -> str:
        names = tuple(_AXIS_NAMES[a - 2] for a in self.axes)
        return (f"axes={names}, slice_ratio={self.slice_ratio}, seed={self.seed}, "
                f"thin_axes={self.thin_axes!r}, min_slice_size={self.min_slice_size}, "
                f"reduction={self.reduction!r}")


def _check_volumes(prediction: torch.Tensor, target: torch.Tensor) -> None:
    for name, x in (("prediction", prediction), ("target", target)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, D, H, W); got "
                            f"{type(x).__name__}")
        if x.ndim != 5:
            hint = " For 2D images use the 2D loss directly." if x.ndim == 4 else ""
            raise ValueError(f"{name} must be a volume batch (N, C, D, H, W); got shape "
                             f"{tuple(x.shape)}.{hint}")
        if not torch.is_floating_point(x):
            raise TypeError(f"{name} has dtype {x.dtype}; expected floats. For CT in HU use "
                            "window_ct(...) to map it to the loss's input range.")
        if x.numel() == 0:
            raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target must have the same shape; got "
                         f"{tuple(prediction.shape)} and {tuple(target.shape)}")


def _planes(volume: torch.Tensor, axis: int, indices: torch.Tensor) -> torch.Tensor:
    """Slices ``indices`` along ``axis`` as a 2D batch ``(N * k, C, h, w)``, volume-major."""
    n, c = volume.shape[:2]
    chosen = volume.index_select(axis, indices)
    planes = chosen.movedim(axis, 2)  # (N, C, k, h, w)
    k, h, w = planes.shape[2:]
    return planes.transpose(1, 2).reshape(n * k, c, h, w)


def volume_perceptual_loss(prediction: torch.Tensor, target: torch.Tensor,
                           loss_2d: Callable[..., torch.Tensor],
                           axes: Sequence[int | str] = ("D", "H", "W"),
                           **options: Any) -> torch.Tensor:
    """Functional form of :class:`VolumePerceptualLoss` (same arguments and rules).

    ``loss_2d`` is used as given (build it once and reuse it), so nothing is rebuilt per call.

    Args:
        prediction: ``(N, C, D, H, W)``.
        target: Same shape.
        loss_2d: The 2D loss, one value per image.
        axes: Slicing axes.
        **options: ``slice_ratio``, ``seed``, ``generator``, ``thin_axes``,
            ``min_slice_size``, ``max_batch``, ``reduction`` (see the class).

    Returns:
        ``(N,)`` with ``reduction="none"``, else a scalar.
    """
    return VolumePerceptualLoss(loss_2d, axes, **options)(prediction, target)
