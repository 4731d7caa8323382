"""Options and error handling shared by every ``perceptual`` subcommand.

Every subcommand takes the same ``--device`` and ``--weights`` options and reports user errors
the same way: one line on stderr, exit code 1, no traceback (``--debug`` or
``PERCEPTUAL_DEBUG=1`` shows it). A subcommand module uses this file like so::

    import click

    from perceptual_loss.cli._common import PerceptualCommand, device_option, weights_option

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

import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    import torch

F = TypeVar("F", bound=Callable[..., Any])

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
DEBUG_ENV_VAR = "PERCEPTUAL_DEBUG"

# Exceptions that mean "the user asked for something that cannot be done", as opposed to a bug.
# They are reported as one line; anything else keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    FileExistsError,
    ImportError,
)

_debug_requested = False


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
            help="Backbone network: vgg11, vgg13, vgg16, vgg19, or their _bn variants; for "
            "training on CT/MRI slices also the 2D medical networks radimagenet_resnet50 and "
            "resnet50 (MONAI's definition of their perceptual loss).",
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


# --------------------------------------------------------------------------------------------
# error handling
# --------------------------------------------------------------------------------------------
def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    global _debug_requested
    if value:
        _debug_requested = True
    return value


def debug_option(func: F) -> F:
    """Add a hidden-from-callback ``--debug`` flag: user errors then show their traceback."""
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_debug,
        help="Show the full traceback of an error instead of one line.",
    )(func)


def debug_enabled() -> bool:
    """Whether ``--debug`` was given or ``PERCEPTUAL_DEBUG`` is set to a true value."""
    env = os.environ.get(DEBUG_ENV_VAR, "").strip().lower()
    return _debug_requested or env in {"1", "true", "yes", "on"}


def one_line(message: str) -> str:
    """Collapse a possibly multi-line message into one line."""
    return re.sub(r"\s*\n\s*", " ", str(message)).strip()


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is a user error (reported as one line) rather than a bug."""
    return isinstance(error, USER_ERRORS)


def missing_weights_message(error: BaseException) -> str | None:
    """The command-line wording of a missing weights file, or ``None`` for other errors.

    The library's message speaks Python (``weights=None``); here the fixes are
    ``perceptual weights fetch KEY``, the folder to copy the file into, and
    ``--weights random``.
    """
    key = getattr(error, "key", None)
    if type(error).__name__ != "WeightsNotFoundError" or key is None:
        return None
    folders = getattr(error, "folders", ())
    folder = f" or copy it into {folders[0]}" if folders else ""
    reason = ""
    if "Downloads are off" in str(error):
        reason = " (downloads are off: PERCEPTUAL_LOSS_OFFLINE is set)"
    elif "Download failed" in str(error):
        reason = " (the download failed: no internet?)"
    return (f"Error: weights file {error.weights_file} for {key} is not here{reason}. Fetch it "
            f"with `perceptual weights fetch {key}` (from {error.url}){folder}, or point "
            "PERCEPTUAL_LOSS_WEIGHTS_DIR at a folder that holds it; for untrained weights use "
            "--weights random.")


def format_user_error(error: BaseException) -> str:
    """The one line printed for a user error, e.g. ``Error: image not found: a.png``."""
    if isinstance(error, click.UsageError):
        message = error.format_message()
        if error.ctx is not None:
            message = f"{message} (see '{error.ctx.command_path} --help')"
        return f"Error: {one_line(message)}"
    if isinstance(error, click.ClickException):
        return f"Error: {one_line(error.format_message())}"
    if isinstance(error, ImportError) and not isinstance(error, ModuleNotFoundError):
        return f"Error: {one_line(str(error))}"
    if isinstance(error, ModuleNotFoundError):
        missing = error.name or str(error)
        return (
            f"Error: this command needs the Python package {missing!r}, which is not installed; "
            "install the command-line extra: pip install 'perceptual-loss[cli]'"
        )
    weights_message = missing_weights_message(error)
    if weights_message is not None:
        return weights_message
    text = str(error)
    if "Original Traceback (most recent call last):" in text:
        # re-raised from a DataLoader worker: the cause is the traceback's last line
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        text = last.split(": ", 1)[1] if ": " in last else last
    if isinstance(error, KeyError):
        text = str(error.args[0]) if error.args else text
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.strerror}: {error.filename}"
    return f"Error: {one_line(text) or type(error).__name__}"


def is_other_rank() -> bool:
    """Whether this process is a ``torchrun`` rank other than 0 (``RANK`` set and not 0)."""
    return os.environ.get("RANK", "0").strip() not in {"", "0"}


def report_user_error(error: BaseException) -> None:
    """Print the one line of a user error on stderr, on rank 0 only under ``torchrun``.

    Every rank runs the same command, so most errors (a bad option, missing weights) happen on
    each of them; rank 0 prints the line once. An error of another rank alone reaches rank 0
    too ("process 1 of 2 failed: ..."), so nothing is lost. ``--debug`` prints on every rank.
    """
    if is_other_rank() and not debug_enabled():
        return
    click.echo(format_user_error(error), err=True)


def _exit_code(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return 0


class OneLineErrorsMixin:
    """Make a click command report user errors as one line on stderr with exit code 1.

    Usage errors (bad option, missing file argument), library ``ValueError``/``TypeError``,
    missing files and missing optional packages become ``Error: <message>`` and exit code 1.
    Other exceptions are bugs and keep their traceback. ``--debug`` (or
    ``PERCEPTUAL_DEBUG=1``) re-raises user errors too, with their traceback. Under
    ``torchrun`` only rank 0 prints the line (see :func:`report_user_error`); every rank exits
    with code 1.
    """

    def main(  # noqa: D102 - documented on the class
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        global _debug_requested
        if not standalone_mode:
            return super().main(  # type: ignore[misc]
                args, prog_name, complete_var, standalone_mode=False, **extra
            )
        _debug_requested = False
        try:
            result = super().main(  # type: ignore[misc]
                args, prog_name, complete_var, standalone_mode=False, **extra
            )
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        except click.exceptions.Exit as stop:  # pragma: no cover - main returns these
            sys.exit(stop.exit_code)
        except click.ClickException as error:
            if debug_enabled():
                traceback.print_exc()
            report_user_error(error)
            sys.exit(1)
        except Exception as error:
            if not is_user_error(error) or debug_enabled():
                raise
            report_user_error(error)
            sys.exit(1)
        sys.exit(_exit_code(result))


class PerceptualCommand(OneLineErrorsMixin, click.Command):
    """A ``click.Command`` with one-line errors and a ``--debug`` flag.

    Use it as ``@click.command(cls=PerceptualCommand)`` so the command behaves the same when
    invoked alone (tests, ``CliRunner``) and through the ``perceptual`` group.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any(param.name == "debug" for param in self.params):
            debug_option(self)


class PerceptualGroup(OneLineErrorsMixin, click.Group):
    """A ``click.Group`` with one-line errors and a ``--debug`` flag on every level."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any(param.name == "debug" for param in self.params):
            debug_option(self)


def fail(message: str) -> None:
    """Stop the command with one line on stderr and exit code 1.

    Args:
        message: What went wrong and how to fix it.

    Raises:
        click.ClickException: Always.
    """
    raise click.ClickException(one_line(message))
