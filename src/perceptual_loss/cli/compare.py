"""``perceptual compare A B``: how alike two images, or two folders of image pairs, are."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from perceptual_loss.cli.errors import PerceptualCommand
from perceptual_loss.cli.options import (
    backbone_option,
    device_option,
    layers_option,
    parse_name_list,
    weights_option,
)

if TYPE_CHECKING:
    import torch

    from perceptual_loss.apps.compare.results import PairScore

__all__ = ["compare"]


def _print_table(scores: list[PairScore], value_names: list[str], folder_mode: bool,
                 what: str = "pairs") -> None:
    from rich.console import Console
    from rich.table import Table

    from perceptual_loss.apps.compare.results import format_value, summarize

    console = Console(width=None if sys.stdout.isatty() else 120)
    headers = {"psnr": "psnr (dB)", "tlp": "tLP"}
    if not folder_mode:
        score = scores[0]
        table = Table(title=f"{score.path_a}  vs  {score.path_b}  ({score.width}x{score.height})")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name in value_names:
            label = headers.get(name, name)
            if name.startswith("perceptual/"):
                label = "  " + name
            table.add_row(label, format_value(name, score.values[name]))
        console.print(table)
        return
    table = Table(title=f"{len(scores)} {what}")
    table.add_column("name", overflow="fold")
    for name in value_names:
        table.add_column(headers.get(name, name.removeprefix("perceptual/")), justify="right")
    for score in scores:
        table.add_row(score.name, *(format_value(name, score.values[name]) for name in value_names))
    summary = summarize(scores)
    table.add_section()
    table.add_row("mean", *(format_value(name, summary.get(name)) for name in value_names))
    console.print(table)


def _file_option(flag: str, name: str, what: str) -> Any:
    """An output-file option that also takes '-' for stdout."""
    return click.option(flag, name, type=click.Path(dir_okay=False, path_type=Path,
                                                    allow_dash=True), default=None,
                        help=f"Write {what} to this file ('-' for stdout, instead of the table).")


def _existing(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """A path that exists, or a numbered sequence (``clip/%04d.png``) for --video."""
    from perceptual_loss.apps.compare.video import is_sequence_pattern

    if value.exists() or (is_sequence_pattern(value) and value.parent.is_dir()):
        return value
    raise click.BadParameter(f"Path {str(value)!r} does not exist.", ctx, param)


def metric_help() -> str:
    """The ``--metric`` help: the scorer's own values and every registered metric.

    Reads :mod:`perceptual_loss.metrics` (no torch import), when the help is shown, so a
    metric registered before the command runs is listed.
    """
    from perceptual_loss.metrics import list_metrics

    registered = [spec.name for spec in list_metrics()]
    return (f"Metrics, comma-separated or repeated: mse, psnr, ssim, perceptual, "
            f"{', '.join(registered)}, or all (the default four plus "
            f"{' and '.join(registered)}). Default: mse,psnr,ssim,perceptual.")


class _MetricOption(click.Option):
    """``--metric``, whose help lists the metric registry when it is shown."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = metric_help()
        return super().get_help_record(ctx)


@click.command(cls=PerceptualCommand)
@click.argument("path_a", metavar="A", type=click.Path(path_type=Path), callback=_existing)
@click.argument("path_b", metavar="B", type=click.Path(path_type=Path), callback=_existing)
@click.option(
    "--metric",
    "metrics",
    cls=_MetricOption,
    multiple=True,
    metavar="NAMES",
    help="(from the metric registry)",
)
@backbone_option
@layers_option
@weights_option
@device_option
@click.option(
    "--criterion",
    type=click.Choice(["l1", "mse"]),
    default="l1",
    show_default=True,
    help="Distance between feature maps in the perceptual metric.",
)
@click.option(
    "--resize",
    type=click.IntRange(min=16),
    default=None,
    help="Resize both images to this size before the backbone (the perceptual metric only).",
)
@click.option(
    "--lpips-net",
    type=click.Choice(["alex", "vgg", "squeeze"]),
    default="alex",
    show_default=True,
    help="Trunk of the lpips metric.",
)
@click.option(
    "--tile-size",
    type=click.IntRange(min=32),
    default=None,
    help="Images larger than this many pixels a side are scored in overlapping tiles by the "
    "perceptual and lpips metrics (bounded memory, same values). Default: 512.",
)
@_file_option("--json", "json_path", "the scores as JSON")
@_file_option("--csv", "csv_path", "one CSV row per pair")
@click.option(
    "--html",
    "html_dir",
    type=click.Path(path_type=Path),
    metavar="PATH",
    default=None,
    help="Write a web page that opens offline: to PATH/index.html with PATH/assets/, or, for a "
    "PATH ending in .html, to that page with its pictures in NAME_files/ beside it. The scores "
    "sortable, each pair side by side with a heat map of where they differ.",
)
@click.option(
    "--video",
    is_flag=True,
    help="A and B are clips: folders of frames or numbered sequences (ref/%04d.png), matched "
    "by name or number in frame order. Reports every frame's metrics and the clips' tLP "
    "(TecoGAN's temporal LPIPS; papers report it x100); --html adds a per-frame plot.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Folders: pairs per batch (pairs of equal size go through the network together).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Folders: DataLoader worker processes reading images.",
)
@click.option("--recursive", is_flag=True, help="Folders: also match images in subfolders.")
@click.option("--no-progress", is_flag=True, help="Folders: no progress bar.")
def compare(
    path_a: Path,
    path_b: Path,
    metrics: tuple[str, ...],
    backbone: str,
    layers: tuple[str, ...] | None,
    weights: str | Path | None,
    device: torch.device,
    criterion: str,
    resize: int | None,
    lpips_net: str,
    tile_size: int | None,
    json_path: Path | None,
    csv_path: Path | None,
    html_dir: Path | None,
    video: bool,
    batch_size: int,
    workers: int,
    recursive: bool,
    no_progress: bool,
) -> None:
    """Compare image A with image B, or every image of folder A with its namesake in B.

    Prints MSE, PSNR (dB), SSIM and the perceptual distance (total and per layer) as a table;
    --json and --csv write them to files, --html a page with the pictures and heat maps of
    where each pair differs. Folder pairs are matched by file name without suffix (a/x.png
    with b/x.jpg). Launched with `torchrun --nproc_per_node=K perceptual
    compare DIR_A DIR_B ...`, each process scores every K-th pair and the first process
    writes the results.

    \b
    Examples:
      perceptual compare ref.png out.png
      perceptual compare refs/ outputs/ --json scores.json --csv scores.csv
      perceptual compare refs/ outputs/ --html report/
      perceptual compare a.png b.png --metric mse,lpips --weights random
      perceptual compare ref_frames/ out_frames/ --video --html video.html
    """  # noqa: D301 (\b must stay click's no-rewrap mark)
    import torch

    from perceptual_loss.apps.compare.folders import compare_folders, compare_images
    from perceptual_loss.apps.compare.results import write_csv, write_json
    from perceptual_loss.apps.compare.scorer import ImageScorer, parse_metrics
    from perceptual_loss.apps.images.io import warnings_as_lines
    from perceptual_loss.metrics import get_metric, list_metrics

    if video:
        _compare_videos(path_a, path_b, chosen_names=metrics, backbone=backbone, layers=layers,
                        weights=weights, device=device, criterion=criterion, resize=resize,
                        lpips_net=lpips_net, tile_size=tile_size, json_path=json_path,
                        csv_path=csv_path, html_path=html_dir, batch_size=batch_size,
                        progress=not no_progress)
        return
    for path in (path_a, path_b):
        if not path.exists():
            raise click.UsageError(f"{path} is a numbered sequence: add --video to compare "
                                   "two clips")
    if path_a.is_dir() != path_b.is_dir():
        kinds = ("folder" if path_a.is_dir() else "file", "folder" if path_b.is_dir() else "file")
        raise click.UsageError(
            f"A is a {kinds[0]} but B is a {kinds[1]}: compare two files or two folders"
        )
    if json_path is not None and csv_path is not None and str(json_path) == str(csv_path) == "-":
        raise click.UsageError("--json - and --csv - both write to stdout; choose one")
    chosen = parse_metrics(parse_name_list(metrics))
    registered = {spec.name for spec in list_metrics()}
    rank = int(os.environ.get("RANK", "0"))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # a GPU per rank
    untrained = [name for name in chosen if name == "perceptual" or (
        name in registered and get_metric(name).random_trunk)]
    if weights is None and untrained and rank == 0:
        listed = " and ".join([", ".join(untrained[:-1]), untrained[-1]] if len(untrained) > 1
                              else untrained)
        click.echo(
            f"Warning: --weights random: the {listed} values come from an untrained "
            "network and do not measure perceptual similarity.",
            err=True,
        )
    scorer = ImageScorer(
        chosen,
        backbone=backbone,
        layers=layers,
        weights=weights,
        criterion=criterion,
        resize=resize,
        lpips_net=lpips_net,
        tile_size=tile_size,
        device=device,
    )
    folder_mode = path_a.is_dir()
    only_a: list[str] = []
    only_b: list[str] = []
    world_size = 1
    with warnings_as_lines(lambda text: click.echo(text, err=True)):  # e.g. transparency
        if folder_mode:
            result = compare_folders(
                path_a,
                path_b,
                scorer,
                batch_size=batch_size,
                num_workers=workers,
                recursive=recursive,
                progress=not no_progress,
            )
        else:
            result = None
            scores = [compare_images(path_a, path_b, scorer)]
    if folder_mode:
        if result is None:  # a torchrun rank other than 0: rank 0 reports
            return
        scores, only_a, only_b = result.scores, result.only_in_a, result.only_in_b
        world_size = result.world_size
        for side, names in (("A", only_a), ("B", only_b)):
            if names:
                shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                click.echo(
                    f"Warning: {len(names)} image(s) only in {side} were skipped: {shown}",
                    err=True,
                )

    config = {**scorer.config, "a": str(path_a), "b": str(path_b), "device": str(device)}
    config["world_size"] = world_size
    to_stdout = False
    if json_path is not None:
        if str(json_path) == "-":
            import tempfile

            with tempfile.TemporaryDirectory() as scratch:
                written = write_json(Path(scratch) / "scores.json", scores, config, only_a, only_b)
                click.echo(written.read_text(encoding="utf-8"), nl=False)
            to_stdout = True
        else:
            write_json(json_path, scores, config, only_a, only_b)
    if csv_path is not None:
        if str(csv_path) == "-":
            import tempfile

            with tempfile.TemporaryDirectory() as scratch:
                written = write_csv(Path(scratch) / "scores.csv", scores)
                click.echo(written.read_text(encoding="utf-8"), nl=False)
            to_stdout = True
        else:
            write_csv(csv_path, scores)
    html_index = None
    if html_dir is not None:
        from perceptual_loss.apps.compare.page import write_html_report

        html_index = write_html_report(
            html_dir, scores, scorer, config, only_in_a=only_a, only_in_b=only_b,
            progress=folder_mode and not no_progress,
        )
    if not to_stdout:
        _print_table(scores, scorer.value_names(), folder_mode)
    for label, written_path in (("JSON", json_path), ("CSV", csv_path), ("HTML", html_index)):
        if written_path is not None and str(written_path) != "-":
            click.echo(f"{label} written to {written_path}", err=True)


def _write_outputs(json_path: Path | None, csv_path: Path | None, write_json_to: Any,
                   write_csv_to: Any) -> bool:
    """Write --json and --csv (``-``: stdout); whether stdout was used."""
    import tempfile

    to_stdout = False
    for path, writer, name in ((json_path, write_json_to, "scores.json"),
                               (csv_path, write_csv_to, "scores.csv")):
        if path is None:
            continue
        if str(path) == "-":
            with tempfile.TemporaryDirectory() as scratch:
                written = writer(Path(scratch) / name)
                click.echo(written.read_text(encoding="utf-8"), nl=False)
            to_stdout = True
        else:
            writer(path)
    return to_stdout


def _compare_videos(path_a: Path, path_b: Path, *, chosen_names: tuple[str, ...], backbone: str,
                    layers: tuple[str, ...] | None, weights: str | Path | None,
                    device: torch.device, criterion: str, resize: int | None, lpips_net: str,
                    tile_size: int | None, json_path: Path | None, csv_path: Path | None,
                    html_path: Path | None, batch_size: int, progress: bool) -> None:
    """``perceptual compare A B --video``: every frame's metrics and the clips' tLP."""
    from perceptual_loss.apps.compare.results import write_csv, write_json
    from perceptual_loss.apps.compare.scorer import ImageScorer, parse_metrics
    from perceptual_loss.apps.compare.video import compare_videos
    from perceptual_loss.apps.images.io import warnings_as_lines

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise click.UsageError("--video runs in one process; launch it without torchrun")
    for path in (path_a, path_b):
        if path.exists() and not path.is_dir():
            raise click.UsageError(f"--video compares two clips (folders of frames or numbered "
                                   f"sequences such as clip/%04d.png); {path} is a file")
    if json_path is not None and csv_path is not None and str(json_path) == str(csv_path) == "-":
        raise click.UsageError("--json - and --csv - both write to stdout; choose one")
    chosen = parse_metrics(parse_name_list(chosen_names))
    if weights is None:
        click.echo("Warning: --weights random: the perceptual, lpips and tLP values come from "
                   "an untrained network and do not measure perceptual similarity.", err=True)
    scorer = ImageScorer(chosen, backbone=backbone, layers=layers, weights=weights,
                         criterion=criterion, resize=resize, lpips_net=lpips_net,
                         tile_size=tile_size, device=device, progress=progress)
    with warnings_as_lines(lambda text: click.echo(text, err=True)):
        result = compare_videos(path_a, path_b, scorer, frames_per_chunk=max(2, batch_size),
                                progress=progress)
    for side, names in (("A", result.only_in_a), ("B", result.only_in_b)):
        if names:
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            click.echo(f"Warning: {len(names)} frame(s) only in {side} were skipped: {shown}",
                       err=True)
    config = {**scorer.config, "a": str(path_a), "b": str(path_b), "device": str(device),
              "video": True}
    video = {"tlp": result.tlp, "tlp_x100": 100 * result.tlp, "changes_a": result.changes_a,
             "changes_b": result.changes_b}
    to_stdout = _write_outputs(
        json_path, csv_path,
        lambda path: write_json(path, result.scores, config, result.only_in_a,
                                result.only_in_b, video=video),
        lambda path: write_csv(path, result.scores))
    html_index = None
    if html_path is not None:
        from perceptual_loss.apps.compare.page import write_html_report

        html_index = write_html_report(html_path, result.scores, scorer, config,
                                       only_in_a=result.only_in_a, only_in_b=result.only_in_b,
                                       progress=progress, video=video)
    if not to_stdout:
        value_names = [*scorer.value_names(), "tlp"]
        _print_table(result.scores, value_names, True, what="frames")
        click.echo(f"tLP {result.tlp:.4g} (x100: {100 * result.tlp:.3g}) over "
                   f"{len(result.scores)} frames: the mean of |LPIPS(B_t, B_t-1) - "
                   "LPIPS(A_t, A_t-1)|")
    for label, written_path in (("JSON", json_path), ("CSV", csv_path), ("HTML", html_index)):
        if written_path is not None and str(written_path) != "-":
            click.echo(f"{label} written to {written_path}", err=True)
