"""``perceptual train {denoise,sr,style}``, ``perceptual stylize``, ``perceptual style-optimize``.

Thin wrappers: options are parsed here, the work is done by :mod:`perceptual_loss.apps`.
Every training command writes into ``--out``: ``checkpoint.pt`` (``--resume`` continues
it), ``samples/step_*.png``, ``loss_curve.png``, ``eval/`` pictures and ``report.md`` /
``report.json``. Start the same command with ``torchrun --nproc_per_node N -m
perceptual_loss train ...`` to train data-parallel on N processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from perceptual_loss.cli.errors import PerceptualCommand, PerceptualGroup, fail
from perceptual_loss.cli.options import (
    backbone_option,
    device_option,
    parse_name_list,
    weights_option,
)

__all__ = ["style_optimize", "stylize", "train"]


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _echo(text: str) -> None:
    """Print on rank 0: warnings on stderr, everything else on stdout."""
    if _is_main_process():
        click.echo(text, err=text.startswith("Warning:"))


def _warn_random_weights(weights: Any) -> list[str]:
    """Say loudly (stderr) that the backbone is untrained; return the report note."""
    if weights is not None:
        return []
    note = (
        "Warning: the loss network has random weights (--weights random): perceptual and "
        "style terms compare features of an untrained VGG, which is fine for testing the "
        "pipeline but does not give the perceptual quality of ImageNet features."
    )
    if _is_main_process():
        click.secho(note, fg="yellow", bold=True, err=True)
    return [note]


def _common_training_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every ``train`` subcommand shares."""
    options = [
        click.option("--data", "data", type=click.Path(path_type=Path), default=None,
                     help="Folder of training images. Default: scikit-image's bundled sample "
                     "pictures (astronaut, coffee, chelsea, ...), no download needed."),
        click.option("--val-data", type=click.Path(path_type=Path), default=None,
                     help="Folder of held-out images for the final report. Default: the last "
                     "--holdout images of --data (in name order)."),
        click.option("--holdout", type=click.IntRange(min=0), default=1, show_default=True,
                     help="Images of --data kept out of training for the report."),
        click.option("--out", "out", type=click.Path(path_type=Path), required=True,
                     help="Output folder: checkpoint, samples, loss curve, report."),
        click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True,
                     help="Total optimisation steps (a resumed run continues up to this)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Crops per step (per process under torchrun)."),
        click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True),
                     default=1e-3, show_default=True, help="Adam learning rate."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the initialisation, the crops and the noise."),
        click.option("--sample-every", type=click.IntRange(min=0), default=100,
                     show_default=True,
                     help="Write an input/output/target grid every N steps (0: at the end)."),
        click.option("--checkpoint-every", type=click.IntRange(min=0), default=100,
                     show_default=True, help="Save the checkpoint every N steps (0: at the end)."),
        click.option("--resume", is_flag=True,
                     help="Continue from the checkpoint in --out (step, model, optimiser)."),
        click.option("--overwrite", is_flag=True,
                     help="Start afresh even if --out already holds a checkpoint."),
        click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
                     help="DataLoader worker processes."),
        click.option("--progress/--no-progress", default=True, show_default=True,
                     help="Show the progress bar."),
        weights_option,
        backbone_option,
        device_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _style_terms(spec: str, command: str) -> dict[str, float]:
    """The loss mix of a style command: only perceptual, style and tv terms."""
    from perceptual_loss.apps.train.loss_mix import parse_loss_spec

    terms = parse_loss_spec(spec)
    extra = sorted(set(terms) - {"perceptual", "style", "tv"})
    if extra:
        raise click.BadParameter(
            f"{command} uses the terms perceptual, style and tv; remove {', '.join(extra)}",
            param_hint="--loss",
        )
    return terms


def _network_options(crop: tuple[int, int, str], width: tuple[int, str],
                     blocks: tuple[int, str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--crop-size``, ``--width`` and ``--blocks`` with a task's defaults and help."""
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option("--blocks", type=click.IntRange(min=0), default=blocks[0],
                            show_default=True, help=blocks[1])(func)
        func = click.option("--width", type=click.IntRange(min=1), default=width[0],
                            show_default=True, help=width[1])(func)
        return click.option("--crop-size", type=click.IntRange(min=crop[0]), default=crop[1],
                            show_default=True, help=crop[2])(func)

    return decorate


def _train_config(**kwargs: Any) -> Any:
    from perceptual_loss.apps.train.loop import TrainConfig

    return TrainConfig(
        out_dir=kwargs["out"], steps=kwargs["steps"], batch_size=kwargs["batch_size"],
        learning_rate=kwargs["learning_rate"], seed=kwargs["seed"],
        sample_every=kwargs["sample_every"], checkpoint_every=kwargs["checkpoint_every"],
        resume=kwargs["resume"], overwrite=kwargs["overwrite"],
        num_workers=kwargs["workers"], progress=kwargs["progress"],
    )


def _load_images(
    data: Path | None,
    val_data: Path | None,
    holdout: int,
    mode: str,
    window: tuple[float, float] | None = None,
) -> tuple[list, list, list[str], dict[str, Any]]:
    """Training images, held-out images and their names, and what to record about them."""
    from perceptual_loss.apps.images.slices import load_slices
    from perceptual_loss.apps.train.data import (
        SAMPLE_IMAGES_GRAY,
        SAMPLE_IMAGES_RGB,
        load_folder,
        load_sample_images,
        split_holdout,
    )

    info: dict[str, Any] = {"mode": mode}
    if mode == "medical":
        from perceptual_loss.apps.images.io import list_images

        if data is None:
            raise ValueError(
                "--mode medical needs --data, a folder of grayscale (16-bit PNG) CT/MRI slices"
            )
        for folder in (data, val_data):
            if folder is not None and not folder.is_dir():
                raise ValueError(f"image folder {str(folder)!r} does not exist")
        paths = list_images(data)
        val_paths = list_images(val_data) if val_data is not None else []
        if not paths:
            raise ValueError(f"no images in {str(data)!r}")
        images, window = load_slices(list(paths) + list(val_paths), window)
        info["window (stored values)"] = window
        names = [Path(p).name for p in paths]
        train_part, val_part = images[: len(paths)], images[len(paths):]
        if val_data is not None:
            return train_part, val_part, [Path(p).name for p in val_paths], info
        train, held, held_names = split_holdout(train_part, names, holdout)
        return train, held, held_names, info
    if data is None:
        names = list(SAMPLE_IMAGES_RGB if mode == "rgb" else SAMPLE_IMAGES_GRAY)
        images = load_sample_images(names, mode=mode)
        info["data"] = "scikit-image samples"
    else:
        images, names = load_folder(data, mode=mode)
        info["data"] = str(data)
    if val_data is not None:
        val_images, val_names = load_folder(val_data, mode=mode)
        return images, val_images, val_names, info
    train, held, held_names = split_holdout(images, names, holdout)
    return train, held, held_names, info


def _loss_config(loss: str, layers: str | None, style_layers: str | None, backbone: str,
                 weights: Any) -> Any:
    from perceptual_loss.apps.train.loss_mix import LossConfig, parse_loss_spec

    return LossConfig(
        terms=parse_loss_spec(loss),
        layers=parse_name_list(layers) or None,
        style_layers=parse_name_list(style_layers) or None,
        backbone=backbone,
        weights=weights,
    )


_LOSS_HELP = (
    "Loss mix 'term=weight,...' with terms mse, l1, perceptual, style, ssim, tv; e.g. "
    "'mse=1' (pixel only), 'perceptual=1' (perceptual only) or 'mse=1,perceptual=0.1'."
)
_LAYERS_HELP = "Layers of the perceptual term, e.g. relu1_2,relu2_2,relu3_3 (default: library's)."
_STYLE_LAYERS_HELP = "Layers of the style term (default relu1_2,relu2_2,relu3_3,relu4_3)."


@click.group(cls=PerceptualGroup)
def train() -> None:
    """Train a network with the perceptual loss: denoise, sr (super-resolution) or style.

    Outputs go to --out: checkpoint.pt (continue with --resume), samples/ grids,
    loss_curve.png, eval/ pictures and report.md/report.json with PSNR, SSIM and the
    perceptual distance on held-out images. For data-parallel training start the same
    command with `torchrun --nproc_per_node N -m perceptual_loss train ...`
    (gloo on CPU, NCCL on GPU).
    """


@train.command(cls=PerceptualCommand)
@_common_training_options
@click.option("--noise", default="gaussian:0.1", show_default=True,
              help="Noise model: gaussian:SIGMA (in [0,1] units, or LOW-HIGH for a range) "
              "or poisson:PEAK.")
@click.option("--mode", type=click.Choice(["rgb", "gray", "medical"]), default="rgb",
              show_default=True,
              help="rgb or gray pictures, or medical: grayscale 16-bit CT/MRI slices windowed "
              "to [0, 1] with --window.")
@click.option("--window", default=None,
              help="For --mode medical: LOW,HIGH in stored pixel values mapped to black and "
              "white (e.g. 984,1104 for -40..80 HU when files store HU+1024). Default: the "
              "minimum and maximum over all slices.")
@click.option("--loss", "loss", default="mse=1,perceptual=0.1", show_default=True,
              help=_LOSS_HELP)
@click.option("--layers", default=None, help=_LAYERS_HELP)
@click.option("--style-layers", default=None, help=_STYLE_LAYERS_HELP)
@click.option("--crop-size", type=click.IntRange(min=8), default=64, show_default=True,
              help="Side of the square training crops.")
@click.option("--width", type=click.IntRange(min=1), default=32, show_default=True,
              help="Channels of the U-Net's first level.")
@click.option("--depth", type=click.IntRange(min=1, max=6), default=3, show_default=True,
              help="Pooling levels of the U-Net.")
def denoise(**kwargs: Any) -> None:
    """Train a U-Net denoiser on Gaussian or Poisson noise (also CT/MRI slices)."""
    import torch

    from perceptual_loss.apps.images.degradations import parse_noise
    from perceptual_loss.apps.images.slices import parse_window
    from perceptual_loss.apps.train.models import UNet
    from perceptual_loss.apps.train.restoration import train_restoration

    noise = parse_noise(kwargs["noise"])
    window = parse_window(kwargs["window"]) if kwargs["window"] else None
    if window is not None and kwargs["mode"] != "medical":
        raise click.BadParameter("--window only applies to --mode medical", param_hint="--window")
    loss_config = _loss_config(kwargs["loss"], kwargs["layers"], kwargs["style_layers"],
                               kwargs["backbone"], kwargs["weights"])
    notes = _warn_random_weights(kwargs["weights"]) if loss_config.needs_backbone else []
    train_images, held, held_names, info = _load_images(
        kwargs["data"], kwargs["val_data"], kwargs["holdout"], kwargs["mode"], window
    )
    channels = int(train_images[0].shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(kwargs["seed"])
        model = UNet(in_channels=channels, base_channels=kwargs["width"], depth=kwargs["depth"])
    _echo(f"denoise: {len(train_images)} training / {len(held)} held-out images, "
          f"{noise!r}, loss {loss_config.describe()}")
    train_restoration(
        model, noise, train_images, held, held_names, loss_config, _train_config(**kwargs),
        crop_size=kwargs["crop_size"], device=kwargs["device"], notes=notes, echo=_echo,
        task={"name": "denoise", "noise": repr(noise), **info},
    )


@train.command(cls=PerceptualCommand)
@_common_training_options
@click.option("--scale", type=click.Choice(["2", "4"]), default="2", show_default=True,
              help="Upscaling factor.")
@click.option("--mode", type=click.Choice(["rgb", "gray"]), default="rgb", show_default=True,
              help="Colour or grayscale pictures.")
@click.option("--loss", "loss", default="mse=1,perceptual=0.01", show_default=True,
              help=_LOSS_HELP)
@click.option("--layers", default=None, help=_LAYERS_HELP)
@click.option("--style-layers", default=None, help=_STYLE_LAYERS_HELP)
@_network_options(crop=(8, 96, "Side of the high-resolution training crops (a multiple of "
                          "--scale)."),
                  width=(64, "Channels of the network's trunk."),
                  blocks=(8, "Residual blocks of the trunk."))
def sr(**kwargs: Any) -> None:
    """Train an x2/x4 pixel-shuffle super-resolution network (bicubic degradation)."""
    import torch

    from perceptual_loss.apps.images.degradations import BicubicDownscale
    from perceptual_loss.apps.train.models import SuperResolutionNet
    from perceptual_loss.apps.train.restoration import train_restoration

    scale = int(kwargs["scale"])
    if kwargs["crop_size"] % scale:
        raise click.BadParameter(
            f"{kwargs['crop_size']} is not a multiple of --scale {scale}",
            param_hint="--crop-size",
        )
    loss_config = _loss_config(kwargs["loss"], kwargs["layers"], kwargs["style_layers"],
                               kwargs["backbone"], kwargs["weights"])
    notes = _warn_random_weights(kwargs["weights"]) if loss_config.needs_backbone else []
    train_images, held, held_names, info = _load_images(
        kwargs["data"], kwargs["val_data"], kwargs["holdout"], kwargs["mode"]
    )
    channels = int(train_images[0].shape[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(kwargs["seed"])
        model = SuperResolutionNet(scale=scale, channels=channels, features=kwargs["width"],
                                   num_residual=kwargs["blocks"])
    _echo(f"sr x{scale}: {len(train_images)} training / {len(held)} held-out images, "
          f"loss {loss_config.describe()}")
    train_restoration(
        model, BicubicDownscale(scale), train_images, held, held_names, loss_config,
        _train_config(**kwargs), crop_size=kwargs["crop_size"], device=kwargs["device"],
        notes=notes, echo=_echo, task={"name": "sr", "scale": scale, **info},
    )


@train.command(cls=PerceptualCommand)
@_common_training_options
@click.option("--style", "style_path", type=click.Path(path_type=Path, dir_okay=False),
              required=True, help="The style picture.")
@click.option("--loss", "loss", default="perceptual=1,style=1e5,tv=1e-6", show_default=True,
              help="Loss mix with terms perceptual (content), style and tv "
              "(squared distances, Gram matrices normalised by C*H*W).")
@click.option("--layers", default="relu2_2", show_default=True,
              help="Content layers (Johnson et al. use relu2_2).")
@click.option("--style-layers", default=None, help=_STYLE_LAYERS_HELP)
@click.option("--style-size", type=click.IntRange(min=16), default=256, show_default=True,
              help="Longer side the style picture is resized to (sets the stroke scale).")
@_network_options(crop=(16, 256, "Side of the square content crops."),
                  width=(32, "Channels of the transformer network's first layer."),
                  blocks=(5, "Residual blocks of the transformer network."))
def style(**kwargs: Any) -> None:
    """Train a fast style-transfer network (Johnson et al. 2016) for one style picture."""
    from perceptual_loss.apps.images.io import load_image
    from perceptual_loss.apps.train.style import train_style
    terms = _style_terms(kwargs["loss"], "train style")
    if not kwargs["style_path"].is_file():
        raise click.BadParameter(f"file not found: {kwargs['style_path']}", param_hint="--style")
    style_image = load_image(kwargs["style_path"], mode="rgb")
    notes = _warn_random_weights(kwargs["weights"])
    train_images, held, held_names, info = _load_images(
        kwargs["data"], kwargs["val_data"], kwargs["holdout"], "rgb"
    )
    _echo(f"style: {len(train_images)} content / {len(held)} held-out images, style "
          f"{kwargs['style_path'].name}")
    train_style(
        train_images, style_image, held, held_names, _train_config(**kwargs),
        crop_size=kwargs["crop_size"], style_size=kwargs["style_size"],
        content_weight=terms.get("perceptual", 0.0), style_weight=terms.get("style", 0.0),
        tv_weight=terms.get("tv", 0.0),
        layers=parse_name_list(kwargs["layers"]) or None,
        style_layers=parse_name_list(kwargs["style_layers"]) or None,
        backbone=kwargs["backbone"], weights=kwargs["weights"],
        model_options={"base_channels": kwargs["width"], "num_residual": kwargs["blocks"]},
        device=kwargs["device"], notes=notes, echo=_echo,
    )


@click.command(cls=PerceptualCommand)
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Folder for the stylised pictures (same names as the inputs, .png).")
@click.option("--max-size", type=click.IntRange(min=16), default=None,
              help="Shrink pictures whose longer side exceeds this before stylising.")
@device_option
def stylize(checkpoint: Path, images: tuple[Path, ...], out: Path, max_size: int | None,
            device: Any) -> None:
    """Apply a 'perceptual train style' checkpoint to IMAGES (files or folders).

    CHECKPOINT is the checkpoint.pt (or the --out folder) of the training run.
    """
    from perceptual_loss.apps.images.io import list_images, load_image, save_image
    from perceptual_loss.apps.train.style import load_style_model
    from perceptual_loss.apps.train.style import stylize as apply_style

    files: list[Path] = []
    for item in images:
        if item.is_dir():
            files.extend(Path(p) for p in list_images(item))
        elif item.is_file():
            files.append(item)
        else:
            fail(f"image not found: {item}")
    if not files:
        fail("no images to stylise in " + ", ".join(str(i) for i in images))
    model = load_style_model(checkpoint, device)
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        result = apply_style(model, load_image(path, mode="rgb"), max_size=max_size)
        target = out / f"{path.stem}.png"
        save_image(result, target, clamp=True)
        click.echo(f"{path} -> {target}")


@click.command("style-optimize", cls=PerceptualCommand)
@click.argument("content", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("style_path", metavar="STYLE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Output picture (PNG); a loss curve is written next to it (_loss.png).")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="Optimisation steps.")
@click.option("--optimizer", type=click.Choice(["lbfgs", "adam"]), default="lbfgs",
              show_default=True, help="L-BFGS (the paper's) or Adam.")
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Step size (default 1.0 for L-BFGS, 0.02 for Adam).")
@click.option("--loss", "loss", default="perceptual=1,style=1e6", show_default=True,
              help="Loss mix with terms perceptual (content), style and tv.")
@click.option("--layers", default="relu4_2", show_default=True, help="Content layers.")
@click.option("--style-layers", default="relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
              show_default=True, help="Style layers.")
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True,
              help="Longer side of the output (the content picture is resized to it).")
@click.option("--style-size", type=click.IntRange(min=16), default=None,
              help="Longer side of the style picture (default: --size).")
@click.option("--init", type=click.Choice(["content", "noise"]), default="content",
              show_default=True, help="Start from the content picture or from noise.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@weights_option
@backbone_option(default="vgg19")
@device_option
def style_optimize(content: Path, style_path: Path, out: Path, **kwargs: Any) -> None:
    """Gatys et al. style transfer: optimise the pixels of CONTENT towards STYLE."""
    from perceptual_loss.apps.images.io import load_image, save_image
    from perceptual_loss.apps.train.reports import plot_loss_curve
    from perceptual_loss.apps.train.style import optimize_image, resize_longest

    terms = _style_terms(kwargs["loss"], "style-optimize")
    for name, path in (("CONTENT", content), ("STYLE", style_path)):
        if not path.is_file():
            fail(f"{name} image not found: {path}")
    _warn_random_weights(kwargs["weights"])
    content_image = resize_longest(load_image(content, mode="rgb"), kwargs["size"])
    style_image = resize_longest(load_image(style_path, mode="rgb"),
                                 kwargs["style_size"] or kwargs["size"])
    result, history = optimize_image(
        content_image, style_image, steps=kwargs["steps"], optimizer=kwargs["optimizer"],
        learning_rate=kwargs["learning_rate"], content_weight=terms.get("perceptual", 0.0),
        style_weight=terms.get("style", 0.0), tv_weight=terms.get("tv", 0.0),
        layers=parse_name_list(kwargs["layers"]) or None,
        style_layers=parse_name_list(kwargs["style_layers"]) or None,
        backbone=kwargs["backbone"], weights=kwargs["weights"], init=kwargs["init"],
        seed=kwargs["seed"], device=kwargs["device"], progress=kwargs["progress"],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(result, out, clamp=True)
    curve = out.with_name(f"{out.stem}_loss.png")
    plot_loss_curve(history, curve, "style-optimize loss")
    click.echo(f"loss {history[0]['loss']:.4g} -> {history[-1]['loss']:.4g}; wrote {out} and "
               f"{curve}")
