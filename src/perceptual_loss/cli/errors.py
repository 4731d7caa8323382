"""How every ``perceptual`` subcommand reports a user error: one line, exit code 1.

A user error (a bad option, a missing file or weights, a library ``ValueError``) becomes one
line on stderr, ``Error: <message>``, and exit code 1, with no traceback (``--debug`` or
``PERCEPTUAL_DEBUG=1`` shows it). Anything else is a bug and keeps its traceback. Under
``torchrun`` only rank 0 prints the line. Use ``@click.command(cls=PerceptualCommand)`` (or
:class:`PerceptualGroup`) and :func:`fail`.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

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
    ``--weights random``. Why the file is missing comes from the error's ``reason``.
    """
    module = sys.modules.get("perceptual_loss._weight_files")
    if module is None or not isinstance(error, module.WeightsNotFoundError):
        return None  # a WeightsNotFoundError can only come from the loaded module
    key = error.key
    if key is None:
        return None
    folders = error.folders
    folder = f" or copy it into {folders[0]}" if folders else ""
    reason = _MISSING_BECAUSE.get(error.reason, "")
    return (f"Error: weights file {error.weights_file} for {key} is not here{reason}. Fetch it "
            f"with `perceptual weights fetch {key}` (from {error.url}){folder}, or point "
            "PERCEPTUAL_LOSS_WEIGHTS_DIR at a folder that holds it; for untrained weights use "
            "--weights random.")


#: How the line of :func:`missing_weights_message` says why the file is missing.
_MISSING_BECAUSE = {
    "offline": " (downloads are off: PERCEPTUAL_LOSS_OFFLINE is set)",
    "download-failed": " (the download failed: no internet?)",
}


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
