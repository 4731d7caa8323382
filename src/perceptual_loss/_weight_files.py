"""Reading weight files and checking them strictly: keys, shapes, dtypes and values.

Readers for torch checkpoints and small tensor files (``weights_only=True``: never unpickles
code), and the strict check every load goes through: a file loads only if its keys and shapes
are exactly those of the network and every floating-point tensor is finite. Errors name the
file and the first bad key. Keras files are read by :mod:`perceptual_loss._keras_files`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "WeightsIntegrityError",
    "WeightsNotFoundError",
    "check_state",
    "check_tensor_values",
    "read_state_dict",
]


#: Why a weights file is missing (:attr:`WeightsNotFoundError.reason`).
NOT_FOUND_REASONS: tuple[str, ...] = ("absent", "offline", "download-failed", "no-such-file")


class WeightsNotFoundError(FileNotFoundError):
    """A weights file could not be found or downloaded; the message says where to put it.

    Attributes:
        key: Registry key of the missing file (``None`` for a path).
        weights_file: The file looked for.
        url: Where it is published (``None`` for a path).
        folders: Where it was looked for.
        reason: Why it is missing, one of :data:`NOT_FOUND_REASONS`: ``"absent"`` (in none of
            the folders, no download tried), ``"offline"`` (downloads are turned off),
            ``"download-failed"`` (a download was tried and failed), ``"no-such-file"`` (a
            path or name that is neither a file nor a known name).
    """

    def __init__(self, message: str, *, key: str | None = None,
                 weights_file: str | None = None, url: str | None = None,
                 folders: tuple[Path, ...] = (), reason: str = "absent") -> None:
        super().__init__(message)
        if reason not in NOT_FOUND_REASONS:
            raise ValueError(f"reason must be one of {NOT_FOUND_REASONS}, got {reason!r}")
        self.key, self.weights_file, self.url, self.folders = key, weights_file, url, folders
        self.reason = reason


class WeightsIntegrityError(ValueError):
    """A weights file exists but is corrupt, fails its hash, or belongs to another network."""


def read_tensor_file(path: str | os.PathLike[str], what: str) -> object:
    """``torch.load`` of a file of tensors only (``weights_only=True``), errors naming it.

    Args:
        path: The file.
        what: What it should be, for messages (``"LPIPS heads file"``).

    Raises:
        FileNotFoundError: No such file.
        WeightsIntegrityError: It cannot be read (corrupt, not a torch file, holds code).
    """
    source = os.fspath(path)
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {source}") from None
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsIntegrityError(f"cannot read {what} {source}: {type(err).__name__}: "
                                    f"{err}. It is corrupt or not a torch state dict.") from err


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a torch checkpoint of tensors safely (``weights_only=True``).

    Accepts a plain state dict, or a dict holding one under ``"state_dict"`` or ``"model"``.

    Raises:
        WeightsIntegrityError: The file cannot be read as a state dict; the message names it.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsIntegrityError(
            f"cannot read weights file {path}: {type(err).__name__}: {err}. "
            "It is corrupt or not a torch checkpoint."
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsIntegrityError(
            f"weights file {path} does not hold a state dict of tensors (got {type(obj).__name__})"
        )
    return dict(obj)


def check_tensor_values(state: Mapping[str, torch.Tensor], source: object,
                        floating: Mapping[str, bool] | None = None) -> None:
    """Check that the tensors of a state dict are floating point (where expected) and finite.

    Args:
        state: Name -> tensor.
        source: The file (or other origin) for the message.
        floating: Name -> whether the network holds a floating-point tensor there; ``None``:
            every tensor must be floating point. Integer counters such as batch norm's
            ``num_batches_tracked`` are passed as ``False``.

    Raises:
        WeightsIntegrityError: The first key with a non-floating dtype or a NaN/Inf value.
    """
    for key, tensor in state.items():
        if floating is not None and not floating.get(key, True):
            continue
        if not torch.is_floating_point(tensor):
            raise WeightsIntegrityError(
                f"weights file {source}: {key!r} has dtype {tensor.dtype}, expected floating "
                "point; the file is corrupt or not a weights file for this network"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise WeightsIntegrityError(
                f"weights file {source}: {key!r} holds NaN or Inf values; the weights are "
                "broken (e.g. saved after a diverged training run)"
            )


def check_state(module: nn.Module, state: Mapping[str, torch.Tensor], source: object,
                network: str) -> None:
    """Check ``state`` against ``module`` strictly (keys, shapes, dtypes, finite values).

    Raises:
        WeightsIntegrityError: Keys missing or unexpected, wrong shapes, or bad values; the
            message names the file and the first offending keys.
    """
    reference = module.state_dict()
    expected = {k: tuple(v.shape) for k, v in reference.items()}
    check_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, source, network)
    check_tensor_values(state, source,
                        {k: torch.is_floating_point(v) for k, v in reference.items()})


def check_shapes(expected: Mapping[str, tuple], got: Mapping[str, tuple], source: object,
                 network: str, optional: frozenset[str] | set[str] = frozenset()) -> None:
    """Compare key sets and shapes; raise one message with what does not fit.

    ``optional`` keys may be missing (e.g. batch norm counters absent from old files).
    """
    missing = sorted(set(expected) - set(got) - set(optional))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if not (missing or unexpected or wrong):
        return
    parts = [f"weights file {source} does not fit backbone {network!r}"]
    if missing:
        parts.append(f"missing keys: {', '.join(missing[:6])}"
                     + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        parts.append(f"unexpected keys: {', '.join(unexpected[:6])}"
                     + (" ..." if len(unexpected) > 6 else ""))
    if wrong:
        parts.append("wrong shapes: " + ", ".join(
            f"{k} {got[k]} (expected {expected[k]})" for k in wrong[:4]))
    raise WeightsIntegrityError("; ".join(parts) + ". Is it the file of another network?")
