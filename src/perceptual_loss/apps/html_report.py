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

The heat map is, per pixel:

- with ``lpips`` among the metrics: the LPIPS spatial map (``LPIPS(net, spatial=True)``), whose
  mean over the picture is close to the pair's LPIPS value;
- else, with ``perceptual``: for each layer of the perceptual distance, the channel mean of
  ``|f(a) - f(b)|`` (its square for ``criterion="mse"``) upsampled bilinearly to the image
  size, summed over the layers; its mean is the pair's perceptual distance (exactly so when
  the image sides are multiples of the deepest layer's stride);
- else: the squared pixel difference averaged over channels (its mean is the MSE).

All heat maps of a page share one colour scale (0 to the largest value shown), so a brighter
map is a larger distance on any card.
"""

from __future__ import annotations

import datetime as _datetime
import html
import math
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from perceptual_loss import __version__
from perceptual_loss.apps.compare import ImageScorer, PairScore, pair_channels, summarize
from perceptual_loss.apps.compare_output import format_value
from perceptual_loss.apps.io import TransparencyWarning, load_image
from perceptual_loss.extractor import FeatureExtractor
from perceptual_loss.frozen import copy_frozen_weights
from perceptual_loss.metrics import LPIPS

__all__ = [
    "DistanceMapper",
    "HEATMAP_COLORMAP",
    "THUMB_SIZE",
    "frame_plot",
    "sort_metric",
    "worst_first",
    "write_html_report",
]

#: Matplotlib colour map of the heat maps.
HEATMAP_COLORMAP = "inferno"
#: Longer side of the pictures on the page, in pixels.
THUMB_SIZE = 300
#: The colour scale ends at the largest of the pairs' maps' upper percentiles (a few
#: extreme pixels would otherwise leave every map dark).
SCALE_PERCENTILE = 99.5
#: Values where larger means more alike (the others: larger means more different).
HIGHER_IS_BETTER = frozenset({"psnr", "ssim"})
_ASSETS = "assets"
_TEMPLATE = Path(__file__).resolve().parent.parent / "data" / "report" / "compare.html"


def sort_metric(value_names: Sequence[str]) -> str | None:
    """The value the page sorts by first: the perceptual distance, else LPIPS, else MSE.

    Args:
        value_names: The values each pair has (``ImageScorer.value_names()``).

    Returns:
        A name from ``value_names``, or ``None`` when none of them is a distance.
    """
    for name in ("perceptual", "lpips", "mse", "psnr", "ssim"):
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
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0

    def key(score: PairScore) -> float:
        value = score.values.get(metric, math.nan)
        return math.inf if math.isnan(value) else sign * value

    return sorted(scores, key=key)


class DistanceMapper:
    """Maps of where two images differ, from the networks of an :class:`ImageScorer`.

    The maps use the scorer's own networks (or copies of their weights), so with random
    weights the map shows the same untrained network that gave the scores.

    Args:
        scorer: The scorer that produced the scores.

    Attributes:
        kind: ``"lpips"``, ``"perceptual"`` or ``"pixel"`` (see the module docstring).
        description: One sentence for the page saying what the map shows.
    """

    def __init__(self, scorer: ImageScorer) -> None:
        self.device = scorer.device
        self._lpips: torch.nn.Module | None = None
        self._extractor: torch.nn.Module | None = None
        self._layers: tuple[str, ...] = ()
        config = scorer.config
        if scorer.lpips is not None:
            self.kind = "lpips"
            net = str(config.get("lpips_net") or "alex")
            spatial = LPIPS(net, weights=None, spatial=True, reduction="none",
                            tile_size=getattr(scorer.lpips, "tile_size", None))
            copy_frozen_weights(scorer.lpips, spatial)  # the scorer's very weights
            self._lpips = spatial.to(self.device).eval()
            self.description = (
                f"LPIPS ({net}) spatial map: each layer's weighted squared difference of "
                "unit-length features, upsampled to the image and summed; its mean over the "
                "picture is close to the pair's lpips value."
            )
        elif scorer.perceptual is not None:
            self.kind = "perceptual"
            self._layers = tuple(scorer.layers)
            self._square = config.get("criterion") == "mse"
            self._extractor = self._perceptual_extractor(scorer)
            difference = "(f(a) - f(b))^2" if self._square else "|f(a) - f(b)|"
            self.description = (
                f"Perceptual distance map: for each layer ({', '.join(self._layers)}) the "
                f"channel mean of {difference}, upsampled bilinearly to the image and summed "
                "over the layers; its mean over the picture is (close to) the pair's "
                "perceptual value."
            )
        else:
            self.kind = "pixel"
            self.description = (
                "Squared pixel difference averaged over the channels (no perceptual metric "
                "was chosen); its mean over the picture is the pair's mse."
            )

    def _perceptual_extractor(self, scorer: ImageScorer) -> torch.nn.Module:
        """The perceptual loss's own extractor, or a FeatureExtractor with its weights."""
        own = getattr(scorer.perceptual, "extractor", None)
        if isinstance(own, FeatureExtractor):
            return own
        config = scorer.config  # pragma: no cover - only if the loss stops exposing it
        weights = None if config.get("weights") == "random" else config.get("weights")
        return FeatureExtractor(  # pragma: no cover
            str(config.get("backbone")), layers=self._layers, weights=weights,
            resize=config.get("resize"),
        ).to(self.device)

    @torch.no_grad()
    def __call__(self, image_a: torch.Tensor, image_b: torch.Tensor) -> torch.Tensor:
        """The distance map of one pair.

        Args:
            image_a: Reference ``(C, H, W)``, ``C`` in {1, 3}, values in ``[0, 1]``.
            image_b: Judged image, same height and width.

        Returns:
            ``(H, W)`` float32 tensor on the CPU, values ``>= 0``.
        """
        image_a, image_b = pair_channels(image_a, image_b)
        a = image_a[None].to(self.device, torch.float32)
        b = image_b[None].to(self.device, torch.float32)
        height, width = a.shape[-2:]
        if self._lpips is not None:
            result = self._lpips(b, a)
            return result[0, 0].float().cpu().clamp_min(0.0)
        if self._extractor is not None:
            features_a, features_b = self._extractor(a), self._extractor(b)
            total = torch.zeros(1, 1, height, width, device=a.device)
            for layer in self._layers:
                difference = features_a[layer].float() - features_b[layer].float()
                per_pixel = difference.square() if self._square else difference.abs()
                total += F.interpolate(per_pixel.mean(dim=1, keepdim=True), size=(height, width),
                                       mode="bilinear", align_corners=False)
            return total[0, 0].cpu().clamp_min(0.0)
        return (a - b).double().square().mean(dim=1)[0].float().cpu()


# --------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------
def _display_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Shrink to ``size`` on the longer side; grow small images by a whole factor only."""
    longest = max(height, width)
    scale = size / longest if longest > size else float(max(1, size // longest))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _thumbnail(image: torch.Tensor, size: int) -> Image.Image:
    """A picture whose longer side is ``size``: antialiased when shrunk, nearest when grown."""
    array = image.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    height, width = _display_size(*image.shape[-2:], size)
    if (height, width) == tuple(image.shape[-2:]):
        return picture
    grow = height > image.shape[-2]
    return picture.resize((width, height),
                          Image.Resampling.NEAREST if grow else Image.Resampling.LANCZOS)


def _shrink_map(distance: torch.Tensor, size: int) -> np.ndarray:
    """A distance map at display size: area mean when shrunk, nearest when grown."""
    height, width = _display_size(*distance.shape[-2:], size)
    grow = height > distance.shape[-2]
    resized = F.interpolate(distance[None, None].float(), size=(height, width),
                            mode="nearest" if grow else "area")
    return resized[0, 0].numpy()


def _colormap(name: str) -> Callable[[np.ndarray], np.ndarray]:
    try:
        from matplotlib import colormaps
    except ImportError as error:
        raise ImportError(
            "the HTML report's heat maps need matplotlib: pip install 'perceptual-loss[cli]'"
        ) from error
    if name not in colormaps:
        raise ValueError(f"unknown colormap {name!r}; try inferno, magma or viridis")
    return colormaps[name]


def _heatmap_picture(values: np.ndarray, scale: float, colormap: str) -> Image.Image:
    rgba = _colormap(colormap)(np.clip(values / scale, 0.0, 1.0))
    return Image.fromarray(np.round(rgba[..., :3] * 255).astype(np.uint8))


def _colorbar(colormap: str, width: int = 256, height: int = 14) -> Image.Image:
    ramp = np.tile(np.linspace(0.0, 1.0, width), (height, 1))
    return _heatmap_picture(ramp, 1.0, colormap)


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------
def _data_value(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def _header(name: str) -> str:
    label = {"psnr": "psnr (dB)", "tlp": "tLP"}.get(name, name)
    return label.replace("perceptual/", "")


def _table(ordered: Sequence[PairScore], value_names: Sequence[str], first: str | None) -> str:
    e = html.escape
    heads = ['<th data-kind="text" data-col="name" aria-sort="none">'
             '<button type="button">pair</button></th>',
             '<th data-kind="number" data-better="higher" data-col="size" aria-sort="none">'
             '<button type="button">pixels</button></th>']
    for name in value_names:
        better = "higher" if name in HIGHER_IS_BETTER else "lower"
        sort = ("descending" if better == "lower" else "ascending") if name == first else "none"
        css = ' class="layer"' if name.startswith("perceptual/") else ""
        heads.append(f'<th data-kind="number" data-better="{better}" data-col="{e(name)}"'
                     f'{css} aria-sort="{sort}" title="{e(name)}: '
                     f'{"higher" if better == "higher" else "lower"} is more alike">'
                     f'<button type="button">{e(_header(name))}</button></th>')
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
    numbers = " &middot; ".join(f"{e(_header(n))} {format_value(n, score.values.get(n))}"
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


# --------------------------------------------------------------------------------------------
# the per-frame plot of a video comparison
# --------------------------------------------------------------------------------------------
_PLOT_WIDTH, _PANEL_HEIGHT, _LEFT, _RIGHT, _TOP, _BOTTOM = 880, 150, 64, 40, 26, 26


def _polyline(values: Sequence[float], x_of: Callable[[int], float], y_of: Callable[[float],
              float], css: str, label: str) -> str:
    """An SVG line through the defined values (a NaN breaks the line), with a title."""
    runs: list[list[str]] = [[]]
    for index, value in enumerate(values):
        if value is None or not math.isfinite(value):
            runs.append([])
            continue
        runs[-1].append(f"{x_of(index):.1f},{y_of(value):.1f}")
    lines = "".join(f'<polyline class="{css}" style="fill: none" points="{" ".join(run)}"/>'
                    for run in runs if len(run) > 1)
    dots = "".join(f'<circle class="{css}" cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="2.5">'
                   f"<title>{html.escape(label)}, frame {i}: {v:.4g}</title></circle>"
                   for i, v in enumerate(values) if v is not None and math.isfinite(v))
    return lines + dots


def _panel(top: float, title: str, series: Sequence[tuple[Sequence[float], str, str]],
           names: Sequence[str], x_of: Callable[[int], float]) -> str:
    """One panel of the plot: axes, grid, tick labels and its lines."""
    e = html.escape
    finite = [v for values, _, _ in series for v in values if v is not None and math.isfinite(v)]
    high = max(finite, default=0.0) or 1.0
    bottom = top + _PANEL_HEIGHT

    def y_of(value: float) -> float:
        return bottom - value / high * _PANEL_HEIGHT

    parts = [f'<text class="panel-title" x="{_LEFT}" y="{top - 8}">{e(title)}</text>']
    for fraction in (0.0, 0.5, 1.0):
        y = y_of(high * fraction)
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_PLOT_WIDTH - _RIGHT}" '
                     f'y1="{y:.1f}" y2="{y:.1f}"/><text class="tick" x="{_LEFT - 6}" '
                     f'y="{y + 4:.1f}" text-anchor="end">{high * fraction:.3g}</text>')
    step = max(1, math.ceil(len(names) / 12))
    for index in range(0, len(names), step):
        parts.append(f'<text class="tick" x="{x_of(index):.1f}" y="{bottom + 16}" '
                     f'text-anchor="middle">{e(names[index][-10:])}</text>')
    parts.append(f'<line class="axis" x1="{_LEFT}" x2="{_LEFT}" y1="{top}" y2="{bottom}"/>'
                 f'<line class="axis" x1="{_LEFT}" x2="{_PLOT_WIDTH - _RIGHT}" y1="{bottom}" '
                 f'y2="{bottom}"/>')
    legend_x = _PLOT_WIDTH - _RIGHT
    for values, css, label in reversed(series):
        parts.append(_polyline(values, x_of, y_of, css, label))
        parts.append(f'<text class="legend {css}" x="{legend_x}" y="{top - 8}" '
                     f'text-anchor="end">{e(label)}</text>')
        legend_x -= 8 + 7 * len(label)
    return "".join(parts)


def frame_plot(scores: Sequence[PairScore], metric: str | None, changes_a: Sequence[float],
               changes_b: Sequence[float]) -> str:
    """An inline SVG of a video comparison, frame by frame.

    The top panel shows each frame pair's ``metric`` (e.g. the perceptual distance); the
    bottom one tLP's term ``|LPIPS(b_t, b_{t-1}) - LPIPS(a_t, a_{t-1})|`` with the two changes
    it compares (dashed). The x axis is the frame, labelled with frame names.

    Args:
        scores: The frames, in frame order, with ``values["tlp"]``.
        metric: The value of the top panel (``None``: no top panel).
        changes_a: ``LPIPS(a_t, a_{t-1})`` for ``t = 1..T-1``.
        changes_b: ``LPIPS(b_t, b_{t-1})``.

    Returns:
        An ``<svg>`` element (no script, no external file).
    """
    names = [score.name for score in scores]
    span = _PLOT_WIDTH - _LEFT - _RIGHT

    def x_of(index: int) -> float:
        return _LEFT + (index / max(1, len(names) - 1)) * span

    panels = []
    top = _TOP
    if metric is not None:
        values = [score.values.get(metric, math.nan) for score in scores]
        panels.append(_panel(top, f"{_header(metric)} of each frame pair (A_t vs B_t)",
                             [(values, "metric", _header(metric))], names, x_of))
        top += _PANEL_HEIGHT + _TOP + _BOTTOM
    tlp = [score.values.get("tlp", math.nan) for score in scores]
    nan = [math.nan]
    panels.append(_panel(
        top, "tLP term of each frame: |LPIPS(B_t, B_t-1) - LPIPS(A_t, A_t-1)|",
        [(tlp, "tlp", "tLP term"), (nan + list(changes_a), "change-a", "LPIPS(A_t, A_t-1)"),
         (nan + list(changes_b), "change-b", "LPIPS(B_t, B_t-1)")], names, x_of))
    height = top + _PANEL_HEIGHT + _BOTTOM
    return (f'<svg id="frame-plot" xmlns="http://www.w3.org/2000/svg" width="{_PLOT_WIDTH}" '
            f'height="{height}" viewBox="0 0 {_PLOT_WIDTH} {height}" role="img" '
            f'aria-label="per-frame distance and tLP">' + "".join(panels) + "</svg>")


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
            :func:`~perceptual_loss.apps.compare.compare_videos`. The frames then keep their
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
    _colormap(colormap)
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
    bar = _progress_bar(len(ordered), progress)
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
            maps.append(_shrink_map(mapper(image_a, image_b), thumb_size))
            files.append(names)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    scale = max(float(np.percentile(values, SCALE_PERCENTILE)) for values in maps)
    if not scale > 0:  # identical pairs: nothing to show
        scale = max(float(values.max()) for values in maps) or 1.0
    for values, names in zip(maps, files, strict=True):
        _heatmap_picture(values, scale, colormap).save(out_dir / names["map"])
    _colorbar(colormap).save(assets / "colorbar.png")

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


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    import sys

    return tqdm(total=total, unit="pair", desc="html report", file=sys.stderr, leave=False)
