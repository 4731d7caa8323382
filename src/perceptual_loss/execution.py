"""Device-aware execution: memory layout, batch chunking and convolution algorithm, chosen here.

None of these choices changes what is computed, only how fast and in how much memory; values
stay within float32 rounding of the plain computation (tests hold them to ``rtol=1e-5``).
With the defaults (``"auto"``) the rule below decides from the device, the autocast dtype and
whether a gradient is needed; an explicit value always wins.

The rule, from the measurements in ``benchmarks/RESULTS.md`` (CPU) and cuDNN's kernels (CUDA):

================  =====================  ==============================  ====================
device            channels_last          chunk_size (a training step)    convolution
================  =====================  ==============================  ====================
CPU, float32      yes (oneDNN's layout)  about one 256x256 image's       Winograd F(4x4, 3x3)
                                         pixels: 1 sample from 256x256   for 3x3 layers with
                                         up (224x224 too), 2 at 160x160, >= 128 and >= 256
                                         at most half the batch          channels
CPU, bf16         yes                    the same                        oneDNN (AMX)
CUDA, fp32        no                     the whole batch                 cuDNN
CUDA, fp16/bf16   yes (tensor cores)     the whole batch                 cuDNN
================  =====================  ==============================  ====================

Without a gradient (metrics, ``torch.no_grad()``) the whole batch runs at once. With
``memory="plain"`` (ordinary autograd) ``"auto"`` means the plain computation itself: NCHW,
the whole batch and the framework's convolutions, bit-identical to an unmodified network.

Winograd (:mod:`perceptual_loss._winograd`): a float32 3x3 convolution on CPU already runs near
the machine's GEMM peak, so a faster training step needs fewer multiplications. On VGG16 from
``conv3_1`` on (two thirds of the trunk's work up to ``relu4_3``) F(4x4, 3x3) takes 0.4-0.6x
oneDNN's time; its values are within 3e-6 of a float64 convolution relative to the output's
norm (oneDNN: 2e-7 to 1.2e-6). The transformed filters are cached: 4x the weights of those layers
(112 MiB for VGG16 up to ``relu4_3``), built on the first call. ``convolution="direct"`` keeps
oneDNN's kernels everywhere.

Nothing compiles behind the user's back: the defaults are eager code that is fast from the
first call, so a one-off metric call never pays a compilation. ``torch.compile`` is the
user's choice; under it the trunk is the plain computation of ordinary operations, the whole
batch at once (:func:`runs_lean` is false while the compiler traces): the compiler sees the
network's graph and fuses and schedules it, which the memory-lean trunk's hand-written
backward (eager-only autograd functions and per-chunk backward passes) would hide from it.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["AUTO", "ChannelsLast", "ChunkSize", "Convolution", "check_channels_last",
           "check_chunk_size", "check_convolution", "choose_channels_last", "choose_chunk_size",
           "runs_lean", "uses_winograd"]

AUTO = "auto"
#: Pixels per chunk of a CPU training step (one 256x256 image).
CPU_CHUNK_PIXELS = 256 * 256
ChannelsLast = bool | Literal["auto"]
ChunkSize = int | None | Literal["auto"]
Convolution = Literal["auto", "direct"]


def runs_lean(memory: str) -> bool:
    """Whether a trunk built with ``memory`` runs memory-lean now: eager code only.

    Under ``torch.compile`` the trunk runs plain, so that the compiler sees one ordinary graph
    (see the module docstring).
    """
    return memory == "lean" and not torch.compiler.is_compiling()


def uses_winograd(option: Convolution, *, plain: bool = False) -> bool:
    """Whether a lean trunk may run its wide 3x3 layers by Winograd (see the rule above).

    ``"auto"`` allows it (each layer still has to qualify: CPU, float32, no autocast, channel
    counts; :func:`perceptual_loss._winograd.usable`); ``"direct"`` and ``memory="plain"``
    keep the framework's own convolution kernels.
    """
    return option == AUTO and not plain


def check_convolution(value: object) -> Convolution:
    """Validate a ``convolution`` option: ``"auto"`` or ``"direct"``."""
    if value in (AUTO, "direct"):
        return value  # type: ignore[return-value]
    raise ValueError(f"convolution must be 'auto' or 'direct'; got {value!r}")


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
    # About one 256x256 image's pixels per chunk, at least two samples when the images are
    # small (oneDNN skips batch-1 convolutions of small maps; Winograd's GEMMs want enough
    # tiles) and at most half the batch.
    chunk = max(1, CPU_CHUNK_PIXELS // max(pixels, 1))
    chunk = min(chunk, max(2, batch // 2))
    return None if chunk >= batch else chunk
