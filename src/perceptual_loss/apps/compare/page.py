"""A comparison as a web page: every pair's scores, pictures, and where the distance sits.

:func:`write_html_report` writes one folder: ``index.html`` and ``assets/`` with PNG files
(thumbnails of both images, a heat map per pair, a colour bar); given a path ending in
``.html`` it writes that page, its pictures in ``<name>_files/`` beside it. The page needs no
network, no CDN and no script from elsewhere: it opens from ``file://`` and can be zipped and sent.

It shows a sortable table of every pair's scores (worst pair first, by the perceptual
distance), a card per pair with both images, a swipe slider between them and a heat map of
where the distance sits, and the settings of the run, with a warning when the weights were
random. For two clips (``perceptual compare A B --video``) the frames stay in frame order and
a plot shows, frame by frame, the distance of each frame pair and tLP's term with the two
LPIPS changes it compares.

The heat map is drawn by :class:`~perceptual_loss.apps.compare.heatmap.DistanceMapper` with
the networks that scored the pair; the per-frame plot by
:func:`~perceptual_loss.apps.compare.plot.frame_plot`.

All heat maps of a page share one colour scale (0 to the largest value shown), so a brighter
map is a larger distance on any card.
"""

from __future__ import annotations

import datetime as _datetime
import html
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from perceptual_loss import __version__
from perceptual_loss.apps.compare.heatmap import (
    HEATMAP_COLORMAP,
    DistanceMapper,
    colorbar,
    colormap_of,
    display_size,
    heatmap_picture,
    shrink_map,
)
from perceptual_loss.apps.compare.plot import frame_plot
from perceptual_loss.apps.compare.results import PairScore, format_value, metric_label, summarize
from perceptual_loss.apps.compare.scorer import ImageScorer, pair_channels
from perceptual_loss.apps.images.io import TransparencyWarning, load_image
from perceptual_loss.apps.runtime import progress_bar
from perceptual_loss.metrics import list_metrics

__all__ = [
    "THUMB_SIZE",
    "higher_is_better",
    "sort_metric",
    "worst_first",
    "write_html_report",
]

#: Longer side of the pictures on the page, in pixels.
THUMB_SIZE = 300
#: The colour scale ends at the largest of the pairs' maps' upper percentiles (a few
#: extreme pixels would otherwise leave every map dark).
SCALE_PERCENTILE = 99.5
#: The scorer's own values where larger means more alike (the others: more different); a
#: registered metric says so itself (``MetricSpec.higher_is_better``).
HIGHER_IS_BETTER = frozenset({"psnr", "ssim"})
_ASSETS = "assets"
_TEMPLATE = Path(__file__).resolve().parents[2] / "data" / "report" / "compare.html"


def higher_is_better(name: str) -> bool:
    """Whether larger values of ``name`` mean more alike (PSNR, SSIM, registered such)."""
    if name in HIGHER_IS_BETTER:
        return True
    return any(spec.name == name and spec.higher_is_better for spec in list_metrics())


def sort_metric(value_names: Sequence[str]) -> str | None:
    """The value the page sorts by first: perceptual, else the first registered metric, else MSE.

    Args:
        value_names: The values each pair has (``ImageScorer.value_names()``).

    Returns:
        A name from ``value_names``, or ``None`` when none of them is a distance.
    """
    for name in ("perceptual", *(spec.name for spec in list_metrics()), "mse", "psnr", "ssim"):
        if name in value_names:
            return name
    return None


def worst_first(scores: Sequence[PairScore], metric: str | None) -> list[PairScore]:
    """The pairs ordered from the most to the least different by ``metric``.

    Args:
        scores: The pairs.
        metric: A value name; PSNR and SSIM count as worse when lower. ``None`` keeps the
            order.

    Returns:
        A new list; ties keep name order.
    """
    if metric is None:
        return list(scores)
    sign = 1.0 if higher_is_better(metric) else -1.0

    def key(score: PairScore) -> float:
        value = score.values.get(metric, math.nan)
        return math.inf if math.isnan(value) else sign * value

    return sorted(scores, key=key)


# --------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------
def _thumbnail(image: torch.Tensor, size: int) -> Image.Image:
    """A picture whose longer side is ``size``: antialiased when shrunk, nearest when grown."""
    array = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    height, width = display_size(*image.shape[-2:], size)
    if (height, width) == tuple(image.shape[-2:]):
        return picture
    grow = height > image.shape[-2]
    return picture.resize((width, height),
                          Image.Resampling.NEAREST if grow else Image.Resampling.LANCZOS)


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------
def _data_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def _table(ordered: Sequence[PairScore], value_names: Sequence[str], first: str | None) -> str:
    e = html.escape
    heads = ['<th data-kind="text" data-col="name" aria-sort="none">'
             '<button type="button">pair</button></th>',
             '<th data-kind="number" data-better="higher" data-col="size" aria-sort="none">'
             '<button type="button">pixels</button></th>']
    for name in value_names:
        better = "higher" if higher_is_better(name) else "lower"
        sort = ("descending" if better == "lower" else "ascending") if name == first else "none"
        css = ' class="layer"' if name.startswith("perceptual/") else ""
        heads.append(f'<th data-kind="number" data-better="{better}" data-col="{e(name)}"'
                     f'{css} aria-sort="{sort}" title="{e(name)}: '
                     f'{"higher" if better == "higher" else "lower"} is more alike">'
                     f'<button type="button">{e(metric_label(name))}</button></th>')
    rows = []
    for index, score in enumerate(ordered):
        cells = [f'<td data-value="{e(score.name)}"><a href="#pair-{index}">'
                 f"{e(score.name)}</a></td>",
                 f'<td data-value="{score.width * score.height}">'
                 f"{score.width}&times;{score.height}</td>"]
        for name in value_names:
            value = score.values.get(name)
            cells.append(f'<td data-value="{_data_value(value)}">{format_value(name, value)}</td>')
        rows.append(f'<tr data-pair="{index}">' + "".join(cells) + "</tr>")
    summary = summarize(ordered)
    mean = [f"<td>mean of {len(ordered)}</td>", "<td></td>"]
    mean += [f"<td>{format_value(name, summary.get(name))}</td>" for name in value_names]
    return (
        '<table id="scores"><thead><tr>' + "".join(heads) + "</tr></thead>\n<tbody>\n"
        + "\n".join(rows) + "\n</tbody>\n<tfoot><tr>" + "".join(mean) + "</tr></tfoot></table>"
    )


def _card(index: int, score: PairScore, value_names: Sequence[str], files: dict[str, str],
          size: tuple[int, int], map_label: str, lazy: bool, first: str | None) -> str:
    e = html.escape
    height, width = size
    load = ' loading="lazy"' if lazy else ""
    dims = f'width="{width}" height="{height}"'
    shown = [name for name in value_names if not name.startswith("perceptual/")]
    numbers = " &middot; ".join(f"{e(metric_label(n))} {format_value(n, score.values.get(n))}"
                                for n in shown)
    return f"""<section class="card" id="pair-{index}" data-pair="{index}">
<h3><span class="rank" title="rank by {e(first or 'name')}, worst first">#{index + 1}</span> \
{e(score.name)}</h3>
<p class="numbers">{numbers}</p>
<div class="pictures">
<figure><img src="{files['a']}" alt="A: {e(score.name)}" {dims}{load}>
<figcaption title="{e(score.path_a)}">A: {e(Path(score.path_a).name)}</figcaption></figure>
<figure><img src="{files['b']}" alt="B: {e(score.name)}" {dims}{load}>
<figcaption title="{e(score.path_b)}">B: {e(Path(score.path_b).name)}</figcaption></figure>
<figure><img src="{files['map']}" alt="heat map: {e(score.name)}" {dims}{load}>
<figcaption>{e(map_label)}</figcaption></figure>
<figure><div class="swipe" style="--pos: 50%; width: {width}px; height: {height}px">
<img src="{files['a']}" alt="A (swipe): {e(score.name)}" {dims}{load}>
<img class="over" src="{files['b']}" alt="B (swipe): {e(score.name)}" {dims}{load}>
<input type="range" min="0" max="100" value="50" aria-label="swipe between A and B">
</div><figcaption>swipe: A left, B right</figcaption></figure>
</div></section>"""


def _settings(config: dict[str, Any], extra: dict[str, str]) -> str:
    e = html.escape
    rows = []
    for key, value in {**config, **extra}.items():
        if isinstance(value, (list, tuple)):
            text = ", ".join(str(v) for v in value) or "-"
        else:
            text = "-" if value is None else str(value)
        rows.append(f"<tr><th>{e(str(key))}</th><td>{e(text)}</td></tr>")
    return '<table id="settings">' + "".join(rows) + "</table>"


def _random_note(config: dict[str, Any]) -> str:
    if config.get("weights") != "random":
        return ""
    return (
        '<p class="warning" id="random-weights" role="alert"><strong>Random weights.</strong> '
        "This comparison ran with <code>--weights random</code>: the perceptual and lpips "
        "values and the heat maps come from an untrained network and do not measure "
        "perceptual similarity. Use <code>--weights imagenet</code> for real scores.</p>"
    )


def _unmatched(only_in_a: Sequence[str], only_in_b: Sequence[str]) -> str:
    parts = []
    for side, names in (("A", only_in_a), ("B", only_in_b)):
        if names:
            shown = ", ".join(html.escape(n) for n in names[:50])
            more = f" and {len(names) - 50} more" if len(names) > 50 else ""
            parts.append(f"<li>{len(names)} only in {side} (skipped): {shown}{more}</li>")
    return '<ul class="unmatched">' + "".join(parts) + "</ul>" if parts else ""


def _asset_name(index: int, name: str, what: str, assets: str = _ASSETS) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:40].strip("_") or "pair"
    return f"{assets}/{index:04d}_{safe}_{what}.png"


def _page_paths(out: Path) -> tuple[Path, str]:
    """``(page, assets folder name)`` for ``out``, a folder or a ``.html`` page.

    A folder gets ``index.html`` and ``assets/``; a path ending in ``.html`` is the page, its
    pictures in ``<name>_files/`` beside it.
    """
    if out.suffix.lower() in (".html", ".htm"):
        if out.is_dir():
            raise ValueError(f"{out} is a folder; give a folder path or a new .html file")
        return out, f"{out.stem}_files"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--html needs a folder or a path ending in .html, but {out} is a "
                         "file; choose another path")
    return out / "index.html", _ASSETS


def _video_section(scores: Sequence[PairScore], metric: str | None,
                   video: dict[str, Any]) -> str:
    tlp = float(video["tlp"])
    return (
        '<section id="video"><h2>Frames</h2>'
        f'<p class="tlp"><strong>tLP {tlp:.4g}</strong> (x100: {100 * tlp:.3g}): the mean over '
        "frames 1..T-1 of |LPIPS(B_t, B_t-1) - LPIPS(A_t, A_t-1)|, TecoGAN's temporal "
        "perceptual metric; 0 when B changes from frame to frame as A does. Lower is "
        "better.</p>"
        + frame_plot(scores, metric, video["changes_a"], video["changes_b"]) + "</section>"
    )


def write_html_report(
    out_dir: str | Path,
    scores: Sequence[PairScore],
    scorer: ImageScorer,
    config: dict[str, Any] | None = None,
    *,
    only_in_a: Sequence[str] = (),
    only_in_b: Sequence[str] = (),
    thumb_size: int = THUMB_SIZE,
    colormap: str = HEATMAP_COLORMAP,
    title: str | None = None,
    progress: bool = False,
    video: dict[str, Any] | None = None,
) -> Path:
    """Write the comparison as a page that opens offline: ``out_dir/index.html`` + assets.

    Each pair's images are read again from ``PairScore.path_a``/``path_b`` to draw the
    thumbnails and the heat map (one more pass of the network per pair).

    Args:
        out_dir: Output folder (created; files of an earlier report there are replaced), or
            a path ending in ``.html``: the page itself, its pictures in ``<name>_files/``
            beside it.
        scores: The scored pairs, e.g. ``compare_folders(...).scores`` or
            ``[compare_images(...)]``.
        scorer: The scorer that made them; its networks draw the heat maps.
        config: Settings shown on the page (default ``scorer.config``), e.g. the CLI's with
            the folders and the device.
        only_in_a: Names without a partner in B, listed on the page.
        only_in_b: Names without a partner in A.
        thumb_size: Longer side of each picture on the page, in pixels, ``>= 16``.
        colormap: Matplotlib colour map of the heat maps.
        title: Page title (default: "A vs B" from the config, or the pair count).
        progress: Show a progress bar on stderr while drawing.
        video: For two clips (``scores`` one per frame, in frame order, with ``"tlp"``):
            ``{"tlp": float, "changes_a": [...], "changes_b": [...]}`` as from
            :func:`~perceptual_loss.apps.compare.video.compare_videos`. The frames then keep their
            order and the page gets a per-frame plot (:func:`frame_plot`).

    Returns:
        The path of the page.

    Raises:
        ValueError: For no scores, ``thumb_size < 16``, an unknown colour map, or when
            ``out_dir`` is a file.
        ImportError: Without matplotlib.
    """
    if not scores:
        raise ValueError("no scores to report: compare at least one pair")
    if thumb_size < 16:
        raise ValueError(f"thumb_size must be >= 16, got {thumb_size}")
    colormap_of(colormap)
    index_path, assets_name = _page_paths(Path(out_dir))
    out_dir = index_path.parent
    config = dict(scorer.config if config is None else config)
    value_names = list(scores[0].values)
    first = sort_metric(value_names)
    plotted = first
    if video is not None:
        ordered, first = list(scores), None  # frame order
    else:
        ordered = worst_first(scores, first)
    mapper = DistanceMapper(scorer)

    assets = out_dir / assets_name
    assets.mkdir(parents=True, exist_ok=True)
    for stale in assets.glob("*.png"):
        stale.unlink()
    maps: list[np.ndarray] = []
    files: list[dict[str, str]] = []
    bar = progress_bar(len(ordered), enabled=progress, description="html report", unit="pair",
                       leave=False)
    try:
        for index, score in enumerate(ordered):
            with warnings.catch_warnings():  # the scores already said so
                warnings.simplefilter("ignore", TransparencyWarning)
                image_a, image_b = pair_channels(load_image(score.path_a),
                                                  load_image(score.path_b))
            if image_a.shape[-2:] != image_b.shape[-2:]:
                raise ValueError(
                    f"{score.path_a} and {score.path_b} differ in size; compare images of the "
                    "same size"
                )
            names = {what: _asset_name(index, score.name, what, assets_name)
                     for what in ("a", "b", "map")}
            _thumbnail(image_a, thumb_size).save(out_dir / names["a"])
            _thumbnail(image_b, thumb_size).save(out_dir / names["b"])
            maps.append(shrink_map(mapper(image_a, image_b), thumb_size))
            files.append(names)
            bar.update(1)
    finally:
        bar.close()
    scale = max(float(np.percentile(values, SCALE_PERCENTILE)) for values in maps)
    if not scale > 0:  # identical pairs: nothing to show
        scale = max(float(values.max()) for values in maps) or 1.0
    for values, names in zip(maps, files, strict=True):
        heatmap_picture(values, scale, colormap).save(out_dir / names["map"])
    colorbar(colormap).save(assets / "colorbar.png")

    lazy = len(ordered) > 60
    cards = "\n".join(
        _card(index, score, value_names, names, values.shape, f"heat map ({mapper.kind})", lazy,
              first)
        for index, (score, names, values) in enumerate(zip(ordered, files, maps, strict=True))
    )
    a_name, b_name = config.get("a"), config.get("b")
    kind = "frame" if video is not None else "pair"
    title = title or (f"{a_name} vs {b_name}" if a_name and b_name else
                      f"{len(ordered)} image {kind}s")
    extra = {
        f"{kind}s": str(len(ordered)),
        "first sorted by": f"{first} (worst first)" if first else "name",
        "heat map": mapper.description,
        "heat map colour scale": (
            f"0 (black) to {scale:.4g} ({colormap}; larger values get the top colour), the "
            f"largest {SCALE_PERCENTILE:g}th percentile of the pairs' maps, shared by all pairs"
        ),
        "written": _datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "perceptual-loss": str(__version__),
    }
    replacements = {
        "title": html.escape(title),
        "random_note": _random_note(config),
        "summary": html.escape(
            f"{len(ordered)} {kind}{'s' if len(ordered) != 1 else ''}, "
            + ("in frame order" if video is not None else
               f"sorted worst first by {first or 'name'}")
            + "; click a column header to sort by it (again to reverse)."
        ),
        "video": _video_section(ordered, plotted, video) if video is not None else "",
        "assets": html.escape(assets_name),
        "unmatched": _unmatched(only_in_a, only_in_b),
        "table": _table(ordered, value_names, first),
        "map_description": html.escape(mapper.description),
        "scale": f"{scale:.4g}",
        "cards": cards,
        "settings": _settings(config, extra),
    }
    # one pass, so text from file names is never read as a placeholder
    page = re.sub(r"\{\{(\w+)\}\}", lambda match: replacements[match.group(1)],
                  _TEMPLATE.read_text(encoding="utf-8"))
    index_path.write_text(page, encoding="utf-8")
    return index_path
