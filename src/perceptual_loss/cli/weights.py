"""``perceptual weights``: the known backbone weights, where they are looked for, fetching.

``perceptual weights list`` shows every registered file, the folders searched for it (in
order) and whether a copy is present; ``perceptual weights fetch NAME`` downloads a file (or
takes one you downloaded yourself with ``--file``), checks its hash, and puts it in the cache.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from perceptual_loss.cli.errors import PerceptualCommand, PerceptualGroup, fail

if TYPE_CHECKING:
    from perceptual_loss.weights import WeightSpec

__all__ = ["weights"]

_ENVIRONMENT = (
    ("PERCEPTUAL_LOSS_WEIGHTS_DIR", "a folder searched first (offline machines)"),
    ("TORCH_HOME", "the torch cache; files live in $TORCH_HOME/hub/checkpoints"),
    ("PERCEPTUAL_LOSS_MIRROR", "download from <mirror>/<file> instead of the official URL"),
    ("PERCEPTUAL_LOSS_OFFLINE", "1: never download"),
)


def _resolve_name(name: str) -> WeightSpec:
    """A registry key (``vgg16/imagenet``) or a backbone name (``vgg16`` -> its ImageNet file)."""
    from perceptual_loss.weights import find_weight_spec

    try:
        return find_weight_spec(name)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="NAME") from None


def _status(spec: WeightSpec) -> dict[str, Any]:
    from perceptual_loss.weights import candidate_paths

    candidates = candidate_paths(spec)
    present = next((path for path in candidates if path.is_file()), None)
    return {
        "key": spec.key,
        "backbone": spec.backbone,
        "file": " or ".join(spec.filenames),
        "format": spec.file_format,
        "normalization": spec.normalization,
        "url": spec.url,
        "license": spec.license,
        "present": present is not None,
        "path": str(present) if present is not None else None,
        "searched": [str(path) for path in candidates],
    }


@click.group(cls=PerceptualGroup, context_settings={"help_option_names": ["-h", "--help"]})
def weights() -> None:
    """List the known backbone weights and where they are looked for; fetch them.

    A weights file is looked for in $PERCEPTUAL_LOSS_WEIGHTS_DIR, then in the torch cache
    ($TORCH_HOME/hub/checkpoints; Keras files also in ~/.keras/models), and downloaded from its
    official URL with its hash checked, unless PERCEPTUAL_LOSS_OFFLINE=1.
    """


@weights.command("list", cls=PerceptualCommand)
@click.option("--backbone", default=None, help="Only the weights of this backbone.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(backbone: str | None, as_json: bool) -> None:
    """Show every registered weights file, where it is looked for, and whether it is there.

    Files without a published hash (RadImageNet, MedicalNet) are listed too: they are never
    downloaded, only looked for.
    """
    from perceptual_loss.backbones import get_backbone, list_backbones
    from perceptual_loss.weights import get_weight_spec, list_weights

    specs = [get_weight_spec(key) for key in list_weights()]
    if backbone is not None:
        if backbone not in list_backbones():
            get_backbone(backbone)  # unknown names fail with the list of known ones
        specs = [spec for spec in specs if spec.backbone == backbone]
    rows = [_status(spec) for spec in specs]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title="Backbone weights")
    table.add_column("key", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("file / where it is looked for", overflow="fold")
    for row in rows:
        if row["present"]:
            status, where = "[green]present[/green]", row["path"]
        else:
            status = "[yellow]missing[/yellow]"
            where = row["file"] + "\n" + "\n".join(f"  {path}" for path in row["searched"])
        table.add_row(row["key"], status, where)
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    present = sum(row["present"] for row in rows)
    console.print(f"{present} of {len(rows)} present. Environment:", highlight=False)
    for variable, meaning in _ENVIRONMENT:
        value = os.environ.get(variable)
        shown = value if value else "(not set)"
        console.print(f"  {variable}={shown}  - {meaning}", highlight=False, markup=False)
    console.print("Fetch one with: perceptual weights fetch vgg16/imagenet", highlight=False)


@weights.command("fetch", cls=PerceptualCommand)
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@click.option(
    "--file",
    "local_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A copy you downloaded yourself: check its hash and install it in the cache.",
)
def fetch(names: tuple[str, ...], local_file: Path | None) -> None:
    """Download (or find) NAME, check its hash, and print where it is.

    NAME is a registry key such as vgg16/imagenet or vgg16/keras-imagenet, or a backbone name
    (its ImageNet file). Already present files are only verified.
    """
    from perceptual_loss.weights import resolve_weight_file, search_folders, verify_file

    specs = [_resolve_name(name) for name in names]
    if local_file is not None:
        if len(specs) != 1:
            raise click.UsageError("--file installs one file: name exactly one NAME")
        (spec,) = specs
        verify_file(local_file, spec)
        target = search_folders(spec)[0] / spec.filename
        if local_file.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_file, target)
        click.echo(f"{spec.key}: verified and installed at {target}")
        return
    from perceptual_loss.weights import WeightsNotFoundError

    for spec in specs:
        try:
            path = resolve_weight_file(spec, download=True)
        except WeightsNotFoundError as error:
            # The generic advice would be this very command: say how to get the file instead.
            if spec.local_only:
                why = "it has no published hash, so it is never downloaded"
            elif error.reason == "offline":
                why = "downloads are off: PERCEPTUAL_LOSS_OFFLINE is set"
            else:
                why = "the download failed: no internet?"
            fail(f"cannot fetch {spec.key} ({why}). Download {spec.url} on another machine, "
                 f"then install it with `perceptual weights fetch {spec.key} --file "
                 f"PATH/{spec.filename}`, or copy it into {search_folders(spec)[0]}")
        click.echo(f"{spec.key}: {path}")
