"""The training loop behind ``perceptual train``: progress, checkpoints, samples, report.

One loop serves every task (denoising, super-resolution, fast style transfer):

- the loss is a weighted mix chosen by a spec such as ``"mse=1,perceptual=0.1"``
  (:mod:`perceptual_loss.apps.train.loss_mix`), computed by :class:`PerceptualLoss` in one
  backbone pass; the tasks that build it are in :mod:`~perceptual_loss.apps.train.restoration`
  and :mod:`~perceptual_loss.apps.train.style`;
- a tqdm progress bar shows the total and each term;
- ``checkpoint.pt`` in the output folder holds model, optimiser, step and loss history, and
  ``resume=True`` continues from it exactly where it stopped;
- ``samples/step_XXXXXX.png`` grids (input / output / target) are written during
  training, ``loss_curve.png`` plots every term;
- at the end PSNR, SSIM and the perceptual distance on held-out images go to
  ``report.md`` and ``report.json``;
- under ``torchrun`` (``WORLD_SIZE > 1``) the same code runs distributed data parallel:
  gloo on CPU, NCCL on GPU, a ``DistributedSampler`` per process, and only rank 0 writes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from perceptual_loss.apps.runtime import (
    DistributedContext,
    advance,
    progress_bar,
    setup_distributed,
    worker_init,
)
from perceptual_loss.apps.train.checkpoints import (
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
)
from perceptual_loss.apps.train.reports import (
    COLUMNS,
    RESTORATION_LEGEND,
    Evaluator,
    final_evaluation,
    format_number,
    plot_loss_curve,
    write_report,
    write_samples,
)
from perceptual_loss.recipe import group_parts

__all__ = ["TrainConfig", "TrainResult", "crops_per_epoch", "fit"]


@dataclass
class TrainConfig:
    """How long and how to train, and where the outputs go.

    Attributes:
        out_dir: Output folder: checkpoint, samples, loss curve, report.
        steps: Total optimisation steps (a resumed run continues up to this number).
        batch_size: Crops per step and process.
        learning_rate: Adam learning rate.
        seed: Seed of the model initialisation and of every crop and noise draw.
        sample_every: Write a sample grid every this many steps (0: only at the end).
        checkpoint_every: Save the checkpoint every this many steps (0: only at the end).
        resume: Continue from ``out_dir/checkpoint.pt``.
        overwrite: Start afresh even if ``out_dir`` holds a checkpoint.
        crops_per_epoch: Virtual epoch length in crops, used by the task functions that
            build the dataset; ``None``: 64 per training image, at least one batch per
            process.
        num_workers: DataLoader worker processes.
        progress: Show the tqdm progress bar (rank 0).
        grad_clip: Clip the gradient norm to this value (``None``: no clipping).
    """

    out_dir: Path
    steps: int = 500
    batch_size: int = 4
    learning_rate: float = 1e-3
    seed: int = 0
    sample_every: int = 100
    checkpoint_every: int = 100
    resume: bool = False
    overwrite: bool = False
    crops_per_epoch: int | None = None
    num_workers: int = 0
    progress: bool = True
    grad_clip: float | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("sample_every", "checkpoint_every", "num_workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other; choose one")


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        step: Steps done in total (including those before a resume).
        history: One dict per step: ``{"step", "loss", <term>: value, ...}``.
        metrics: Held-out evaluation (``{"images": [...], "mean": {...}}``).
        out_dir: The output folder.
        start_step: Step the run started from (``> 0`` after a resume).
    """

    step: int
    history: list[dict[str, float]]
    metrics: dict[str, Any]
    out_dir: Path
    start_step: int = 0

    @property
    def checkpoint(self) -> Path:
        """Path of the checkpoint file."""
        return self.out_dir / CHECKPOINT_NAME


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def fit(
    model: nn.Module,
    loss_fn: nn.Module,
    dataset: Dataset,
    eval_pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig,
    *,
    task: dict[str, Any],
    eval_names: Sequence[str] | None = None,
    evaluate: Evaluator | None = None,
    legend: str = RESTORATION_LEGEND,
    notes: Sequence[str] = (),
    device: torch.device | None = None,
    context: DistributedContext | None = None,
    echo: Callable[[str], None] | None = None,
    columns: Sequence[str] = COLUMNS,
    reference: torch.Tensor | None = None,
) -> TrainResult:
    """Train ``model`` with ``loss_fn`` on ``dataset``; write checkpoint, samples, report.

    Args:
        model: The network; it maps an input batch to an output batch in ``[0, 1]`` of the
            target's shape. It must have a ``config`` dict (see :mod:`.models`).
        loss_fn: ``loss_fn(output, target, return_parts=True) -> (loss, parts)``.
        dataset: Yields ``(input, target)`` pairs; if it has ``set_epoch`` it is called
            every epoch (as :class:`~perceptual_loss.apps.train.data.RestorationDataset` needs).
        eval_pairs: Held-out ``(input, target)`` pairs, scored at the end and shown in the
            sample grids; may be empty.
        config: Steps, batch size, output folder, resume, ...
        task: JSON-able description stored in the checkpoint and report (``{"name":
            "denoise", ...}``); its ``"name"`` heads the report.
        eval_names: Names of the held-out images for the report.
        evaluate: Scores held-out pairs; default
            :func:`~perceptual_loss.apps.train.reports.evaluate_restoration` without a
            perceptual column.
        legend: Text under the report's table explaining its columns.
        notes: Lines stated at the top of the report (e.g. random-weight warnings).
        device: Where to train; default CPU. Under torchrun CUDA becomes
            ``cuda:LOCAL_RANK``.
        context: An existing :class:`DistributedContext`; default: from the environment.
        echo: Prints a line on rank 0 (default ``print``); ``None`` output otherwise.
        columns: Labels of the three columns of the sample and held-out grids.
        reference: A picture shown in every grid row's last column instead of the target
            (the style picture of a style-transfer run).

    Returns:
        The :class:`TrainResult` (on every rank; ``metrics`` is empty on ranks > 0).

    Raises:
        ValueError: For a bad configuration, a checkpoint in ``out_dir`` without
            ``resume``/``overwrite``, ``resume`` without a checkpoint, or a checkpoint of a
            different model.
    """
    config.validate()
    if not hasattr(model, "config"):
        raise TypeError("the model needs a .config dict so checkpoints can rebuild it")
    owned_context = context is None
    context = context or setup_distributed(device or torch.device("cpu"))
    try:
        run = _Run(model, loss_fn, dataset, eval_pairs, config, task, context,
                   context.echo(echo), (tuple(columns), reference))
        run.prepare()
        elapsed = run.train()
        run.save(run.step)
        metrics: dict[str, Any] = {}
        if context.is_main:
            metrics = run.finish(elapsed, eval_names, evaluate, legend, notes)
        context.barrier()
        return TrainResult(run.step, run.history, metrics, run.out_dir, run.start_step)
    finally:
        if owned_context:
            context.close()


class _Run:
    """One training run: its state (model, optimiser, step, history) and its phases."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, dataset: Dataset,
                 eval_pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], config: TrainConfig,
                 task: dict[str, Any], context: DistributedContext,
                 say: Callable[[str], None],
                 grid: tuple[tuple[str, ...], torch.Tensor | None]) -> None:
        self.context, self.config, self.task, self.say = context, config, task, say
        self.columns, self.reference = grid
        self.device = context.device
        self.model = model.to(self.device)
        self.loss_fn = loss_fn.to(self.device)
        self.dataset, self.eval_pairs = dataset, eval_pairs
        self.out_dir = Path(config.out_dir)
        self.checkpoint_path = self.out_dir / CHECKPOINT_NAME
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        self.step = self.start_step = 0
        self.history: list[dict[str, float]] = []

    def prepare(self) -> None:
        """Check the output folder, resume from its checkpoint if asked."""
        config, path = self.config, self.checkpoint_path
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if path.exists() and not (config.resume or config.overwrite):
            raise ValueError(
                f"{path} already exists; pass --resume (resume=True) to continue that run or "
                "--overwrite (overwrite=True) to start again, or choose another output folder"
            )
        if config.resume and not path.exists():
            raise ValueError(f"cannot resume: no checkpoint at {path}; run without --resume "
                             "(resume=True) first")
        if config.resume:
            checkpoint = load_checkpoint(path, map_location=self.device)
            if checkpoint["model_config"] != self.model.config:
                raise ValueError(
                    f"the checkpoint in {self.out_dir} was trained with model "
                    f"{checkpoint['model_config']}, this run builds {self.model.config}; "
                    "resume with the same options or choose another output folder"
                )
            try:
                self.model.load_state_dict(checkpoint["model"])
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            except (RuntimeError, ValueError, KeyError) as error:
                raise ValueError(f"checkpoint {path} does not fit this model or optimiser: "
                                 f"{error}") from error
            self.step = self.start_step = int(checkpoint["step"])
            self.history = list(checkpoint["history"])
            self.say(f"resuming from step {self.start_step} ({path})")
        self.context.barrier()

    def _loader(self) -> tuple[DataLoader, DistributedSampler]:
        config, context = self.config, self.context
        if len(self.dataset) < config.batch_size * context.world_size:
            raise ValueError(
                f"an epoch of {len(self.dataset)} crops is shorter than one batch on every "
                f"process ({config.batch_size} x {context.world_size}); raise crops_per_epoch"
            )
        sampler = DistributedSampler(self.dataset, num_replicas=context.world_size,
                                     rank=context.rank, shuffle=True, seed=config.seed,
                                     drop_last=True)
        loader = DataLoader(self.dataset, batch_size=config.batch_size, sampler=sampler,
                            drop_last=True, num_workers=config.num_workers,
                            worker_init_fn=worker_init if config.num_workers else None,
                            pin_memory=self.device.type == "cuda")
        return loader, sampler

    def _sample_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        pairs = [(_center(degraded, 128, target), _center(target, 128, target))
                 for degraded, target in list(self.eval_pairs)[:4]]
        return pairs or [_first_pair(self.dataset)]

    def save(self, step_done: int) -> None:
        """Write the checkpoint and the loss curve (rank 0)."""
        if not self.context.is_main:
            return
        save_checkpoint(self.checkpoint_path, {
            "task": self.task, "model_config": self.model.config,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "step": step_done, "history": self.history,
            "train": _json_ready(asdict(self.config)),
        })
        plot_loss_curve(self.history, self.out_dir / "loss_curve.png",
                        f"{self.task.get('name')} loss")

    def train(self) -> float:
        """Run the steps up to ``config.steps``; returns the seconds it took."""
        config, context = self.config, self.context
        train_model: nn.Module = self.model
        if context.distributed:
            train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        loader, sampler = self._loader()
        samples = self._sample_pairs()
        epoch, skip = divmod(self.step, len(loader))
        bar = progress_bar(config.steps, enabled=config.progress and context.is_main,
                           description=str(self.task.get("name")), unit="step",
                           initial=min(self.step, config.steps))
        started = time.perf_counter()
        train_model.train()
        try:
            while self.step < config.steps:
                sampler.set_epoch(epoch)
                if hasattr(self.dataset, "set_epoch"):
                    self.dataset.set_epoch(epoch)
                for index, (inputs, targets) in enumerate(loader):
                    if index < skip:
                        continue
                    self._one_step(train_model, inputs, targets)
                    advance(bar, self.history[-1], self.step, config.steps)
                    self._periodic(samples)
                    if self.step >= config.steps:
                        break
                skip = 0
                epoch += 1
        finally:
            bar.close()
        return time.perf_counter() - started

    def _one_step(self, train_model: nn.Module, inputs: torch.Tensor,
                  targets: torch.Tensor) -> None:
        inputs = inputs.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        loss, parts = self.loss_fn(train_model(inputs), targets, return_parts=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        grouped = {name: value.detach().float().mean()
                   for name, value in group_parts(parts).items()}
        record = _record(self.step, loss, grouped, self.context)
        self.history.append(record)
        if not math.isfinite(record["loss"]):
            raise ValueError(f"the loss became {record['loss']} at step {self.step}; lower the "
                             "learning rate or the weights of the loss terms")

    def _periodic(self, samples: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        config, step = self.config, self.step
        if config.sample_every and step % config.sample_every == 0 and self.context.is_main:
            write_samples(self.model, samples, self.out_dir / "samples" / f"step_{step:06d}.png",
                          self.device, self.columns, self.reference)
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            self.save(step)

    def finish(self, elapsed: float, eval_names: Sequence[str] | None,
               evaluate: Evaluator | None, legend: str, notes: Sequence[str]
               ) -> dict[str, Any]:
        """Final samples, held-out evaluation and report (rank 0); returns the metrics."""
        write_samples(self.model, self._sample_pairs(),
                      self.out_dir / "samples" / f"step_{self.step:06d}.png", self.device,
                      self.columns, self.reference)
        metrics = final_evaluation(self.model, self.eval_pairs, eval_names, evaluate,
                                   self.device, self.out_dir, legend, self.columns,
                                   self.reference)
        summary = {
            "task": self.task.get("name"),
            "steps": self.step,
            "resumed from step": self.start_step,
            "processes": self.context.world_size,
            "device": str(self.device),
            "batch size per process": self.config.batch_size,
            "learning rate": self.config.learning_rate,
            "training time this run (s)": round(elapsed, 1),
            "final loss": format_number(self.history[-1]["loss"]) if self.history else "n/a",
            **{key: value for key, value in self.task.items() if key != "name"},
        }
        write_report(self.out_dir, f"perceptual train {self.task.get('name')}", summary,
                     metrics, notes)
        self.say(f"report: {self.out_dir / 'report.md'}")
        return metrics


def _center(image: torch.Tensor, size: int, target: torch.Tensor) -> torch.Tensor:
    """Central crop of ``image`` matching a central ``size`` crop of ``target`` (SR-aware)."""
    factor = target.shape[-1] // image.shape[-1] if image.shape[-1] else 1
    side = max(1, size // max(1, factor))
    height, width = image.shape[-2:]
    crop_h, crop_w = min(height, side), min(width, side)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return image[:, top : top + crop_h, left : left + crop_w]


def _first_pair(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    degraded, target = dataset[0]
    return degraded, target


def _record(
    step: int,
    loss: torch.Tensor,
    grouped: dict[str, torch.Tensor],
    context: DistributedContext,
) -> dict[str, float]:
    names = ["loss", *sorted(grouped)]
    values = torch.stack([loss.detach().float(), *(grouped[name] for name in sorted(grouped))])
    if context.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values = values / context.world_size
    record: dict[str, float] = {"step": float(step)}
    record.update(zip(names, values.cpu().tolist(), strict=True))
    return record


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def crops_per_epoch(config: TrainConfig, images: Sequence[torch.Tensor]) -> int:
    """Crops in a virtual epoch: ``config.crops_per_epoch``, else 64 per image.

    At least one batch for every process (``WORLD_SIZE`` under torchrun).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wanted = config.crops_per_epoch or 64 * len(images)
    return max(wanted, config.batch_size * max(1, world))
