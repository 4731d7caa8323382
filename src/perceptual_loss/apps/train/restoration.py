"""Image restoration (denoising, super-resolution): clean crops degraded on the fly.

:func:`train_restoration` builds the dataset of random crops and their degraded inputs, the
loss of a :class:`~perceptual_loss.apps.train.loss_mix.LossConfig`, the held-out pairs and the
report's perceptual distance, and runs :func:`~perceptual_loss.apps.train.loop.fit`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from perceptual_loss.apps.train.data import RestorationDataset, make_eval_pairs
from perceptual_loss.apps.train.loop import TrainConfig, TrainResult, crops_per_epoch, fit
from perceptual_loss.apps.train.loss_mix import LossConfig, build_loss, perceptual_distance_module
from perceptual_loss.apps.train.reports import evaluate_restoration

__all__ = ["train_restoration"]


def train_restoration(
    model: nn.Module,
    degradation: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    train_images: Sequence[torch.Tensor],
    eval_images: Sequence[torch.Tensor],
    eval_names: Sequence[str],
    loss_config: LossConfig,
    config: TrainConfig,
    *,
    crop_size: int,
    task: dict[str, Any],
    device: torch.device | None = None,
    notes: Sequence[str] = (),
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train an image-restoration network (denoising, SR) on clean images.

    Crops of ``train_images`` are degraded on the fly to make the inputs; held-out images
    are degraded once with a fixed seed and scored at the end (PSNR, SSIM, perceptual
    distance, for the degraded input and for the output).

    Args:
        model: The network (e.g. :class:`~perceptual_loss.apps.train.models.UNet`).
        degradation: Makes an input from a clean crop (noise, bicubic downscale).
        train_images: Clean ``(C, H, W)`` images in ``[0, 1]``.
        eval_images: Clean held-out images (may be empty).
        eval_names: Their names.
        loss_config: The loss mix.
        config: Steps, batch, output folder, ...
        crop_size: Side of the training crops (target size).
        task: Description stored in the checkpoint and report; needs ``"name"``.
        device: Where to train.
        notes: Lines put at the top of the report.
        echo: Prints a line (rank 0).

    Returns:
        The :class:`TrainResult`.
    """
    dataset = RestorationDataset(
        train_images, crop_size, degradation, crops_per_epoch(config, train_images),
        seed=config.seed,
    )
    eval_pairs = make_eval_pairs(eval_images, degradation, max_size=256, seed=config.seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        loss_fn = build_loss(loss_config)
    distance, reason = perceptual_distance_module(loss_config.backbone, loss_config.weights)
    notes = list(notes) + ([reason] if reason else [])
    if reason and echo is not None:
        echo(f"Warning: {reason}")
    task = {**task, "loss": loss_config.describe(), "crop size": crop_size}
    return fit(
        model, loss_fn, dataset, eval_pairs, config, task=task, eval_names=eval_names,
        evaluate=evaluate_restoration(distance), notes=notes, device=device, echo=echo,
    )
