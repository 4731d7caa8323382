"""Device-aware execution: memory layout and batch chunking, chosen in one place.

None of these choices changes what is computed, only how fast and in how much memory; values
stay within float32 rounding of the plain computation (tests hold them to ``rtol=1e-5``).
With the defaults (``"auto"``) the rule below decides from the device, the autocast dtype and
whether a gradient is needed; an explicit value always wins.

The rule, from the measurements in ``benchmarks/RESULTS.md`` (CPU) and cuDNN's kernels (CUDA):

====================  ==========================  =======================================
device                channels_last               chunk_size (a training step)
====================  ==========================  =======================================
CPU                   yes (oneDNN's fast layout)  about one 224x224 image's pixels: 1 sample
                                                  from 224x224 up; smaller images 2 or more,
                                                  at most half the batch
CUDA, fp32            no                          the whole batch
CUDA, fp16/bf16       yes (tensor-core kernels)   the whole batch
====================  ==========================  =======================================

Without a gradient (metrics, ``torch.no_grad()``) the whole batch runs at once. With
``memory="plain"`` (ordinary autograd) ``"auto"`` means the plain computation itself: NCHW and
the whole batch, bit-identical to an unmodified network.

Under ``torch.compile`` the trunk is the plain computation of ordinary operations, the whole
batch at once (:func:`runs_lean` is false while the compiler traces): the compiler sees the
network's graph and fuses and schedules it, which the memory-lean trunk's hand-written
backward (eager-only autograd functions and per-chunk backward passes) would hide from it.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["AUTO", "ChannelsLast", "ChunkSize", "check_channels_last", "check_chunk_size",
           "choose_channels_last", "choose_chunk_size", "runs_lean"]

AUTO = "auto"
#: Pixels per chunk of a CPU training step (one 224x224 image).
CPU_CHUNK_PIXELS = 224 * 224
ChannelsLast = bool | Literal["auto"]
ChunkSize = int | None | Literal["auto"]


def runs_lean(memory: str) -> bool:
    """Whether a trunk built with ``memory`` runs memory-lean now: eager code only.

    Under ``torch.compile`` the trunk runs plain, so that the compiler sees one ordinary graph
    (see the module docstring).
    """
    return memory == "lean" and not torch.compiler.is_compiling()


def check_channels_last(value: object) -> ChannelsLast:
    """Validate a ``channels_last`` option: ``True``, ``False`` or ``"auto"``."""
    if value == AUTO or isinstance(value, bool):
        return value  # type: ignore[return-value]
    raise ValueError(f"channels_last must be True, False or 'auto'; got {value!r}")


def check_chunk_size(value: object) -> ChunkSize:
    """Validate a ``chunk_size`` option: a positive int, ``None`` or ``"auto"``."""
    if value is None or value == AUTO:
        return value  # type: ignore[return-value]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"chunk_size must be a positive int, None or 'auto'; got {value!r}")
    return value


def choose_channels_last(option: ChannelsLast, device: torch.device, *, plain: bool = False
                         ) -> bool:
    """Whether the trunk runs in ``torch.channels_last`` on ``device`` (see the rule above)."""
    if option != AUTO:
        return bool(option)
    if plain:
        return False
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return (torch.is_autocast_enabled("cuda")
                and torch.get_autocast_dtype("cuda") in (torch.float16, torch.bfloat16))
    return False


def choose_chunk_size(option: ChunkSize, device: torch.device, *, needs_grad: bool,
                      plain: bool = False, batch: int | None = None,
                      pixels: int | None = None) -> int | None:
    """Samples per trunk pass on ``device`` (``None``: the whole batch; see the rule above).

    Args:
        option: The ``chunk_size`` option; anything but ``"auto"`` is returned as it is.
        device: Where the trunk runs.
        needs_grad: Whether this pass records a gradient (a training step).
        plain: ``memory="plain"``: ``"auto"`` means the plain computation, the whole batch.
        batch: Samples in the batch, if known.
        pixels: Pixels of one sample (``H * W``), if known.
    """
    if option != AUTO:
        return option  # type: ignore[return-value]
    if plain or not needs_grad or device.type != "cpu":
        return None
    if batch is None or pixels is None:
        return 1
    # About one 224x224 image's pixels per chunk, at least two samples when the images are
    # small (oneDNN skips batch-1 convolutions of small maps) and at most half the batch.
    chunk = max(1, CPU_CHUNK_PIXELS // max(pixels, 1))
    chunk = min(chunk, max(2, batch // 2))
    return None if chunk >= batch else chunk
