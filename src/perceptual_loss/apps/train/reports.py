"""What a training run leaves to look at: sample grids, the loss curve, the held-out report."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss.apps.images.grids import save_grid
from perceptual_loss.apps.images.io import save_image
from perceptual_loss.apps.images.quality import psnr, ssim

__all__ = [
    "COLUMNS",
    "RESTORATION_LEGEND",
    "Evaluator",
    "display_size",
    "evaluate_restoration",
    "final_evaluation",
    "format_number",
    "plot_loss_curve",
    "predict",
    "write_report",
    "write_samples",
]

Evaluator = Callable[[nn.Module, Sequence[tuple[torch.Tensor, torch.Tensor]], torch.device],
                     list[dict[str, float]]]


def display_size(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bring a low-resolution input (SR) to the target's size for side-by-side display.

    Bicubic, as the ``*_input`` scores of the report use, so the picture shows what those
    numbers measure (not blocky nearest-neighbour pixels).
    """
    if image.shape[-2:] == like.shape[-2:]:
        return image
    return F.interpolate(image.unsqueeze(0), size=like.shape[-2:], mode="bicubic",
                         align_corners=False).clamp(0, 1).squeeze(0)


@torch.no_grad()
def predict(model: nn.Module, image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The model's output ``(C, H, W)`` on the CPU for one ``(C, h, w)`` input, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return model(image.unsqueeze(0).to(device)).squeeze(0).float().cpu()
    finally:
        model.train(was_training)


#: Column labels of the sample and held-out grids: what goes in, what comes out, the reference.
COLUMNS: tuple[str, str, str] = ("input", "output", "target")


def third_column(target: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
    """The grid's last column: the target, or a fixed ``reference`` (a style picture) resized."""
    if reference is None:
        return target
    return F.interpolate(reference.unsqueeze(0), size=target.shape[-2:], mode="bicubic",
                         align_corners=False).clamp(0, 1).squeeze(0)


def write_samples(
    model: nn.Module,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    path: Path,
    device: torch.device,
    columns: Sequence[str] = COLUMNS,
    reference: torch.Tensor | None = None,
) -> None:
    """Save a grid input / output / target (or ``reference``), one row per pair, to ``path``."""
    rows = []
    for degraded, target in pairs:
        output = predict(model, degraded, device)
        rows.append([display_size(degraded, target), output, third_column(target, reference)])
    save_grid(rows, path, labels=list(columns))


def plot_loss_curve(history: Sequence[dict[str, float]], path: Path, title: str) -> None:
    """Plot every recorded term against the step to a PNG (log scale when all positive).

    Args:
        history: One dict per step with a ``"step"`` key and one key per term.
        path: Output PNG.
        title: Title of the plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [entry["step"] for entry in history]
    keys = [key for key in history[-1] if key != "step"]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        for key in keys:
            values = [entry.get(key, float("nan")) for entry in history]
            axis.plot(steps, values, label=key, linewidth=2.0 if key == "loss" else 1.0)
        positive = all(
            entry.get(key, 1.0) > 0 for entry in history for key in keys
        )
        if positive:
            axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("weighted loss")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)


def format_number(value: float) -> str:
    """Four significant digits, ``n/a`` for a missing or NaN value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def write_report(
    out_dir: Path,
    title: str,
    summary: dict[str, Any],
    metrics: dict[str, Any],
    notes: Sequence[str],
) -> None:
    """Write ``report.json`` and ``report.md`` (notes, run summary, held-out table, pictures)."""
    (out_dir / "report.json").write_text(
        json.dumps({"summary": summary, "metrics": metrics}, indent=2, default=str) + "\n"
    )
    lines = [f"# {title}", ""]
    lines += [f"> {' '.join(str(note).split())}" for note in notes]
    if notes:
        lines.append("")
    lines += ["## Run", ""]
    lines += [f"- **{key}**: {value}" for key, value in summary.items()]
    lines += ["", "## Held-out images", ""]
    images = metrics.get("images", [])
    if images:
        columns = [key for key in images[0] if key != "image"]
        lines.append("| image | " + " | ".join(columns) + " |")
        lines.append("| --- |" + " --- |" * len(columns))
        for row in images:
            cells = " | ".join(format_number(row[key]) for key in columns)
            lines.append(f"| {row['image']} | {cells} |")
        mean = metrics.get("mean", {})
        cells = " | ".join(format_number(mean.get(key)) for key in columns)
        lines.append(f"| **mean** | {cells} |")
        lines += ["", metrics.get("legend", ""), ""]
    else:
        lines += ["No held-out images.", ""]
    lines += [
        "![loss curve](loss_curve.png)",
        "",
        "![held-out: input / output / target](eval/grid.png)",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))


def evaluate_restoration(
    distance: nn.Module | None,
) -> Evaluator:
    """Make the evaluator of denoising/SR runs: PSNR, SSIM and perceptual distance.

    Each held-out image is scored twice: the network's output and the degraded input
    (brought to the target size with bicubic interpolation for SR), so the report shows
    what training gained.

    Args:
        distance: A module ``distance(prediction, target) -> scalar`` (a
            :class:`PerceptualLoss`); ``None`` skips the perceptual column.

    Returns:
        ``evaluate(model, pairs, device) -> list of per-image dicts``.
    """

    @torch.no_grad()
    def evaluate(
        model: nn.Module,
        pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
    ) -> list[dict[str, float]]:
        rows = []
        for degraded, target in pairs:
            output = predict(model, degraded, device).unsqueeze(0)
            reference = target.unsqueeze(0)
            baseline = degraded.unsqueeze(0)
            if baseline.shape[-2:] != reference.shape[-2:]:
                baseline = F.interpolate(
                    baseline, size=reference.shape[-2:], mode="bicubic", align_corners=False
                ).clamp(0, 1)
            row: dict[str, float] = {}
            for label, image in (("input", baseline), ("output", output)):
                row[f"psnr_{label}"] = float(psnr(image, reference)[0])
                try:
                    row[f"ssim_{label}"] = float(ssim(image, reference)[0])
                except ValueError:
                    row[f"ssim_{label}"] = float("nan")
                if distance is not None:
                    value = distance(image.to(device), reference.to(device))
                    row[f"perceptual_{label}"] = float(value)
            rows.append(row)
        return rows

    return evaluate


RESTORATION_LEGEND = (
    "`*_input`: the degraded input (bicubic-upscaled for SR) against the clean target; "
    "`*_output`: the network's output. PSNR in dB (higher is better), SSIM in [0, 1] "
    "(higher is better), perceptual = L1 feature distance of the loss network on "
    "relu1_2, relu2_2, relu3_3, relu4_3 (last ReLU of blocks 1-4 on VGG-11/13; lower is "
    "better)."
)


def final_evaluation(
    model: nn.Module,
    eval_pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    eval_names: Sequence[str] | None,
    evaluate: Evaluator | None,
    device: torch.device,
    out_dir: Path,
    legend: str,
    columns: Sequence[str] = COLUMNS,
    reference: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Score the held-out pairs, save their pictures and grid; return the report's metrics."""
    if not eval_pairs:
        return {"images": [], "mean": {}, "legend": legend}
    names = list(eval_names or [f"image_{i}" for i in range(len(eval_pairs))])
    evaluate = evaluate or evaluate_restoration(None)
    rows = evaluate(model, eval_pairs, device)
    eval_dir = out_dir / "eval"
    grid_rows = []
    for name, (degraded, target) in zip(names, eval_pairs, strict=True):
        output = predict(model, degraded, device)
        stem = Path(name).stem
        save_image(degraded, eval_dir / f"{stem}_input.png", clamp=True)
        save_image(output, eval_dir / f"{stem}_output.png", clamp=True)
        save_image(target, eval_dir / f"{stem}_target.png", clamp=True)
        grid_rows.append([display_size(degraded, target), output,
                          third_column(target, reference)])
    save_grid(grid_rows, eval_dir / "grid.png", labels=list(columns),
              row_labels=[Path(name).stem for name in names])
    images = [{"image": name, **row} for name, row in zip(names, rows, strict=True)]
    keys = [key for key in rows[0]] if rows else []
    mean = {
        key: float(sum(row[key] for row in rows) / len(rows)) for key in keys
    }
    return {"images": images, "mean": mean, "legend": legend}
