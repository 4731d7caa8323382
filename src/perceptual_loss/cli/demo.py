"""``perceptual demo``: MSE versus the perceptual loss on real pictures, in a few minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from perceptual_loss.cli.errors import PerceptualCommand
from perceptual_loss.cli.options import backbone_option, device_option, weights_option

__all__ = ["demo"]


@click.command(cls=PerceptualCommand)
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False),
              default=Path("demo-output"), show_default=True,
              help="Folder for the pictures and report.md.")
@click.option("--quick", is_flag=True,
              help="Tiny sizes and 3 training steps: checks that everything runs (seconds); "
              "the numbers mean nothing.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training steps of each of the two denoisers.")
@click.option("--size", type=click.IntRange(min=16), default=192, show_default=True,
              help="Side of the crops compared in part 1.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show progress bars.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch. Default: all cores but one, fewer when other "
              "processes keep cores busy (torch threads beside busy cores are much slower).")
@weights_option
@backbone_option
@device_option
def demo(out: Path, quick: bool, steps: int, size: int, progress: bool, threads: int | None,
         weights: Any, backbone: str, device: Any) -> None:
    """Show on real pictures what the perceptual loss changes, then train with it.

    1. A 1-2 pixel shift, blur and noise on scikit-image's sample pictures, scored by MSE
    and by the perceptual loss (a table and shift_vs_blur.png).
    2. A small U-Net denoiser trained twice, MSE only and MSE + perceptual, compared on a
    held-out picture (denoise_comparison.png and the numbers).

    Everything goes to --out/report.md. Uses ImageNet VGG weights when they can be found
    or downloaded; otherwise it says so loudly and runs on random weights.
    """
    from perceptual_loss.apps.demo import DemoConfig, run_demo

    def warn(text: str) -> None:
        click.secho(text, fg="red", bold=True, err=True)

    run_demo(
        DemoConfig(out_dir=out, quick=quick, steps=steps, size=size, weights=weights,
                   backbone=backbone, device=device, progress=progress, threads=threads),
        echo=click.echo, warn=warn,
    )
