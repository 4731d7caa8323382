"""Speed and memory of the perceptual losses for CT volumes: 2.5D VGG16, 2.5D RadImageNet,
true 3D MedicalNet, on one small CT volume built from the slices in shared/data/medical.

Each loss is measured in a fresh process (random weights: speed and memory do not depend on
the values): the peak RSS of its first forward+backward call above the RSS right after it was
built (glibc returns freed blocks at once, so RSS follows the live tensors), then the wall time
of ``--repeats`` more forward+backward calls. ``--rounds`` processes per loss, interleaved with
the other losses, give the fastest and the median call over all of them: on a shared machine
the fastest is the steadier figure.

    python benchmarks/medical.py                 # prints a markdown table
    python benchmarks/medical.py --depth 16 --size 96 --repeats 5

The volume: the two CT slices (``ct_small_128.png`` and ``ct_head_512.png`` resized to the
same size, HU = value - 1024) blended linearly along depth into ``depth`` slices, windowed
(soft tissue, level 40 HU, width 400 HU) to [0, 1]; the prediction is the same volume with
Gaussian noise of 30 HU added before windowing. Shape ``(1, 1, depth, size, size)``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "medical"

CONFIGS: dict[str, str] = {
    "vgg16-2.5d": "2.5D VGG16 relu1_2..relu4_3 (VolumePerceptualLoss)",
    "radimagenet-2.5d": "2.5D RadImageNet ResNet50 (VolumePerceptualLoss)",
    "medicalnet10-3d": "3D MedicalNet ResNet10",
    "medicalnet50-3d": "3D MedicalNet ResNet50",
}


def load_volume(depth: int, size: int, data: Path = DATA) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prediction, target)``, each ``(1, 1, depth, size, size)`` in [0, 1]."""
    from PIL import Image

    from perceptual_loss.volumes import window_ct

    slices = []
    for name in ("ct_small_128.png", "ct_head_512.png"):
        with Image.open(data / name) as image:
            pixels = np.array(image, dtype=np.float32)
        hu = torch.from_numpy(pixels - 1024.0)[None, None]
        slices.append(torch.nn.functional.interpolate(hu, size=(size, size), mode="area")[0, 0])
    weight = torch.linspace(0, 1, depth).view(depth, 1, 1)
    hu_volume = ((1 - weight) * slices[0] + weight * slices[1])[None, None]
    gen = torch.Generator().manual_seed(0)
    noisy = hu_volume + 30.0 * torch.randn(hu_volume.shape, generator=gen)
    return window_ct(noisy, "soft_tissue"), window_ct(hu_volume, "soft_tissue")


def build(name: str, slice_ratio: float) -> torch.nn.Module:
    from perceptual_loss import PerceptualLoss
    from perceptual_loss.medical import MedicalPerceptualLoss
    from perceptual_loss.volumes import VolumePerceptualLoss

    torch.manual_seed(0)
    if name == "vgg16-2.5d":
        loss_2d = PerceptualLoss("vgg16", weights=None, reduction="none")
        return VolumePerceptualLoss(loss_2d, slice_ratio=slice_ratio, seed=0)
    if name == "radimagenet-2.5d":
        loss_2d = MedicalPerceptualLoss("radimagenet_resnet50", weights=None, reduction="none")
        return VolumePerceptualLoss(loss_2d, slice_ratio=slice_ratio, seed=0)
    if name == "medicalnet10-3d":
        return MedicalPerceptualLoss("medicalnet_resnet10", weights=None)
    if name == "medicalnet50-3d":
        return MedicalPerceptualLoss("medicalnet_resnet50", weights=None)
    raise ValueError(f"unknown configuration {name!r}; choose one of {', '.join(CONFIGS)}")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(name: str, depth: int, size: int, slice_ratio: float, repeats: int, data: Path
           ) -> dict:
    prediction, target = load_volume(depth, size, data)
    loss_fn = build(name, slice_ratio)
    params = sum(p.numel() for p in loss_fn.parameters())

    def step() -> float:
        x = prediction.detach().requires_grad_()
        value = loss_fn(x, target)
        value.backward()
        return float(value)

    gc.collect()
    base_kib = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
    step()
    peak_kib = _status_kib("VmHWM") - base_kib
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"name": name, "params": params, "peak_mib": peak_kib / 1024,
            "base_mib": base_kib / 1024, "median_s": statistics.median(times), "times": times}


def _planes(args: argparse.Namespace) -> int:
    """Planes the 2.5D losses score per volume (each axis: ceil(ratio * slices))."""
    sides = (args.depth, args.size, args.size)
    return sum(max(1, math.ceil(args.slice_ratio * n - 1e-9)) for n in sides)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slice-ratio", type=float, default=0.25,
                        help="fraction of each axis' slices the 2.5D losses score")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=3,
                        help="processes per loss, interleaved with the other losses")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the CT PNGs")
    parser.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.depth, args.size, args.slice_ratio, args.repeats,
                        args.data)
        print("RESULT " + json.dumps(result), flush=True)
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    runs: dict[str, list[dict]] = {name: [] for name in args.only}
    for round_index in range(args.rounds):
        for name in args.only:
            command = [sys.executable, __file__, "--worker", name, "--depth", str(args.depth),
                       "--size", str(args.size), "--slice-ratio", str(args.slice_ratio),
                       "--repeats", str(args.repeats), "--data", str(args.data)]
            output = subprocess.run(command, env=env, capture_output=True, text=True,
                                    check=True)
            line = next(x for x in output.stdout.splitlines() if x.startswith("RESULT "))
            runs[name].append(json.loads(line[len("RESULT "):]))
            print(f"round {round_index + 1}: measured {name}", file=sys.stderr, flush=True)
    shape = f"1x1x{args.depth}x{args.size}x{args.size}"
    print(f"Measured {datetime.date.today().isoformat()} on {_cpu_model()} "
          f"({os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads), fp32, volume {shape}, 2.5D slice_ratio "
          f"{args.slice_ratio} ({_planes(args)} planes per volume); {args.rounds} processes per "
          f"loss, interleaved, each timing {args.repeats} calls after a first one.\n")
    print("| loss | parameters | forward+backward, fastest (s) | median (s) | "
          "peak RSS of the call (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, results in runs.items():
        times = [t for result in results for t in result["times"]]
        peak = max(result["peak_mib"] for result in results)
        print(f"| {CONFIGS[name]} | {results[0]['params'] / 1e6:.1f} M | {min(times):.2f} | "
              f"{statistics.median(times):.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
