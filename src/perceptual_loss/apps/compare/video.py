"""Two clips compared frame by frame, with TecoGAN's tLP.

With ``--video`` the two sides are clips: folders of frames, or numbered sequences such as
``clip/frame_%04d.png``. Frames are matched by name (by number for a sequence) and put in
frame order; every frame gets the values of an
:class:`~perceptual_loss.apps.compare.scorer.ImageScorer`, and the clips get TecoGAN's tLP
(:func:`perceptual_loss.temporal_lpips`), which also appears per frame as ``tlp``: frame
``t``'s term ``|LPIPS(b_t, b_{t-1}) - LPIPS(a_t, a_{t-1})|`` (none for the first frame), whose
mean over the frames is the clip's tLP (see :func:`compare_videos`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from perceptual_loss.apps.compare.folders import stem_key
from perceptual_loss.apps.compare.results import PairScore
from perceptual_loss.apps.compare.scorer import ImageScorer, load_pair
from perceptual_loss.apps.images.io import list_images
from perceptual_loss.apps.runtime import progress_bar
from perceptual_loss.video import temporal_lpips

__all__ = ["VideoComparison", "compare_videos", "is_sequence_pattern", "match_frames"]

_PATTERN = re.compile(r"%(0?)(\d*)d")


def is_sequence_pattern(path: str | Path) -> bool:
    """Whether ``path`` names a numbered sequence such as ``clip/frame_%04d.png``."""
    return bool(_PATTERN.search(Path(path).name))


def _natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that puts ``frame2`` before ``frame10``."""
    return tuple(int(part) if part.isdigit() else part
                 for part in re.split(r"(\d+)", name))


def _frames_of(source: Path) -> dict[str, Path]:
    """``{frame key: path}`` of a folder of frames or a numbered sequence."""
    if is_sequence_pattern(source):
        folder = source.parent
        if not folder.is_dir():
            raise ValueError(f"folder not found for the sequence {source}")
        match = _PATTERN.search(source.name)
        assert match is not None
        prefix, suffix = source.name[:match.start()], source.name[match.end():]
        width = int(match.group(2) or 0) if match.group(1) else 0
        digits = rf"\d{{{width}}}" if width else r"\d+"
        rule = re.compile(re.escape(prefix) + f"({digits})" + re.escape(suffix) + "$")
        found = {}
        for path in folder.iterdir():
            number = rule.match(path.name)
            if number and path.is_file():
                found[str(int(number.group(1)))] = path
        if not found:
            raise ValueError(f"no frames match {source} (e.g. {source.name % 1})")
        return found
    paths = list_images(source)
    if not paths:
        raise ValueError(f"no images found in {source}")
    return {stem_key(path, source): path for path in paths}


def match_frames(source_a: str | Path, source_b: str | Path
                 ) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair the frames of two clips, in frame order.

    Args:
        source_a: Reference clip: a folder of frames, or a numbered sequence such as
            ``ref/%04d.png`` (``%d`` for any number of digits).
        source_b: Clip to judge, in the same form.

    Returns:
        ``(frames, only_in_a, only_in_b)``: ``(name, path_a, path_b)`` in natural order of the
        names (``f2`` before ``f10``; by number for sequences), and the unmatched names.

    Raises:
        ValueError: No frames, fewer than two matching frames, or names that match nothing.
    """
    frames_a, frames_b = _frames_of(Path(source_a)), _frames_of(Path(source_b))
    common = sorted(set(frames_a) & set(frames_b), key=_natural_key)
    if len(common) < 2:
        raise ValueError(
            f"{len(common)} frame(s) match between {source_a} ({len(frames_a)} frames) and "
            f"{source_b} ({len(frames_b)} frames); a video comparison needs at least 2 frames "
            "matched by name (by number for %d sequences)")
    frames = [(name, frames_a[name], frames_b[name]) for name in common]
    return (frames, sorted(set(frames_a) - set(frames_b), key=_natural_key),
            sorted(set(frames_b) - set(frames_a), key=_natural_key))


@dataclass
class VideoComparison:
    """The result of :func:`compare_videos`.

    Attributes:
        scores: One entry per frame, in frame order; ``values["tlp"]`` is the frame's tLP
            term (NaN for the first frame).
        tlp: TecoGAN's tLP of the clip pair (papers report it x100).
        changes_a: ``LPIPS(a_t, a_{t-1})`` for ``t = 1..T-1``.
        changes_b: ``LPIPS(b_t, b_{t-1})``.
        only_in_a: Frame names without a partner in B (skipped).
        only_in_b: Frame names without a partner in A.
    """

    scores: list[PairScore]
    tlp: float
    changes_a: list[float]
    changes_b: list[float]
    only_in_a: list[str]
    only_in_b: list[str]


def compare_videos(source_a: str | Path, source_b: str | Path, scorer: ImageScorer, *,
                   frames_per_chunk: int = 8, progress: bool = True) -> VideoComparison:
    """Score two clips frame by frame and compute their tLP.

    Frames are read ``frames_per_chunk`` at a time (memory does not grow with the clip's
    length); each chunk is scored by ``scorer`` as one batch, and the LPIPS change between
    consecutive frames of each clip (tLP's inputs) is taken with
    :func:`~perceptual_loss.temporal_lpips` on the chunk plus the frame before it.

    Args:
        source_a: Reference clip: a folder of frames or a numbered sequence (``%04d``).
        source_b: Clip to judge.
        scorer: The per-frame metrics; its LPIPS (or one built like it, see
            :meth:`ImageScorer.temporal_metric`) gives tLP.
        frames_per_chunk: Frames read and scored together, ``>= 1``.
        progress: Show a progress bar on stderr.

    Returns:
        The per-frame scores and the clip's tLP.

    Raises:
        ValueError: The errors of :func:`match_frames`, frames of different sizes, and the
            errors of :meth:`ImageScorer.score`.
    """
    if frames_per_chunk < 1:
        raise ValueError(f"frames_per_chunk must be >= 1, got {frames_per_chunk}")
    frames, only_a, only_b = match_frames(source_a, source_b)
    metric = scorer.temporal_metric()
    scores: list[PairScore] = []
    changes_a: list[float] = []
    changes_b: list[float] = []
    before: tuple[torch.Tensor, torch.Tensor] | None = None
    bar = progress_bar(len(frames), enabled=progress, unit="frame", description="comparing",
                       leave=False)
    try:
        for first in range(0, len(frames), frames_per_chunk):
            chunk = frames[first:first + frames_per_chunk]
            loaded = [load_pair(path_a, path_b) for _, path_a, path_b in chunk]
            size = loaded[0][0].shape
            for (name, path_a, _), (image_a, _) in zip(chunk, loaded, strict=True):
                expected = before[0].shape if before is not None else size
                if image_a.shape != expected:
                    raise ValueError(
                        f"frame {name} ({path_a}) is {image_a.shape[-1]}x{image_a.shape[-2]} "
                        f"with {image_a.shape[0]} channel(s) but the clip's frames are "
                        f"{expected[-1]}x{expected[-2]} with {expected[0]}; a clip's frames "
                        "must all have one size")
            batch_a = torch.stack([a for a, _ in loaded])
            batch_b = torch.stack([b for _, b in loaded])
            try:
                values = scorer.score(batch_a, batch_b)
            except ValueError as error:
                raise ValueError(f"frames {chunk[0][0]}..{chunk[-1][0]}: {error}") from error
            clip_a, clip_b = batch_a, batch_b
            if before is not None:
                clip_a = torch.cat([before[0][None], batch_a])
                clip_b = torch.cat([before[1][None], batch_b])
            tlp_terms = [math.nan] * len(chunk)
            if clip_a.shape[0] > 1:
                with torch.no_grad():
                    _, step_b, step_a = temporal_lpips(
                        clip_b[None].to(scorer.device), clip_a[None].to(scorer.device), metric,
                        return_frames=True)
                step_a, step_b = step_a[0].double().cpu(), step_b[0].double().cpu()
                changes_a.extend(step_a.tolist())
                changes_b.extend(step_b.tolist())
                terms = (step_b - step_a).abs().tolist()
                tlp_terms[len(chunk) - len(terms):] = terms
            before = (batch_a[-1], batch_b[-1])
            for row, (name, path_a, path_b) in enumerate(chunk):
                frame_values = {key: float(value[row]) for key, value in values.items()}
                frame_values["tlp"] = tlp_terms[row]
                scores.append(PairScore(name=name, path_a=str(path_a), path_b=str(path_b),
                                        height=int(size[-2]), width=int(size[-1]),
                                        values=frame_values))
            bar.update(len(chunk))
    finally:
        bar.close()
    tlp = sum(abs(b - a) for a, b in zip(changes_a, changes_b, strict=True)) / len(changes_a)
    return VideoComparison(scores, tlp, changes_a, changes_b, only_a, only_b)
