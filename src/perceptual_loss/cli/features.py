"""``perceptual features IMAGE``: feature maps of chosen layers as picture grids (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from perceptual_loss.cli.errors import PerceptualCommand
from perceptual_loss.cli.options import (
    backbone_option,
    device_option,
    layers_option,
    weights_option,
)

if TYPE_CHECKING:
    import torch

__all__ = ["features"]


@click.command(cls=PerceptualCommand)
@click.argument("image_path", metavar="IMAGE",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@backbone_option
@layers_option(
    help_text="Comma-separated layers to show, shallow to deep (Keras names work too). "
    "Default: the last layer of each block (vgg16: relu1_2,relu2_2,relu3_3,relu4_3,relu5_3).",
)
@weights_option
@device_option
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Output folder. Default: features_<image name>.")
@click.option("--channels", "max_channels", type=click.IntRange(min=1), default=64,
              show_default=True, help="Channels per layer grid.")
@click.option("--overview-channels", type=click.IntRange(min=1), default=8, show_default=True,
              help="Channels per layer in overview.png.")
@click.option("--order", type=click.Choice(["activation", "index"]), default="activation",
              show_default=True,
              help="Which channels: the most active for this image, or the first ones.")
@click.option("--max-size", type=click.IntRange(min=16), default=512, show_default=True,
              help="Shrink the image so its longer side is at most this (keeps it fast).")
@click.option("--cell-size", type=click.IntRange(min=8), default=96, show_default=True,
              help="Size of each channel tile in the grids, in pixels.")
@click.option("--colormap", default="gray", show_default=True,
              help="gray, or a matplotlib colour map such as viridis or magma.")
@click.option("--gray", is_flag=True, help="Read the image as grayscale (CT/MRI slices).")
def features(
    image_path: Path,
    backbone: str,
    layers: tuple[str, ...] | None,
    weights: str | Path | None,
    device: torch.device,
    out_dir: Path | None,
    max_channels: int,
    overview_channels: int,
    order: str,
    max_size: int,
    cell_size: int,
    colormap: str,
    gray: bool,
) -> None:
    """Save what each chosen layer of the backbone sees in IMAGE.

    Writes <layer>.png (a grid of that layer's most active channels, each scaled to its own
    range) and overview.png (the image, then a row of channels per layer, all at one size):
    shallow layers keep edges and texture, deep layers keep coarse shapes.

    \b
    Examples:
      perceptual features photo.jpg
      perceptual features ct.png --gray --layers relu1_2,relu3_3 --colormap magma -o ct_maps
    """  # noqa: D301 (\b must stay click's no-rewrap mark)
    from perceptual_loss.apps.features import (
        RANDOM_WEIGHTS_NOTE,
        check_colormap,
        extract_feature_maps,
        fit_image,
        save_feature_figures,
    )
    from perceptual_loss.apps.images.io import load_image, warnings_as_lines
    from perceptual_loss.recipe import block_ends

    check_colormap(colormap)
    if weights is None:
        click.echo(
            "Warning: --weights random: an untrained network's feature maps show no learned "
            "texture or shape.",
            err=True,
        )
    with warnings_as_lines(lambda text: click.echo(text, err=True)):
        image = fit_image(load_image(image_path, mode="gray" if gray else "auto"), max_size)
    maps = extract_feature_maps(
        image,
        backbone=backbone,
        layers=layers or block_ends(backbone),
        weights=weights,
        device=device,
    )
    target = out_dir if out_dir is not None else Path(f"features_{image_path.stem}")
    written = save_feature_figures(
        image,
        maps,
        target,
        max_channels=max_channels,
        overview_channels=overview_channels,
        order=order,  # type: ignore[arg-type]
        cell_size=cell_size,
        colormap=colormap,
        note=RANDOM_WEIGHTS_NOTE if weights is None else None,
    )
    for layer, feature_map in maps.items():
        channels, height, width = feature_map.shape
        click.echo(f"{layer:>10}  {channels:4d} x {height:4d} x {width:4d}")
    click.echo(f"wrote {len(written)} files to {target}/ (overview: {written[-1]})")
