"""Run ONE benchmark configuration in this (fresh) process and print one JSON line.

Called by ``benchmarks/bench.py``; run by hand for a single measurement, e.g.::

    PYTHONPATH=src python3 benchmarks/worker.py '{"impl": "ours", "mode": "train",
        "batch": 4, "size": 224, "style": false, "phase": "time", "repeats": 3}'

Phases:
    ``time``: one warm-up call (its time is ``warmup_s``: with ``"compile": true`` it holds
        ``torch.compile``'s compilation), then ``repeats`` timed calls
        (``loss(x, y).backward()`` in train mode, ``loss(x, y)`` under ``torch.no_grad()`` in
        metric mode); ``"dtype": "bf16"`` runs them under bf16 autocast.
    ``memory``: activation memory, the RSS high-water mark of the second call above the RSS
        right before it (``/proc/self/clear_refs`` <- ``5``, then ``VmHWM`` from
        ``/proc/self/status``; run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed tensors
        leave RSS at once), also the first call's above the RSS after construction (which
        includes what the module keeps, e.g. Winograd's filter cache, reported apart), or
        ``torch.cuda.max_memory_allocated`` on CUDA; then one call under
        ``torch.utils.flop_counter.FlopCounterMode`` to count the FLOPs executed.
    ``calibrate``: this machine's 3x3-convolution throughput (FLOP/s) on VGG-like layers.

Peers (lpips, piq, DISTS_pytorch) need torchvision and run under ``benchmarks/.venv``.
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

CONTENT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


# ------------------------------------------------------------------------------ measuring
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------ impls
def _ours(cfg: dict, **options) -> torch.nn.Module:
    """This project's PerceptualLoss with ``options`` (none: the defaults users get)."""
    from perceptual_loss import PerceptualLoss

    style = CONTENT_LAYERS if cfg["style"] else ()
    return PerceptualLoss("vgg16", layers=CONTENT_LAYERS, weights=None, style_layers=style,
                          **options)


def _ours_checkpointed(cfg: dict) -> torch.nn.Module:
    """Plain path with activation checkpointing per VGG block (benchmark-local variant)."""
    from torch.utils.checkpoint import checkpoint

    loss = _ours(cfg, memory="plain")
    fx = loss.extractor
    taps = fx._taps
    body = list(fx.body)

    def forward_preprocessed(x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        start = 0
        for end in sorted(taps):
            segment = torch.nn.Sequential(*body[start:end + 1])
            if torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(segment, x, use_reentrant=False)
            else:
                x = segment(x)
            feats[taps[end]] = x
            start = end + 1
        return feats

    def iter_features(x: torch.Tensor):  # noqa: ANN202
        yield from forward_preprocessed(x).items()

    fx.iter_features = iter_features  # type: ignore[method-assign]
    return loss


def _article(cfg: dict) -> Callable:
    from article import VGGPerceptualLoss

    module = VGGPerceptualLoss(resize=False)
    style = (0, 1, 2, 3) if cfg["style"] else ()

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.inner(x, y, feature_layers=(0, 1, 2, 3), style_layers=style)

    return Wrapped()


def _peer(cfg: dict) -> torch.nn.Module:
    import peers

    return peers.build(cfg["impl"], style=cfg["style"])


def build(cfg: dict) -> torch.nn.Module:
    impl = cfg["impl"]
    if impl == "article":
        return _article(cfg)
    if impl == "article-compile":
        return torch.compile(_article(cfg))
    if impl == "ours":
        return _ours(cfg, **cfg.get("options", {}))  # options: e.g. {"chunk_size": 2}
    if impl == "ours-plain":
        return _ours(cfg, memory="plain")
    if impl == "ours-cl":
        return _ours(cfg, channels_last=True)
    if impl == "ours-nchw":
        return _ours(cfg, channels_last=False, chunk_size=None)
    if impl == "ours-tiles256":
        return _ours(cfg, tile_size=256)
    if impl == "ours-bits":
        from perceptual_loss._lean import build_plan

        loss = _ours(cfg)
        fx = loss.extractor
        trunk = list(fx.body)
        fx._segments = [(start, build_plan(trunk[start:start + keep[-1] + 1], keep, bits=True),
                         keep) for start, _, keep in fx._segments]
        return loss
    if impl == "ours-ckpt":
        return _ours_checkpointed(cfg)
    if impl == "ours-compile":
        return torch.compile(_ours(cfg))
    if impl == "ours-nocheck":
        return _ours(cfg, check_values=False)
    if impl == "ours-chunk1":
        return _ours(cfg, chunk_size=1)
    if impl == "ours-chunk1-cl":
        return _ours(cfg, chunk_size=1, channels_last=True)
    if impl == "ours-lpips":
        from perceptual_loss.metrics.lpips import LPIPS

        return LPIPS(net="vgg", weights=None)
    if impl == "ours-lpips-nchw":
        from perceptual_loss.metrics.lpips import LPIPS

        metric = LPIPS(net="vgg", weights=None)
        metric.extractor.channels_last = False  # the extractor option, set after construction
        return metric
    if impl == "ours-dists":
        from perceptual_loss import DISTS

        return DISTS(weights=None, short_side=None)  # full resolution, as DISTS_pytorch
    return _peer(cfg)


# ------------------------------------------------------------------------------ phases
def calibrate(device: torch.device, repeats: int = 5) -> dict:
    """Best FLOP/s of a 3x3 convolution forward over VGG16-like layers, NCHW and NHWC."""
    shapes = [(4, 64, 64, 224), (4, 128, 128, 112), (4, 256, 256, 56), (4, 512, 512, 28)]
    out: dict[str, float] = {}
    for layout in ("nchw", "channels_last"):
        flops = seconds = 0.0
        for n, cin, cout, hw in shapes:
            x = torch.randn(n, cin, hw, hw, device=device)
            w = torch.randn(cout, cin, 3, 3, device=device) * 0.01
            if layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
                w = w.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                torch.nn.functional.conv2d(x, w, padding=1)
                _sync(device)
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    torch.nn.functional.conv2d(x, w, padding=1)
                    _sync(device)
                    best = min(best, time.perf_counter() - t0)
            flops += 2.0 * n * cout * hw * hw * cin * 9
            seconds += best
        out[layout] = flops / seconds
    return {"conv3x3_flops_per_s": out, "best": max(out.values())}


def run(cfg: dict) -> dict:
    torch.manual_seed(0)
    device = torch.device(cfg.get("device", "cpu"))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    if cfg["phase"] == "calibrate":
        return calibrate(device)
    amp = cfg.get("dtype", "fp32") == "bf16"
    loss_fn = build(cfg).to(device)
    if cfg.get("compile"):
        loss_fn = torch.compile(loss_fn)  # compiled in the warm-up call, timed apart
    n, size = cfg["batch"], cfg["size"]
    g = torch.Generator().manual_seed(0)
    target = torch.rand(n, 3, size, size, generator=g).to(device)
    prediction = torch.rand(n, 3, size, size, generator=g).to(device)
    train = cfg["mode"] == "train"

    def step() -> None:
        x = prediction.detach().requires_grad_(train)
        with torch.set_grad_enabled(train), torch.autocast(device.type, torch.bfloat16,
                                                           enabled=amp):
            value = loss_fn(x, target)
        if train:
            value.backward()
        _sync(device)

    result: dict = {"cfg": cfg}
    if cfg["phase"] == "memory":
        # Peak of the first call above the level right after construction; bench.py starts
        # this process with glibc serving blocks of 64 KiB or more with mmap and returning
        # freed memory at once, so that RSS follows the live tensors. Then FLOPs of one call.
        gc.collect()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step()
            result["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
        else:
            # The first call also builds what lives on with the module (Winograd's filter
            # cache, allocator pools); the activation memory is the peak of the next call
            # above the level before it.
            base_kib = _status_kib("VmRSS")
            _reset_hwm()
            step()
            result["first_call_bytes"] = (_status_kib("VmHWM") - base_kib) * 1024
            gc.collect()
            base_kib = _status_kib("VmRSS")
            _reset_hwm()
            step()
            result["peak_bytes"] = (_status_kib("VmHWM") - base_kib) * 1024
            from perceptual_loss import _winograd

            result["winograd_cache_bytes"] = _winograd.cached_bytes()
        counter = FlopCounterMode(display=False)
        with counter:
            step()
        result["flops"] = counter.get_total_flops()
        return result
    t0 = time.perf_counter()
    step()  # warm-up (allocator, oneDNN/cuDNN primitives, layout of the weights, compilation)
    result["warmup_s"] = time.perf_counter() - t0
    times = []
    for _ in range(int(cfg.get("repeats", 3))):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    result["times"] = times
    result["median_s"] = statistics.median(times)
    if cfg["phase"] == "both" and device.type == "cuda":
        # One process for both on CUDA: the allocator's own peak of a steady-state call.
        gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        result["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
    return result


def main() -> None:
    cfg = json.loads(sys.argv[1])
    print("RESULT " + json.dumps(run(cfg)), flush=True)


if __name__ == "__main__":
    main()
