"""The per-frame plot of a video comparison: an inline SVG, no script, no plotting library."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence

from perceptual_loss.apps.compare.results import PairScore, metric_label

__all__ = ["frame_plot"]

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
        panels.append(_panel(top, f"{metric_label(metric)} of each frame pair (A_t vs B_t)",
                             [(values, "metric", metric_label(metric))], names, x_of))
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
