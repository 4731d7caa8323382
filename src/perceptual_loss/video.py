"""Video clips ``(N, T, C, H, W)``: TecoGAN's tLP metric and a temporal perceptual loss.

A per-frame loss judges how each frame looks, not how the clip moves: a restoration network
can match every frame well and still flicker, because its errors change from frame to frame
while the reference's content changes smoothly. Two tools look at the change between
consecutive frames:

- :func:`temporal_lpips` is TecoGAN's tLP (Chu et al., 2020), the usual temporal perceptual
  metric of video super-resolution: how far the perceptual change between consecutive frames
  of the output is from that of the reference,

      tLP(p, g) = mean_{t=1..T-1} | LPIPS(p_t, p_{t-1}) - LPIPS(g_t, g_{t-1}) |

  one value per clip, in LPIPS units. Papers report it multiplied by 100 ("tLP x100"); the
  function returns the unscaled value.
- :class:`VideoPerceptualLoss` trains with a frame loss plus a flow-free temporal term on the
  same features: the distance between the feature changes ``phi(p_t) - phi(p_{t-1})`` and
  ``phi(g_t) - phi(g_{t-1})`` on the frame loss's content layers.

Both run each frame through the network once: the frame terms and the temporal term share
its feature maps, and a clip is processed a few frames at a time, the last frame's features
carried to the next chunk.

References:
    Chu, Xie, Mayer, Leal-Taixé, Thuerey, "Learning Temporal Coherence via Self-Supervision
    for GAN-based Video Generation", ACM Transactions on Graphics 39(4), 2020 (TecoGAN; tLP).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss._checks import Reduction, check_reduction, check_weight
from perceptual_loss._chunked import _PrecomputedGradient
from perceptual_loss.execution import ChunkSize, check_chunk_size, choose_chunk_size, runs_lean
from perceptual_loss.functional import TORCH_OPS, feature_distance, normalize_channels, reduce
from perceptual_loss.losses import PerceptualLoss
from perceptual_loss.metrics.lpips import LPIPS, UNIT_NORM_EPS
from perceptual_loss.recipe import feature_terms, pixel_terms

__all__ = ["VideoPerceptualLoss", "check_clips", "temporal_lpips"]

#: What papers multiply tLP by when they report it ("tLP x100").
TLP_REPORT_SCALE = 100.0

FrameMetric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_clips(prediction: object, target: object, *, min_frames: int = 2
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that two clips are ``(N, T, C, H, W)`` tensors of one shape with enough frames.

    Values are left to the frame loss or metric, which knows the range.

    Raises:
        TypeError: Not tensors.
        ValueError: Another number of dimensions (4D images get a hint), different shapes,
            or fewer than ``min_frames`` frames.
    """
    for name, clip in (("prediction", prediction), ("target", target)):
        if not isinstance(clip, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor clip (N, T, C, H, W); got "
                            f"{type(clip).__name__}")
        if clip.ndim != 5:
            hint = (" For one clip of T frames (T, C, H, W) use clip[None]; for a batch of "
                    "images use the image loss itself." if clip.ndim == 4 else "")
            raise ValueError(f"{name} must be a clip (N, T, C, H, W); got shape "
                             f"{tuple(clip.shape)}.{hint}")
    assert isinstance(prediction, torch.Tensor) and isinstance(target, torch.Tensor)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target "
                         f"{tuple(target.shape)} must have the same (N, T, C, H, W) shape")
    if prediction.shape[1] < min_frames:
        raise ValueError(f"the clips have {prediction.shape[1]} frame(s); the temporal term "
                         f"compares consecutive frames and needs at least {min_frames}")
    return prediction, target


def _frames(clip: torch.Tensor) -> torch.Tensor:
    """``(N, T, C, H, W) -> (N * T, C, H, W)``: frame ``t`` of clip ``n`` is row ``n * T + t``."""
    return clip.reshape(-1, *clip.shape[2:])


def _per_frame(maps: torch.Tensor, n: int, frames: int) -> torch.Tensor:
    """Feature maps of ``n * frames`` images -> ``(n, frames, r, C, h, w)``.

    ``r`` is 1, or the channels a ``per_channel`` extractor stacked per image.
    """
    return maps.view(n, frames, -1, *maps.shape[1:])


def _chunks(frames: int, size: int | None) -> list[slice]:
    size = frames if size is None else max(1, size)
    return [slice(first, min(first + size, frames)) for first in range(0, frames, size)]


def _check_frames_per_chunk(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"frames_per_chunk must be a positive int or None; got {value!r}")
    return value


# ------------------------------------------------------------------------------------- tLP
@functools.lru_cache(maxsize=4)
def _default_metric(device: str) -> LPIPS:
    return LPIPS("alex", reduction="none").to(device)


def temporal_lpips(prediction: torch.Tensor, target: torch.Tensor,
                   metric: LPIPS | FrameMetric | None = None, *,
                   frames_per_chunk: int | None = None,
                   return_frames: bool = False
                   ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TecoGAN's tLP: how differently the output and the reference change from frame to frame.

    ``tLP = mean_{t=1..T-1} |LPIPS(p_t, p_{t-1}) - LPIPS(g_t, g_{t-1})|`` per clip. Papers
    report it x100 (:data:`TLP_REPORT_SCALE`); this returns the unscaled value, in LPIPS
    units. Lower is better; a clip that changes exactly as its reference gives 0.

    With an :class:`~perceptual_loss.LPIPS` metric each frame goes through its trunk once:
    the unit-length features of frame ``t`` serve both pairs ``(t-1, t)`` and ``(t, t+1)``.
    Any other callable (or an LPIPS whose frames are cut into tiles) is called on the
    stacked pairs of consecutive frames, so each frame is run twice.

    Args:
        prediction: Output clips ``(N, T, C, H, W)``, ``T >= 2``, in the metric's
            ``input_range``.
        target: Reference clips, same shape.
        metric: An :class:`~perceptual_loss.LPIPS` (its net, heads, range and channel mode
            apply; its ``reduction`` is ignored), or any callable ``(B, C, H, W) x 2 -> (B,)``
            such as :class:`~perceptual_loss.DISTS`. ``None``: ``LPIPS("alex")`` with the
            official ImageNet AlexNet file (see :mod:`perceptual_loss.weights`), built once per
            device.
        frames_per_chunk: Run at most this many frames of each clip through the trunk at
            once (bounded memory for long clips; same values). ``None``: every frame at once.
        return_frames: Also return the per-frame LPIPS changes of both clips.

    Returns:
        ``(N,)`` float32 tLP values; with ``return_frames=True`` also the ``(N, T-1)``
        distances ``LPIPS(p_t, p_{t-1})`` and ``LPIPS(g_t, g_{t-1})`` for ``t = 1..T-1``.

    Raises:
        ValueError: Not ``(N, T, C, H, W)`` clips of one shape with ``T >= 2``, a spatial
            LPIPS, a callable that does not return one value per pair, and the metric's own
            input errors (range, size, channels).

    Example:
        >>> metric = LPIPS("alex", weights=None)  # random trunk: for illustration only
        >>> g = torch.Generator().manual_seed(0)
        >>> clip = torch.rand(1, 4, 3, 32, 32, generator=g)
        >>> temporal_lpips(clip, clip, metric)
        tensor([0.])

    References:
        Chu et al., "Learning Temporal Coherence via Self-Supervision for GAN-based Video
        Generation", ACM TOG 2020.
    """
    prediction, target = check_clips(prediction, target)
    frames_per_chunk = _check_frames_per_chunk(frames_per_chunk)
    if metric is None:
        metric = _default_metric(str(prediction.device))
    if isinstance(metric, LPIPS):
        if metric.spatial:
            raise ValueError("temporal_lpips needs one value per frame pair; pass an LPIPS "
                             "built with spatial=False")
        metric.extractor.check_pair(_frames(prediction), _frames(target))
        height, width = prediction.shape[-2:]
        if not metric.tiler.needed(height, width):
            changes_p, changes_g = _lpips_changes(metric, prediction, target, frames_per_chunk)
        else:
            changes_p, changes_g = _pairwise_changes(metric, prediction, target)
    elif callable(metric):
        changes_p, changes_g = _pairwise_changes(metric, prediction, target)
    else:
        raise TypeError(f"metric must be an LPIPS or a callable (B, C, H, W) x 2 -> (B,); got "
                        f"{type(metric).__name__}")
    value = (changes_p - changes_g).abs().mean(dim=1)
    return (value, changes_p, changes_g) if return_frames else value


def _pairwise_changes(metric: FrameMetric, prediction: torch.Tensor, target: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``metric(x_t, x_{t-1})`` for both clips, ``(N, T-1)`` each, from stacked pairs."""
    n, frames = prediction.shape[:2]
    changes = []
    for clip in (prediction, target):
        later, earlier = _frames(clip[:, 1:]), _frames(clip[:, :-1])
        value = metric(later, earlier)
        if not isinstance(value, torch.Tensor) or value.shape != (n * (frames - 1),):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
            raise ValueError(f"the metric must return one value per pair, shape "
                             f"({n * (frames - 1)},); got {shape}. Build it with "
                             "reduction='none'")
        changes.append(value.float().view(n, frames - 1))
    return changes[0], changes[1]


def _lpips_changes(metric: LPIPS, prediction: torch.Tensor, target: torch.Tensor,
                   frames_per_chunk: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """LPIPS between consecutive frames of each clip, every frame through the trunk once."""
    n, frames = prediction.shape[:2]
    heads = [getattr(metric, f"head{index}") for index in range(len(metric.layers))]
    changes = []
    for clip in (prediction, target):
        previous: dict[str, torch.Tensor] = {}  # unit features of the frame before the chunk
        per_chunk = []
        for rows in _chunks(frames, frames_per_chunk):
            part = clip[:, rows]
            count = part.shape[1]
            total: torch.Tensor | int = 0
            stream = metric.extractor.stream(_frames(part), check=False)
            for (layer, maps), head in zip(stream, heads, strict=True):
                with torch.autocast(clip.device.type, enabled=False):
                    unit = _per_frame(normalize_channels(maps, UNIT_NORM_EPS), n, count)
                    del maps
                    joined = unit if layer not in previous else torch.cat(
                        [previous[layer], unit], dim=1)
                    previous[layer] = unit[:, -1:]
                    step = joined[:, 1:] - joined[:, :-1]  # (n, pairs, r, C, h, w)
                    pairs, r = step.shape[1], step.shape[2]
                    squared = step.reshape(-1, *step.shape[3:]).square()
                    weighted = F.conv2d(squared, head.to(squared.dtype))  # heads weigh channels
                    total = total + weighted.mean(dim=(1, 2, 3)).view(n, pairs, r).mean(dim=2)
                del unit, joined, step, squared, weighted
            per_chunk.append(total)
        changes.append(torch.cat(per_chunk, dim=1))  # type: ignore[arg-type]
    return changes[0], changes[1]


# --------------------------------------------------------------------- the temporal loss
@dataclass
class _Totals:
    """Per-clip sums over the frames seen so far, ``{name: (N,)}``."""

    frame: dict[str, torch.Tensor] = field(default_factory=dict)
    temporal: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, into: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
        into[name] = into[name] + value if name in into else value


class VideoPerceptualLoss(nn.Module):
    """A frame loss on every frame of a clip plus a flow-free temporal perceptual term.

    For clips ``p, g`` of ``T`` frames and the frame loss's content layers ``l`` (weights
    ``w_l``, criterion ``d``, features ``phi_l``):

        loss = mean_t frame_loss(p_t, g_t)
             + temporal_weight * mean_{t=1..T-1} sum_l w_l *
               d(phi_l(p_t) - phi_l(p_{t-1}), phi_l(g_t) - phi_l(g_{t-1}))

    ``phi_l`` are the maps the content term compares (unit-length over channels when the frame
    loss has ``normalize_features=True``). The temporal term is zero when the output changes
    from frame to frame exactly as the reference does, whatever each frame's own error: it
    penalises flicker (errors that change over time) and missing or invented motion, which a
    per-frame loss cannot see. It uses no optical flow: the change is taken at the same
    position in both frames, so it does not align moving content, and large motion makes it
    compare changes of different objects; ``docs/video.md`` says more.

    Each frame goes through the trunk once; its maps serve the frame terms and the two
    temporal differences it takes part in. A training step runs a few frames of each clip at
    a time (``frames_per_chunk``), takes each chunk's input gradient at once and carries the
    last frame's features to the next chunk, so memory does not grow with ``T``.

    Args:
        frame_loss: A :class:`~perceptual_loss.PerceptualLoss` with content layers: its
            recipe (layers, layer weights, criterion, style, pixel, SSIM and TV terms, range)
            gives the frame terms and the temporal term's layers, weights and criterion. Not
            one with ``tile_size`` when frames are large enough to be tiled.
        temporal_weight: Weight of the temporal term, ``>= 0``; ``0`` gives the mean frame
            loss.
        reduction: ``"none"`` (per clip, ``(N,)``), ``"mean"`` or ``"sum"`` over the clips;
            ``None``: the frame loss's.
        frames_per_chunk: Frames of each clip per trunk pass. ``"auto"`` (default): on CPU a
            training step takes about one 256x256 image's pixels per pass (the frame loss's
            device rule, :mod:`perceptual_loss.execution`), otherwise every frame at once;
            ``None``: every frame at once; an int: that many.

    Shape:
        - prediction, target: ``(N, T, C, H, W)``, ``T >= 2`` (``T >= 1`` with
          ``temporal_weight=0``), values in the frame loss's ``input_range``.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> frame_loss = PerceptualLoss("vgg11", layers=("relu1_1", "relu2_1"), weights=None)
        >>> loss_fn = VideoPerceptualLoss(frame_loss, temporal_weight=0.5)
        >>> g = torch.Generator().manual_seed(0)
        >>> clip = torch.rand(2, 3, 3, 16, 16, generator=g)
        >>> loss, parts = loss_fn(clip, clip.flip(1), return_parts=True)
        >>> sorted(parts)
        ['content/relu1_1', 'content/relu2_1', 'temporal/relu1_1', 'temporal/relu2_1']
    """

    def __init__(self, frame_loss: PerceptualLoss, temporal_weight: float = 1.0, *,
                 reduction: Reduction | None = None,
                 frames_per_chunk: ChunkSize = "auto") -> None:
        super().__init__()
        if not isinstance(frame_loss, PerceptualLoss):
            raise TypeError(f"frame_loss must be a PerceptualLoss (the temporal term uses its "
                            f"layers, weights and criterion); got {type(frame_loss).__name__}")
        if frame_loss.extractor is None or not frame_loss.layers:
            raise ValueError("frame_loss has no content layers; give it some, e.g. "
                             "PerceptualLoss(layers=('relu2_2', 'relu3_3'))")
        self.frame_loss = frame_loss
        self.temporal_weight = check_weight("temporal_weight", temporal_weight)
        self.reduction: Reduction = check_reduction(
            frame_loss.reduction if reduction is None else reduction)
        self.frames_per_chunk = check_chunk_size(frames_per_chunk)

    @property
    def layers(self) -> tuple[str, ...]:
        """The content layers of the frame loss, where the temporal term is taken."""
        return self.frame_loss.layers

    def train(self, mode: bool = True) -> VideoPerceptualLoss:
        """Set the module's flag; the frozen trunk stays in eval mode."""
        super().train(mode)
        self.frame_loss.train(mode)
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, *,
                return_parts: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Compute the loss.

        Args:
            prediction: ``(N, T, C, H, W)`` in the frame loss's ``input_range``.
            target: Same shape.
            return_parts: Also return each term's weighted contribution (detached, reduced
                like the loss; they sum to it): the frame loss's terms averaged over frames
                (``content/<layer>``, ``style/<layer>``, ``pixel/mse``, ...) and
                ``temporal/<layer>``.

        Returns:
            The loss, or ``(loss, parts)`` with ``return_parts=True``.
        """
        prediction, target = check_clips(prediction, target,
                                         min_frames=2 if self.temporal_weight else 1)
        fx = self.frame_loss.extractor
        assert fx is not None
        fx.check_pair(_frames(prediction), _frames(target))  # shapes, size, range: once
        tiler = self.frame_loss.tiler
        if tiler is not None and tiler.needed(*prediction.shape[-2:]):
            raise ValueError(f"frames of {prediction.shape[-1]}x{prediction.shape[-2]} would be "
                             f"tiled (tile_size={tiler.tile_size}); VideoPerceptualLoss needs "
                             "whole frames: build the frame loss without tile_size or crop")
        style = self.frame_loss._cached_style
        if style is not None and any(g.shape[0] != 1 for g in style.values()):
            raise ValueError("the frame loss caches a style target of several images; cache "
                             "one style image (set_style_target(image[:1])) for video")
        n, frames = prediction.shape[:2]
        target_grad = target.requires_grad and torch.is_grad_enabled()
        needs_grad = torch.is_grad_enabled() and (prediction.requires_grad or target_grad)
        lean = runs_lean(fx.memory)
        chunk = self._chunk_frames(prediction, needs_grad, lean)
        eager = needs_grad and lean and chunk is not None and chunk < frames and not target_grad
        if eager:
            totals, total = self._eager(prediction, target, chunk)
        else:
            totals = self._plain(prediction, target, chunk)
            total = None
        parts = self._parts(totals, frames)
        if total is None:
            total = torch.stack(list(parts.values())).sum(0)
        loss = reduce(total, self.reduction)
        if not return_parts:
            return loss
        return loss, {name: reduce(value.detach(), self.reduction)
                      for name, value in parts.items()}

    def _chunk_frames(self, prediction: torch.Tensor, needs_grad: bool, lean: bool
                      ) -> int | None:
        """Frames of each clip per trunk pass (``None``: all)."""
        n, frames = prediction.shape[:2]
        if self.frames_per_chunk != "auto":
            return self.frames_per_chunk  # type: ignore[return-value]
        rows = choose_chunk_size("auto", prediction.device, needs_grad=needs_grad,
                                 plain=not lean, batch=n * frames,
                                 pixels=prediction.shape[-2] * prediction.shape[-1])
        return None if rows is None else max(1, rows // n)

    def _parts(self, totals: _Totals, frames: int) -> dict[str, torch.Tensor]:
        """Per-clip sums -> each term's weighted per-clip contribution."""
        weights = dict(zip(self.frame_loss.recipe.layers, self.frame_loss.recipe.layer_weights,
                           strict=True))
        parts = {name: value / frames for name, value in totals.frame.items()}
        if self.temporal_weight:
            for layer, value in totals.temporal.items():
                parts[f"temporal/{layer}"] = (self.temporal_weight * weights[layer]
                                              * value / (frames - 1))
        return parts

    def _objective(self, frame: dict[str, torch.Tensor], temporal: dict[str, torch.Tensor],
                   frames: int) -> torch.Tensor:
        """A chunk's contribution to the sum over clips of the loss (for its gradient)."""
        return torch.stack(list(self._parts(_Totals(frame, temporal), frames).values())).sum()

    def _chunk_terms(self, prediction: torch.Tensor, target: torch.Tensor,
                     previous: dict[str, tuple[torch.Tensor, torch.Tensor]],
                     last: dict[str, tuple[torch.Tensor, torch.Tensor]]
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per-clip sums of the frame terms and temporal distances of frames ``prediction``.

        Args:
            prediction: ``(N, k, C, H, W)``, the chunk's frames.
            target: Same shape.
            previous: ``{layer: (phi(p), phi(g))}`` of the frame before the chunk, each
                ``(N, 1, r, C_l, h, w)``; empty for the first chunk.
            last: Filled with the same for the chunk's last frame.

        Returns:
            ``({frame term: (N,)}, {layer: (N,)})``: sums over the chunk's frames and over its
            consecutive pairs (including the pair across the chunk border).
        """
        recipe, fx = self.frame_loss.recipe, self.frame_loss.extractor
        assert fx is not None
        n, count = prediction.shape[:2]
        p_rows, g_rows = _frames(prediction), _frames(target)
        temporal: dict[str, torch.Tensor] = {}
        content = set(recipe.layers) if self.temporal_weight else set()

        def paired() -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
            target_stream = fx.stream(g_rows, "target", check=False)
            for layer, p in fx.stream(p_rows, "prediction", check=False):
                with torch.set_grad_enabled(torch.is_grad_enabled() and g_rows.requires_grad):
                    _, g = next(target_stream)
                if layer in content:
                    temporal[layer] = self._temporal(layer, p, g, n, count, previous, last)
                yield layer, p, g
                del p, g

        terms = feature_terms(recipe, paired(), TORCH_OPS, p_rows.shape[0],
                              self.frame_loss._cached_style)
        if recipe.has_pixel_terms:
            terms.update(pixel_terms(recipe, p_rows, g_rows, TORCH_OPS))
        frame = {name: value.view(n, count).sum(dim=1) for name, value in terms.items()}
        return frame, temporal

    def _temporal(self, layer: str, p: torch.Tensor, g: torch.Tensor, n: int, count: int,
                  previous: dict[str, tuple[torch.Tensor, torch.Tensor]],
                  last: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Sum over the chunk's consecutive pairs of ``d(delta phi(p), delta phi(g))``, ``(N,)``."""
        recipe = self.frame_loss.recipe
        if recipe.normalize_features:
            p, g = TORCH_OPS.normalize(p), TORCH_OPS.normalize(g)
        p, g = _per_frame(p, n, count), _per_frame(g, n, count)
        last[layer] = (p[:, -1:], g[:, -1:])
        if layer in previous:
            p = torch.cat([previous[layer][0], p], dim=1)
            g = torch.cat([previous[layer][1], g], dim=1)
        pairs, r = p.shape[1] - 1, p.shape[2]
        if pairs == 0:
            return p.new_zeros(n, dtype=torch.float32)
        change_p = (p[:, 1:] - p[:, :-1]).reshape(-1, *p.shape[3:])
        change_g = (g[:, 1:] - g[:, :-1]).reshape(-1, *g.shape[3:])
        distance = feature_distance(change_p, change_g, recipe.criterion,  # type: ignore[arg-type]
                                    eps=recipe.charbonnier_eps)
        return distance.view(n, pairs, r).mean(dim=2).sum(dim=1)

    def _plain(self, prediction: torch.Tensor, target: torch.Tensor, chunk: int | None
               ) -> _Totals:
        """All chunks with ordinary autograd (or none): the graph spans the clip."""
        totals = _Totals()
        previous: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for rows in _chunks(prediction.shape[1], chunk):
            last: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            frame, temporal = self._chunk_terms(prediction[:, rows], target[:, rows], previous,
                                                last)
            for name, value in frame.items():
                totals.add(totals.frame, name, value)
            for name, value in temporal.items():
                totals.add(totals.temporal, name, value)
            previous = last
        return totals

    def _eager(self, prediction: torch.Tensor, target: torch.Tensor, chunk: int
               ) -> tuple[_Totals, torch.Tensor]:
        """Chunks whose input gradients are taken during the forward (bounded memory).

        The pair across a chunk border depends on the last frame of the chunk before, whose
        features enter this chunk as leaves. That chunk's backward waits until this chunk
        gives the gradient of those leaves (a backward through the distance only, not the
        trunk); then it runs once with it. So at most two chunks' graphs are alive, and every
        frame goes through the trunk forward and backward once.
        """
        frames = prediction.shape[1]
        gradient = torch.empty_like(prediction)  # every frame is written below
        totals = _Totals()
        previous: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        pending: tuple[torch.Tensor, torch.Tensor, slice, dict[str, torch.Tensor]] | None = None
        for rows in _chunks(frames, chunk):
            x = prediction[:, rows].detach().requires_grad_()
            last: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            with torch.enable_grad():
                frame, temporal = self._chunk_terms(x, target[:, rows], previous, last)
                objective = self._objective(frame, temporal, frames)
                if pending is not None:
                    leaves = {layer: pair[0] for layer, pair in previous.items()}
                    earlier_objective, earlier_x, earlier_rows, earlier_last = pending
                    if leaves:  # the border pair's gradient w.r.t. the earlier frame
                        objective.backward(inputs=list(leaves.values()), retain_graph=True)
                        border = sum((earlier_last[layer] * leaf.grad).sum()
                                     for layer, leaf in leaves.items() if leaf.grad is not None)
                        earlier_objective = earlier_objective + border
                    earlier_objective.backward(inputs=[earlier_x])
                    gradient[:, earlier_rows] = earlier_x.grad
                    del earlier_objective, earlier_x, earlier_last, leaves
            for name, value in frame.items():
                totals.add(totals.frame, name, value.detach())
            for name, value in temporal.items():
                totals.add(totals.temporal, name, value.detach())
            pending = (objective, x, rows, {layer: pair[0] for layer, pair in last.items()})
            # the next chunk sees this chunk's last frame as leaves (prediction) and constants
            previous = {layer: (p.detach().requires_grad_(), g.detach())
                        for layer, (p, g) in last.items()}
            del frame, temporal, objective, x, last
        assert pending is not None
        with torch.enable_grad():
            pending[0].backward(inputs=[pending[1]])
        gradient[:, pending[2]] = pending[1].grad
        parts = self._parts(totals, frames)
        total = torch.stack(list(parts.values())).sum(0)
        return totals, _PrecomputedGradient.apply(prediction, total, gradient)

    def extra_repr(self) -> str:
        return (f"temporal_weight={self.temporal_weight}, reduction={self.reduction!r}, "
                f"frames_per_chunk={self.frames_per_chunk!r}")
