"""The ``perceptual`` command.

Subcommands live in their own modules and are imported only when used, so ``perceptual
--help`` answers without importing torch, and a subcommand whose optional packages are missing
says which extra to install instead of breaking the others.

Console entry point: ``perceptual = "perceptual_loss.cli:main"``; also
``python -m perceptual_loss``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import click

from perceptual_loss.cli.errors import PerceptualGroup

__all__ = ["LAZY_SUBCOMMANDS", "LazyGroup", "cli", "main"]

# name -> ("module:attribute", one-line help shown by `perceptual --help`)
LAZY_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "compare": (
        "perceptual_loss.cli.compare:compare",
        "Compare two images or two folders: MSE, PSNR, SSIM, perceptual distance.",
    ),
    "features": (
        "perceptual_loss.cli.features:features",
        "Save the feature maps of chosen layers as picture grids (PNG).",
    ),
    "weights": (
        "perceptual_loss.cli.weights:weights",
        "List the known backbone weights and where they are looked for; fetch them.",
    ),
    "train": (
        "perceptual_loss.cli.train:train",
        "Train a denoiser, super-resolution or style network with the perceptual loss.",
    ),
    "stylize": (
        "perceptual_loss.cli.train:stylize",
        "Apply a trained style-transfer checkpoint to images.",
    ),
    "style-optimize": (
        "perceptual_loss.cli.train:style_optimize",
        "Style transfer by optimising the image itself (Gatys et al.).",
    ),
    "demo": (
        "perceptual_loss.cli.demo:demo",
        "Show MSE versus perceptual loss on real images and train a small denoiser both ways.",
    ),
}


class LazyGroup(PerceptualGroup):
    """A click group whose subcommands are imported on first use.

    Args:
        lazy_subcommands: Mapping from subcommand name to ``("module:attribute", short help)``.
        *args: Passed to ``click.Group``.
        **kwargs: Passed to ``click.Group``.
    """

    def __init__(
        self,
        *args: Any,
        lazy_subcommands: Mapping[str, tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands: dict[str, tuple[str, str]] = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        """All subcommand names, eager and lazy, sorted."""
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_subcommands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The subcommand called ``cmd_name``, importing its module if needed."""
        if cmd_name in self.lazy_subcommands:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the subcommands in ``--help`` from the stored short help, importing nothing."""
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            if name in self.lazy_subcommands:
                rows.append((name, self.lazy_subcommands[name][1]))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=formatter.width)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Resolve like click, but say which names exist when the name is unknown."""
        name = click.utils.make_str(args[0]) if args else None
        if name is not None and name not in self.list_commands(ctx) and not name.startswith("-"):
            known = ", ".join(self.list_commands(ctx))
            raise click.UsageError(f"no such command {name!r}; commands: {known}", ctx=ctx)
        return super().resolve_command(ctx, args)

    def _load(self, cmd_name: str) -> click.Command:
        target, _ = self.lazy_subcommands[cmd_name]
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            missing = error.name or ""
            if missing == module_name or module_name.startswith(missing + "."):
                raise click.ClickException(
                    f"the '{cmd_name}' command is not part of this installation "
                    f"(module {module_name} is missing)"
                ) from error
            raise click.ClickException(
                f"the '{cmd_name}' command needs the Python package {missing!r}, which is not "
                "installed; install the command-line extra: pip install 'perceptual-loss[cli]'"
            ) from error
        command = getattr(module, attribute, None)
        if not isinstance(command, click.Command):
            raise click.ClickException(
                f"the '{cmd_name}' command is broken: {target} is not a click command"
            )
        return command


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib import metadata

    try:
        version = metadata.version("perceptual-loss")
    except metadata.PackageNotFoundError:
        version = "unknown (not installed; run pip install -e .)"
    click.echo(f"perceptual {version}")
    ctx.exit(0)


@click.group(
    cls=LazyGroup,
    lazy_subcommands=LAZY_SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def cli() -> None:
    """Perceptual losses and metrics on frozen ImageNet CNN features.

    Every command takes --device auto|cpu|cuda and --weights imagenet|random|PATH. Errors are
    one line on stderr with exit code 1; add --debug to see the traceback.
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Run the ``perceptual`` command (console entry point).

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.
    """
    cli.main(args=list(argv) if argv is not None else None, prog_name="perceptual")
