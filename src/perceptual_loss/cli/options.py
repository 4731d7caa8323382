"""Options shared by every ``perceptual`` subcommand: ``--device``, ``--weights``, names.

Every subcommand takes the same ``--device`` and ``--weights`` options (errors are reported by
:mod:`perceptual_loss.cli.errors`). A subcommand module uses them like so::

    import click

    from perceptual_loss.cli.errors import PerceptualCommand
    from perceptual_loss.cli.options import device_option, weights_option

    @click.command(cls=PerceptualCommand)
    @device_option
    @weights_option
    def mycommand(device: torch.device, weights: str | None | Path) -> None:
        ...

The decorators convert while parsing: the command receives a ready ``torch.device`` and the
``weights`` value that ``PerceptualLoss``/``FeatureExtractor`` accept (``"imagenet"``, ``None``
for random weights, a ``Path`` to a checkpoint, or a registry key such as
``"vgg16/keras-imagenet"``).

``torch`` and the library are imported only when a command runs, so ``perceptual --help``
stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    import torch

F = TypeVar("F", bound=Callable[..., Any])

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


# --------------------------------------------------------------------------------------------
# Parsing helpers (usable without click)
# --------------------------------------------------------------------------------------------
def resolve_device(name: str | torch.device) -> torch.device:
    """Turn a ``--device`` value into a ``torch.device``.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``. A ``torch.device`` is returned after the same availability check.

    Returns:
        The device to run on.

    Raises:
        ValueError: For an unknown name, or CUDA requested on a machine without CUDA
            (the message says to use ``--device cpu``).
    """
    import torch

    if isinstance(name, torch.device):
        text = str(name)
    elif isinstance(name, str):
        text = name.strip().lower()
    else:
        raise TypeError(
            f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(name).__name__}"
        )
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ValueError(
            f"unknown device {name!r}: expected one of auto, cpu, cuda (or cuda:N)"
        )
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {text!r} requested but CUDA is not available on this machine "
            "(torch was built without CUDA or no GPU is visible); use --device cpu or auto"
        )
    index = int(match.group(1)) if match.group(1) is not None else None
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ValueError(
            f"device {text!r} requested but only {count} CUDA device(s) are visible "
            f"(valid: cuda:0 .. cuda:{count - 1})"
        )
    return torch.device(text)


def parse_weights(value: str | Path | None) -> str | Path | None:
    """Turn a ``--weights`` value into what the library's ``weights=`` argument accepts.

    The library's own resolver (:func:`perceptual_loss.weights.parse_weights`): ``imagenet``,
    ``random``/``none``, an existing file, or a registry key.
    """
    from perceptual_loss.weights import parse_weights as parse

    return parse(value)


def parse_name_list(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Split a comma-separated option value (``"relu1_2,relu2_2"``) into names.

    Args:
        value: A comma-separated string, a sequence of such strings (a repeated option), or
            ``None``.

    Returns:
        The names in order, stripped, empty items dropped, duplicates removed.
    """
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if part and part not in names:
                names.append(part)
    return tuple(names)


# --------------------------------------------------------------------------------------------
# click decorators
# --------------------------------------------------------------------------------------------
def _device_callback(ctx: click.Context, param: click.Parameter, value: str) -> torch.device:
    try:
        return resolve_device(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from error


def _weights_callback(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | Path | None:
    try:
        return parse_weights(value)
    except (ValueError, TypeError, OSError) as error:
        raise click.BadParameter(str(error), ctx=ctx, param=param) from error


def _layers_callback(
    ctx: click.Context, param: click.Parameter, value: Sequence[str] | str | None
) -> tuple[str, ...] | None:
    names = parse_name_list(value)
    return names or None


def device_option(func: F) -> F:
    """Add ``--device auto|cpu|cuda``; the command receives ``device: torch.device``."""
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        metavar="auto|cpu|cuda",
        callback=_device_callback,
        help="Where to run: auto picks CUDA when available, else CPU. cuda:N picks a GPU.",
    )(func)


def weights_option(func: F | None = None, *, default: str = "imagenet") -> Any:
    """Add ``--weights imagenet|random|PATH|KEY``; the command receives the parsed value.

    Usable bare (``@weights_option``) or with another default
    (``@weights_option(default="random")``). The command's ``weights`` argument is
    ``"imagenet"``, ``None`` (random), a ``Path`` to an existing checkpoint, or a registry key.
    """

    def decorate(f: F) -> F:
        return click.option(
            "--weights",
            default=default,
            show_default=True,
            metavar="imagenet|random|PATH|KEY",
            callback=_weights_callback,
            help=(
                "Backbone weights: imagenet (official file, downloaded once to the torch cache), "
                "random (untrained, for tests), a checkpoint file, or a registry key such as "
                "vgg16/keras-imagenet (see `perceptual weights list`)."
            ),
        )(f)

    if func is not None:
        return decorate(func)
    return decorate


def backbone_option(func: F | None = None, *, default: str = "vgg16") -> Any:
    """Add ``--backbone NAME`` (validated by the library when the command builds it)."""

    def decorate(f: F) -> F:
        return click.option(
            "--backbone",
            default=default,
            show_default=True,
            help="Backbone network: vgg11, vgg13, vgg16, vgg19, or their _bn variants, alexnet, "
            "squeezenet1_1; for CT/MRI slices also radimagenet_resnet50 and resnet50 (MONAI's "
            "perceptual loss on their final map, or any of their layers named with --layers, "
            "e.g. layer1,layer2).",
        )(f)

    if func is not None:
        return decorate(func)
    return decorate


def layers_option(
    func: F | None = None,
    *,
    default: str | None = None,
    help_text: str = "Comma-separated layer names, e.g. relu1_2,relu2_2,relu3_3 "
    "(Keras names such as block3_conv3 work too). Default: the library's.",
) -> Any:
    """Add ``--layers a,b,c``; the command receives a tuple of names or ``None`` (default)."""

    def decorate(f: F) -> F:
        return click.option(
            "--layers",
            default=default,
            show_default=default is not None,
            callback=_layers_callback,
            help=help_text,
        )(f)

    if func is not None:
        return decorate(func)
    return decorate
