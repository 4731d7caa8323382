"""Process plumbing shared by the apps: distributed set-up, progress bars, CPU threads.

:func:`cpu_threads` says how many threads torch should use beside the machine's other work.

Under ``torchrun`` (``WORLD_SIZE > 1``) a process joins the group with gloo on CPU or NCCL on
GPU, with a timeout on every collective so that no rank waits forever for a dead or stuck
peer; only rank 0 prints and writes. Without ``torchrun`` everything is a single process.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DIST_TIMEOUT_ENV",
    "DistributedContext",
    "NoProgress",
    "advance",
    "cpu_threads",
    "progress_bar",
    "setup_distributed",
    "worker_init",
]

#: Seconds a collective (barrier, all-reduce, gather) may wait for the other ranks.
DIST_TIMEOUT_ENV = "PERCEPTUAL_DIST_TIMEOUT"
_DEFAULT_DIST_TIMEOUT_S = 600.0


@dataclass
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: Global rank (0 when not distributed).
        world_size: Number of processes.
        device: Device this process computes on.
        created_group: Whether :func:`setup_distributed` created the process group (and
            :meth:`close` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    created_group: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process works."""
        return self.world_size > 1

    def echo(self, printer: Callable[[str], None] | None = None) -> Callable[[str], None]:
        """A line printer that prints on rank 0 only (``print`` by default)."""
        if not self.is_main:
            return lambda _text: None
        return printer or print

    def barrier(self) -> None:
        """Wait for every process (no-op when not distributed); times out, never hangs."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.created_group and dist.is_initialized():
            dist.destroy_process_group()
            self.created_group = False


def _timeout() -> datetime.timedelta:
    text = os.environ.get(DIST_TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else _DEFAULT_DIST_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{DIST_TIMEOUT_ENV} must be a number of seconds; got {text!r}") from None
    return datetime.timedelta(seconds=seconds)


def setup_distributed(device: torch.device) -> DistributedContext:
    """Join the process group that ``torchrun`` describes, or run as a single process.

    ``torchrun --nproc_per_node N ...`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT``; with ``WORLD_SIZE > 1`` this joins the group with
    the gloo backend on CPU or NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``). A group
    that already exists is reused (and not destroyed by :meth:`DistributedContext.close`).
    Collectives time out after ``$PERCEPTUAL_DIST_TIMEOUT`` seconds (default 600).

    Args:
        device: The device asked for (``--device``); CUDA becomes ``cuda:LOCAL_RANK``.

    Returns:
        The process's :class:`DistributedContext`.

    Raises:
        ValueError: If the environment names more processes than GPUs on this node.
    """
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                                  device=device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or not dist.is_available():
        return DistributedContext(device=device)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "gloo"
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    dist.init_process_group(backend=backend, timeout=_timeout())
    if dist.get_rank() != rank:
        raise ValueError(
            f"RANK={rank} in the environment but the process group says {dist.get_rank()}"
        )
    return DistributedContext(rank=rank, world_size=dist.get_world_size(), device=device,
                              created_group=True)


def worker_init(_worker_id: int) -> None:
    """Start a ``DataLoader`` worker with one torch thread (no oversubscribed cores)."""
    torch.set_num_threads(1)


def advance(bar: Any, record: dict[str, float], done: int, total: int) -> None:
    """Show one more step with its values, drawing the final 100% line once.

    ``update()`` redraws when its interval has passed, and ``close()`` draws the last line
    again: the last step only moves the counter, so ``close()`` prints 100% once, with the
    last values.
    """
    bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k != "step"}, refresh=False)
    if done < total:
        bar.update(1)
    else:
        bar.n = done


class NoProgress:
    """A progress bar that shows nothing (other ranks, ``--no-progress``)."""

    n = 0

    def update(self, count: int = 1) -> None:
        """Ignore progress."""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Ignore values."""

    def close(self) -> None:
        """Nothing to close."""


def progress_bar(total: int, *, enabled: bool = True, description: str = "", unit: str = "it",
                 initial: int = 0, leave: bool = True) -> Any:
    """A tqdm bar on stderr, or :class:`NoProgress` when disabled or tqdm is missing."""
    if not enabled:
        return NoProgress()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return NoProgress()
    return tqdm(total=total, initial=initial, desc=description, unit=unit, file=sys.stderr,
                dynamic_ncols=True, leave=leave)


def _read_proc_stat() -> str:
    with open("/proc/stat", encoding="ascii") as handle:
        return handle.read()


def _busy_cores(seconds: float = 1.0, read_stat: Callable[[], str] = _read_proc_stat
                ) -> float | None:
    """How many cores other processes keep busy now (``/proc/stat`` over ``seconds``).

    ``cores * (1 - idle share)`` between two readings of the ``cpu`` line (idle + iowait
    jiffies over all jiffies); ``None`` where it cannot be read (not Linux) or no time passed.
    """
    def sample() -> tuple[int, int, int]:
        lines = read_stat().splitlines()
        values = [int(v) for v in lines[0].split()[1:9]]
        cpus = sum(1 for line in lines if line.startswith("cpu") and line[3].isdigit())
        return sum(values), values[3] + values[4], cpus  # all jiffies, idle + iowait

    try:
        total_0, idle_0, _ = sample()
        time.sleep(seconds)
        total_1, idle_1, cpus = sample()
    except (OSError, ValueError, IndexError):  # not Linux
        return None
    if total_1 <= total_0:
        return None
    return cpus * (1.0 - (idle_1 - idle_0) / (total_1 - total_0))


def cpu_threads(requested: int | None = None) -> tuple[int, str]:
    """How many threads torch should use on the CPU, and why.

    Torch starts one thread per core, and its threads wait for each other at every operation.
    When another process takes a core, the thread sharing it falls behind and the rest wait:
    on 2 cores the demo took 38 s alone with 2 threads, but 390 s with 2 threads and 78 s
    with 1 beside other busy processes, which can start at any time. So, unless a number is
    asked for, one core is left to the rest of the machine, and the cores busy right now
    (measured over one second; the 1-minute load average where that cannot be read) are
    left too: ``max(1, min(cores - 1, round(cores - busy)))``.

    Args:
        requested: A number of threads, or ``None`` to choose from the idle cores.

    Returns:
        ``(threads, reason)``, the reason for the terminal.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested, f"{requested} asked for, {cores} cores"
    busy, what = _busy_cores(), "busy now"
    if busy is None:
        try:
            busy, what = os.getloadavg()[0], "load average"
        except (AttributeError, OSError):  # neither: keep torch's choice
            return min(torch.get_num_threads(), cores), f"{cores} cores"
    threads = max(1, min(cores - 1, math.floor(cores - busy + 0.5)))
    return threads, f"{cores} cores, one left free, {busy:.1f} {what}; --threads to choose"
