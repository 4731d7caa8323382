"""Style transfer two ways: a fast feed-forward network, or optimising the image itself.

- :func:`train_style` trains a :class:`~perceptual_loss.apps.train.models.TransformerNet` on
  crops of content pictures against one style picture (Johnson et al. 2016): content
  distance on ``relu2_2``, Gram-matrix distance on relu1_2..relu4_3 against Gram
  matrices cached once with :meth:`PerceptualLoss.set_style_target`, and total variation.
  :func:`stylize` applies the resulting checkpoint to new pictures in one forward pass.
- :func:`optimize_image` is the original method of Gatys et al. (2016): start from the
  content picture (or noise) and change its pixels with L-BFGS or Adam until its VGG-19
  features match the content at ``relu4_2`` and the style's Gram matrices at
  relu1_1..relu5_1.

Both use squared distances (``criterion="mse"``) as the papers do.

References:
    Gatys, Ecker, Bethge. Image Style Transfer Using Convolutional Neural Networks.
    CVPR 2016.
    Johnson, Alahi, Fei-Fei. Perceptual Losses for Real-Time Style Transfer and
    Super-Resolution. ECCV 2016.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss import PerceptualLoss
from perceptual_loss.apps.runtime import advance, progress_bar
from perceptual_loss.apps.train.checkpoints import load_checkpoint
from perceptual_loss.apps.train.data import RestorationDataset, make_eval_pairs
from perceptual_loss.apps.train.loop import TrainConfig, TrainResult, crops_per_epoch, fit
from perceptual_loss.apps.train.loss_mix import DEFAULT_STYLE_LAYERS
from perceptual_loss.apps.train.models import TransformerNet, build_model
from perceptual_loss.apps.train.reports import predict
from perceptual_loss.recipe import default_layers, group_parts

__all__ = [
    "GATYS_CONTENT_LAYERS",
    "GATYS_STYLE_LAYERS",
    "JOHNSON_CONTENT_LAYERS",
    "load_style_model",
    "optimize_image",
    "resize_longest",
    "stylize",
    "train_style",
]

#: Content layer of Johnson et al. (VGG-16).
JOHNSON_CONTENT_LAYERS: tuple[str, ...] = ("relu2_2",)
#: Content layer of Gatys et al. (VGG-19).
GATYS_CONTENT_LAYERS: tuple[str, ...] = ("relu4_2",)
#: Style layers of Gatys et al. (VGG-19).
GATYS_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def resize_longest(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize ``(C, H, W)`` so that its longer side is ``size`` (antialiased bilinear).

    Args:
        image: ``(C, H, W)`` in ``[0, 1]``.
        size: Target length of the longer side; ``None`` returns the image unchanged.

    Returns:
        ``(C, H', W')`` in ``[0, 1]`` with ``max(H', W') == size``.
    """
    if size is None:
        return image
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    height, width = image.shape[-2:]
    factor = size / max(height, width)
    new_size = (max(1, round(height * factor)), max(1, round(width * factor)))
    if new_size == (height, width):
        return image
    resized = F.interpolate(
        image.unsqueeze(0), size=new_size, mode="bilinear", align_corners=False, antialias=True
    )
    return resized.squeeze(0).clamp(0.0, 1.0)


def _style_loss(
    style_image: torch.Tensor,
    *,
    backbone: str,
    weights: str | Path | None,
    layers: Sequence[str],
    style_layers: Sequence[str],
    content_weight: float,
    style_weight: float,
    tv_weight: float,
    device: torch.device,
) -> PerceptualLoss:
    for name, value in (
        ("content_weight", content_weight), ("style_weight", style_weight),
        ("tv_weight", tv_weight),
    ):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if style_weight == 0:
        raise ValueError("style_weight is 0: there would be no style to transfer")
    loss_fn = PerceptualLoss(
        backbone,
        tuple(layers) if content_weight > 0 else (),
        weights,
        criterion="mse",
        feature_weight=content_weight,
        style_layers=tuple(style_layers),
        style_weight=style_weight,
        tv_weight=tv_weight,
    ).to(device)
    loss_fn.set_style_target(style_image.unsqueeze(0).to(device))
    return loss_fn


def _style_evaluator(loss_fn: PerceptualLoss) -> Callable[..., list[dict[str, float]]]:
    """Content and style distance of each held-out picture, before and after stylising."""

    @torch.no_grad()
    def evaluate(model: nn.Module, pairs, device: torch.device) -> list[dict[str, float]]:
        rows = []
        for content, _ in pairs:
            output = predict(model, content, device).unsqueeze(0).to(device)
            reference = content.unsqueeze(0).to(device)
            row: dict[str, float] = {}
            for label, image in (("input", reference), ("output", output)):
                _, parts = loss_fn(image, reference, return_parts=True)
                grouped = group_parts(parts)
                for term in ("content", "style"):
                    row[f"{term}_{label}"] = float(grouped.get(term, float("nan")))
            rows.append(row)
        return rows

    return evaluate


STYLE_LEGEND = (
    "Weighted loss terms. `content_*`: feature distance to the content picture "
    "(0 for the unchanged input); `style_*`: Gram-matrix distance to the style picture. "
    "Training trades a little content for much less style distance."
)


def train_style(
    content_images: Sequence[torch.Tensor],
    style_image: torch.Tensor,
    eval_images: Sequence[torch.Tensor],
    eval_names: Sequence[str],
    config: TrainConfig,
    *,
    crop_size: int = 256,
    style_size: int | None = 256,
    content_weight: float = 1.0,
    style_weight: float = 1e5,
    tv_weight: float = 1e-6,
    layers: Sequence[str] | None = None,
    style_layers: Sequence[str] | None = None,
    backbone: str = "vgg16",
    weights: str | Path | None = "imagenet",
    model_options: dict[str, Any] | None = None,
    device: torch.device | None = None,
    notes: Sequence[str] = (),
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a fast style-transfer network for one style picture (Johnson et al. 2016).

    Args:
        content_images: RGB ``(3, H, W)`` pictures in ``[0, 1]`` to crop from.
        style_image: RGB ``(3, H, W)`` style picture in ``[0, 1]``.
        eval_images: Held-out content pictures, stylised and scored at the end.
        eval_names: Their names.
        config: Steps, batch, output folder, resume, ...
        crop_size: Side of the square training crops (256 in the paper).
        style_size: Longer side the style picture is resized to (``None``: as is); the
            scale of the brush strokes follows it.
        content_weight: Weight of the content (feature) distance.
        style_weight: Weight of the Gram-matrix distance.
        tv_weight: Weight of the total variation of the output.
        layers: Content layers; default :data:`JOHNSON_CONTENT_LAYERS`.
        style_layers: Style layers; default relu1_2, relu2_2, relu3_3, relu4_3.
        backbone: Loss network.
        weights: Its weights (``"imagenet"``, ``None`` for random, a path).
        model_options: Extra arguments of :class:`TransformerNet` (``base_channels``,
            ``num_residual``).
        device: Where to train.
        notes: Lines for the top of the report.
        echo: Prints a line (rank 0).

    Returns:
        The :class:`~perceptual_loss.apps.train.loop.TrainResult`; ``checkpoint.pt`` in
        ``config.out_dir`` is what :func:`stylize` applies.
    """
    if style_image.ndim != 3 or style_image.shape[0] != 3:
        raise ValueError(
            f"the style picture must be RGB (3, H, W), got shape {tuple(style_image.shape)}"
        )
    device = device or torch.device("cpu")
    style_small = resize_longest(style_image, style_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = TransformerNet(channels=3, **(model_options or {}))
        loss_fn = _style_loss(
            style_small, backbone=backbone, weights=weights,
            layers=tuple(layers or JOHNSON_CONTENT_LAYERS),
            style_layers=tuple(
                style_layers or default_layers(backbone, DEFAULT_STYLE_LAYERS)
            ),
            content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
            device=device,
        )
    dataset = RestorationDataset(
        content_images, crop_size, None, crops_per_epoch(config, content_images),
        seed=config.seed,
    )
    eval_pairs = make_eval_pairs(eval_images, None, max_size=256)
    task = {
        "name": "style",
        "loss": (
            f"content={content_weight:g} on {','.join(loss_fn.layers)}, "
            f"style={style_weight:g} on {','.join(loss_fn.style_layers)}, tv={tv_weight:g} "
            f"({backbone}, {'random weights' if weights is None else f'weights {weights}'})"
        ),
        "crop size": crop_size,
        "style size": tuple(style_small.shape[-2:]),
    }
    return fit(
        model, loss_fn, dataset, eval_pairs, config, task=task, eval_names=eval_names,
        evaluate=_style_evaluator(loss_fn), legend=STYLE_LEGEND, notes=notes, device=device,
        echo=echo, columns=("content", "stylized", "style"), reference=style_small,
    )


def load_style_model(checkpoint: str | Path, device: torch.device | None = None) -> nn.Module:
    """Rebuild the trained network of a ``perceptual train style`` checkpoint.

    Args:
        checkpoint: ``checkpoint.pt`` or the output folder of the training run.
        device: Where to put the network.

    Returns:
        The network in eval mode.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        ValueError: If it is not a style-transfer checkpoint.
    """
    state = load_checkpoint(checkpoint)
    task = state.get("task", {}).get("name")
    if task != "style":
        raise ValueError(
            f"{checkpoint} was trained by 'perceptual train {task}', not 'train style'; "
            "stylize needs a style-transfer checkpoint"
        )
    model = build_model(state["model_config"])
    model.load_state_dict(state["model"])
    return model.to(device or torch.device("cpu")).eval()


@torch.no_grad()
def stylize(
    model: nn.Module, image: torch.Tensor, max_size: int | None = None
) -> torch.Tensor:
    """Stylise one picture with a trained network.

    Args:
        model: From :func:`load_style_model`.
        image: RGB ``(3, H, W)`` in ``[0, 1]``.
        max_size: Resize so the longer side is at most this (``None``: full size).

    Returns:
        ``(3, H', W')`` stylised picture in ``[0, 1]``.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB picture (3, H, W), got shape {tuple(image.shape)}")
    if max_size is not None and max(image.shape[-2:]) > max_size:
        image = resize_longest(image, max_size)
    device = next(model.parameters()).device
    return model(image.unsqueeze(0).to(device)).squeeze(0).cpu()


def optimize_image(
    content: torch.Tensor,
    style: torch.Tensor,
    *,
    steps: int = 300,
    optimizer: str = "lbfgs",
    learning_rate: float | None = None,
    content_weight: float = 1.0,
    style_weight: float = 1e6,
    tv_weight: float = 0.0,
    layers: Sequence[str] | None = None,
    style_layers: Sequence[str] | None = None,
    backbone: str = "vgg19",
    weights: str | Path | None = "imagenet",
    init: str = "content",
    seed: int = 0,
    device: torch.device | None = None,
    progress: bool = True,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Gatys et al. style transfer: optimise the pixels of the output picture itself.

    Args:
        content: RGB ``(3, H, W)`` content picture in ``[0, 1]``.
        style: RGB ``(3, H', W')`` style picture in ``[0, 1]`` (any size).
        steps: Loss evaluations (L-BFGS) or optimiser steps (Adam).
        optimizer: ``"lbfgs"`` (the paper's choice, fewer steps) or ``"adam"``.
        learning_rate: Default 1.0 for L-BFGS, 0.02 for Adam.
        content_weight: Weight of the content distance.
        style_weight: Weight of the Gram-matrix distance.
        tv_weight: Weight of the total variation (a little smooths high-frequency noise).
        layers: Content layers; default :data:`GATYS_CONTENT_LAYERS`.
        style_layers: Style layers; default :data:`GATYS_STYLE_LAYERS`.
        backbone: Loss network (VGG-19 in the paper).
        weights: Its weights (``"imagenet"``, ``None`` for random, a path).
        init: Start from ``"content"`` or from ``"noise"``.
        seed: Seed of the noise start (and of random weights).
        device: Where to optimise.
        progress: Show a tqdm progress bar.
        callback: Called as ``callback(step, image)`` after every step.

    Returns:
        ``(image, history)``: the ``(3, H, W)`` picture in ``[0, 1]`` and one dict per step
        (``step``, ``loss``, ``content``, ``style``, ``tv``).

    Raises:
        ValueError: For an unknown optimiser or start, non-RGB pictures, ``steps < 1``.
    """
    for name, picture in (("content", content), ("style", style)):
        if not isinstance(picture, torch.Tensor) or picture.ndim != 3 or picture.shape[0] != 3:
            shape = tuple(picture.shape) if isinstance(picture, torch.Tensor) else picture
            raise ValueError(f"the {name} picture must be RGB (3, H, W), got {shape}")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    if init not in ("content", "noise"):
        raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    device = device or torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loss_fn = _style_loss(
            style, backbone=backbone, weights=weights,
            layers=tuple(layers or GATYS_CONTENT_LAYERS),
            style_layers=tuple(style_layers or GATYS_STYLE_LAYERS),
            content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
            device=device,
        )
        start = content.clone() if init == "content" else torch.rand(content.shape)
    target = content.unsqueeze(0).to(device)
    loss_fn.set_target(target)
    image = start.unsqueeze(0).to(device).requires_grad_(True)
    if optimizer == "lbfgs":
        optim: torch.optim.Optimizer = torch.optim.LBFGS(
            [image], lr=learning_rate or 1.0, max_iter=1, history_size=50
        )
    else:
        optim = torch.optim.Adam([image], lr=learning_rate or 0.02)
    history: list[dict[str, float]] = []
    bar = progress_bar(steps, enabled=progress, description=f"style-optimize ({optimizer})",
                       unit="step")

    def closure() -> torch.Tensor:
        with torch.no_grad():
            image.clamp_(0.0, 1.0)
        optim.zero_grad(set_to_none=True)
        loss, parts = loss_fn(image, return_parts=True)
        loss.backward()
        record = {"step": float(len(history) + 1), "loss": float(loss.detach())}
        grouped = group_parts(parts)
        for term in ("content", "style", "tv"):
            record[term] = float(grouped.get(term, 0.0))
        history.append(record)
        return loss

    try:
        for step in range(1, steps + 1):
            optim.step(closure)
            if not torch.isfinite(torch.tensor(history[-1]["loss"])):
                raise ValueError(
                    f"the loss became {history[-1]['loss']} at step {step}; lower the learning "
                    "rate or the style weight"
                )
            advance(bar, history[-1], step, steps)
            if callback is not None:
                with torch.no_grad():
                    callback(step, image.detach().clamp(0, 1).squeeze(0).cpu())
    finally:
        bar.close()
    with torch.no_grad():
        result = image.detach().clamp(0.0, 1.0).squeeze(0).cpu()
    return result, history
