"""Winograd F(4x4, 3x3) against oneDNN's direct kernels on VGG16's 3x3 layers, one sample.

For each layer shape of VGG16 up to ``relu4_3`` at a 224x224 input: the median time of the
forward convolution and of the input gradient, direct (``F.conv2d`` and
``convolution_backward`` in channels-last, what the lean trunk calls) and by Winograd
(``perceptual_loss._winograd``), and each result's error against a float64 convolution
relative to its norm. Writes ``benchmarks/RESULTS-winograd.md``.

    .venv/bin/python benchmarks/winograd_layers.py
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from perceptual_loss import _winograd  # noqa: E402

#: (name, input channels, output channels, map side at a 224x224 input)
LAYERS = [
    ("conv1_2", 64, 64, 224), ("conv2_1", 64, 128, 112), ("conv2_2", 128, 128, 112),
    ("conv3_1", 128, 256, 56), ("conv3_2", 256, 256, 56), ("conv4_1", 256, 512, 28),
    ("conv4_2", 512, 512, 28),
]


def _median_ms(fn: Callable[[], object], repeats: int = 9) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double() - reference).norm() / reference.norm())


def measure(name: str, channels: int, out_channels: int, side: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(1, channels, side, side, generator=g))
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(out_channels, channels, 3, 3, generator=g) / (9 * channels) ** 0.5
    bias = torch.randn(out_channels, generator=g)
    grad = torch.randn(1, out_channels, side, side, generator=g)
    grad = grad.contiguous(memory_format=torch.channels_last)
    geometry = ([1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, False, False])

    def direct_backward() -> torch.Tensor:
        return torch.ops.aten.convolution_backward(grad, x, weight, None, *geometry)[0]

    reference = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    grad_reference = torch.ops.aten.convolution_backward(
        grad.double(), x.double(), weight.double(), None, *geometry)[0]
    return {
        "layer": name, "shape": f"{channels}->{out_channels} @{side}x{side}",
        "usable": _winograd.usable(x, weight, (1, 1), (1, 1), (1, 1), 1),
        "direct_ms": _median_ms(lambda: F.conv2d(x, weight, bias, padding=1)),
        "winograd_ms": _median_ms(lambda: _winograd.conv3x3(x, weight, bias)),
        "direct_grad_ms": _median_ms(direct_backward),
        "winograd_grad_ms": _median_ms(lambda: _winograd.conv3x3_input_grad(grad, weight)),
        "direct_error": _error(F.conv2d(x, weight, bias, padding=1), reference),
        "winograd_error": _error(_winograd.conv3x3(x, weight, bias), reference),
        "direct_grad_error": _error(direct_backward(), grad_reference),
        "winograd_grad_error": _error(_winograd.conv3x3_input_grad(grad, weight),
                                      grad_reference),
    }


def render(rows: list[dict]) -> str:
    lines = [
        "# Winograd F(4x4, 3x3) against oneDNN, VGG16's 3x3 layers",
        "",
        f"Run {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} with "
        f"`benchmarks/winograd_layers.py` (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads): one sample at a 224x224 input, channels-last, "
        "float32; median of 9 calls. Error: distance to a float64 convolution over its norm. "
        "The default uses Winograd only on the layers marked yes.",
        "",
        "| layer | shape | default | forward direct / Winograd | ratio | input gradient "
        "direct / Winograd | ratio | error direct / Winograd (forward; gradient) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['shape']} | {'yes' if r['usable'] else 'no'} "
            f"| {r['direct_ms']:.1f} / {r['winograd_ms']:.1f} ms "
            f"| {r['winograd_ms'] / r['direct_ms']:.2f}x "
            f"| {r['direct_grad_ms']:.1f} / {r['winograd_grad_ms']:.1f} ms "
            f"| {r['winograd_grad_ms'] / r['direct_grad_ms']:.2f}x "
            f"| {r['direct_error']:.1e} / {r['winograd_error']:.1e}; "
            f"{r['direct_grad_error']:.1e} / {r['winograd_grad_error']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    rows = []
    for layer in LAYERS:
        rows.append(measure(*layer))
        print(rows[-1], flush=True)
    out = HERE / "RESULTS-winograd.md"
    out.write_text(render(rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
