"""A comparison's results: one pair's scores, means over pairs, JSON and CSV files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PairScore", "format_value", "metric_label", "summarize", "write_csv", "write_json"]


@dataclass
class PairScore:
    """The scores of one image pair.

    Attributes:
        name: The pair's name (file name without suffix, relative to the folder).
        path_a: First image (the reference).
        path_b: Second image (the one judged).
        height: Image height in pixels.
        width: Image width in pixels.
        values: Metric name -> value; per-layer perceptual distances as
            ``"perceptual/<layer>"``. PSNR is ``inf`` for identical images.
    """

    name: str
    path_a: str
    path_b: str
    height: int
    width: int
    values: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """A flat dict: name, paths, size, then the values (for CSV and JSON)."""
        return {
            "name": self.name,
            "a": self.path_a,
            "b": self.path_b,
            "height": self.height,
            "width": self.width,
            **self.values,
        }


def format_value(name: str, value: float | None) -> str:
    """A metric's value as shown in tables: PSNR 2 decimals, SSIM 4, others 4 digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if name == "psnr":
        return f"{value:.2f}"
    if name == "ssim":
        return f"{value:.4f}"
    return f"{value:.4g}"


def metric_label(name: str) -> str:
    """A value's column title: ``psnr (dB)``, ``tLP``, a layer without ``perceptual/``.

    Example:
        >>> [metric_label(n) for n in ("psnr", "tlp", "perceptual/relu2_2", "mse")]
        ['psnr (dB)', 'tLP', 'relu2_2', 'mse']
    """
    label = {"psnr": "psnr (dB)", "tlp": "tLP"}.get(name, name)
    return label.replace("perceptual/", "")


def summarize(scores: Sequence[PairScore]) -> dict[str, float | None]:
    """Mean of each value over the pairs.

    PSNR is averaged over the pairs where it is finite (identical pairs have infinite PSNR);
    it is ``inf`` when every pair is identical. A video's per-frame ``tlp`` is averaged over
    the frames that have one (all but the first), which gives the clip's tLP.

    Args:
        scores: Scores of the pairs.

    Returns:
        Value name -> mean.
    """
    if not scores:
        return {}
    summary: dict[str, float | None] = {}
    for key in scores[0].values:
        values = [score.values[key] for score in scores]
        finite = [value for value in values if math.isfinite(value)]
        if key == "psnr":
            summary[key] = sum(finite) / len(finite) if finite else math.inf
        elif key == "tlp":
            defined = [value for value in values if not math.isnan(value)]
            summary[key] = sum(defined) / len(defined) if defined else None
        else:
            summary[key] = sum(values) / len(values)
    return summary


def _json_number(value: Any) -> Any:
    """JSON numbers: infinite PSNR as the string "inf" (JSON has no infinity), NaN as null.

    NaN is a value a pair does not have, such as the first frame's tLP term.
    """
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return value


def write_json(
    path: str | Path,
    scores: Sequence[PairScore],
    config: dict[str, Any],
    only_in_a: Sequence[str] = (),
    only_in_b: Sequence[str] = (),
    video: dict[str, Any] | None = None,
) -> Path:
    """Write scores, their means, the settings and unmatched names as JSON.

    The document is ``{"config": ..., "summary": {value: mean}, "pairs": [row, ...],
    "unmatched": {"only_in_a": [...], "only_in_b": [...]}}``; an infinite PSNR is ``"inf"``,
    a missing value ``null``. ``video`` (e.g. ``{"tlp": ..., "changes_a": [...]}``) is added
    as ``"video"``.

    Returns:
        The written path.
    """
    document = {
        "config": config,
        "summary": {key: _json_number(value) for key, value in summarize(scores).items()},
        "pairs": [
            {key: _json_number(value) for key, value in score.row().items()} for score in scores
        ],
        "unmatched": {"only_in_a": list(only_in_a), "only_in_b": list(only_in_b)},
    }
    if video is not None:
        document["video"] = video
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_csv(path: str | Path, scores: Sequence[PairScore]) -> Path:
    """Write one row per pair: name, a, b, height, width, then the values (``inf`` as text).

    Returns:
        The written path.

    Raises:
        ValueError: When ``scores`` is empty.
    """
    if not scores:
        raise ValueError("no scores to write")
    rows = [score.row() for score in scores]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
