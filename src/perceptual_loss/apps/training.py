"""The training loop behind ``perceptual train``: loss mix, progress, checkpoints, report.

One loop serves every task (denoising, super-resolution, fast style transfer):

- the loss is a weighted mix chosen by a spec such as ``"mse=1,perceptual=0.1"``
  (:func:`parse_loss_spec`, :func:`build_loss`), computed by :class:`PerceptualLoss` in one
  backbone pass;
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

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from perceptual_loss import DEFAULT_LAYERS, PerceptualLoss

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_STYLE_LAYERS",
    "LOSS_TERMS",
    "DistributedContext",
    "LossConfig",
    "TrainConfig",
    "TrainResult",
    "build_loss",
    "default_layers_for",
    "evaluate_restoration",
    "fit",
    "load_checkpoint",
    "parse_loss_spec",
    "perceptual_distance_module",
    "plot_loss_curve",
    "psnr",
    "setup_distributed",
    "ssim",
    "train_restoration",
]

#: Names accepted in a loss spec, and what each weighs.
LOSS_TERMS: dict[str, str] = {
    "mse": "mean squared error on pixels",
    "l1": "mean absolute error on pixels",
    "perceptual": "feature (content) distance on the chosen layers",
    "style": "Gram-matrix (style) distance on the style layers",
    "ssim": "1 - SSIM on pixels",
    "tv": "total variation of the output (smoothness)",
}
#: Layers whose Gram matrices carry the style (Johnson et al. 2016).
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
#: File name of the checkpoint inside the output folder.
CHECKPOINT_NAME = "checkpoint.pt"
_CHECKPOINT_FORMAT = "perceptual-loss/train-checkpoint-v1"


def parse_loss_spec(spec: str) -> dict[str, float]:
    """Parse a loss mix such as ``"mse=1,perceptual=0.1,style=1e5,tv=1e-6"``.

    Args:
        spec: Comma-separated ``term=weight`` pairs; terms are the keys of
            :data:`LOSS_TERMS`. A bare term means weight 1 (``"perceptual"``).

    Returns:
        ``{term: weight}`` with every weight finite and ``>= 0`` and at least one ``> 0``.

    Raises:
        ValueError: For an unknown term, a repeated term, a weight that is not a
            non-negative number, or no positive weight at all.

    Example:
        >>> parse_loss_spec("mse=1, perceptual=0.1")
        {'mse': 1.0, 'perceptual': 0.1}
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"a loss spec is 'term=weight,...' with terms {', '.join(LOSS_TERMS)}; "
            f"got {spec!r}"
        )
    weights: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, has_weight, value = item.partition("=")
        name = name.strip().lower()
        if name not in LOSS_TERMS:
            raise ValueError(
                f"unknown loss term {name!r} in {spec!r}; expected some of "
                f"{', '.join(LOSS_TERMS)} (e.g. 'mse=1,perceptual=0.1')"
            )
        if name in weights:
            raise ValueError(f"loss term {name!r} appears twice in {spec!r}")
        try:
            weight = float(value) if has_weight else 1.0
        except ValueError:
            raise ValueError(
                f"weight of {name!r} in {spec!r} is not a number: {value.strip()!r}"
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {weight}")
        weights[name] = weight
    if not any(weight > 0 for weight in weights.values()):
        raise ValueError(f"loss spec {spec!r} has no term with a positive weight")
    return weights


@dataclass
class LossConfig:
    """What the training loss is made of.

    Attributes:
        terms: ``{term: weight}`` as returned by :func:`parse_loss_spec`.
        layers: Content layers of the ``perceptual`` term; ``None``: the library default
            (relu1_2, relu2_2, relu3_3, relu4_3).
        style_layers: Layers of the ``style`` term; ``None``: :data:`DEFAULT_STYLE_LAYERS`.
        backbone: Backbone name (``"vgg16"``, ``"vgg19"``, ...).
        weights: Backbone weights as ``PerceptualLoss`` takes them (``"imagenet"``,
            ``None`` for random, a path, a registry key).
    """

    terms: dict[str, float]
    layers: tuple[str, ...] | None = None
    style_layers: tuple[str, ...] | None = None
    backbone: str = "vgg16"
    weights: str | Path | None = "imagenet"

    @property
    def needs_backbone(self) -> bool:
        """Whether a term needs CNN features (``perceptual`` or ``style`` > 0)."""
        return self.terms.get("perceptual", 0.0) > 0 or self.terms.get("style", 0.0) > 0

    def describe(self) -> str:
        """Human-readable summary, e.g. ``mse=1, perceptual=0.1 (vgg16, random weights)``."""
        mix = ", ".join(f"{name}={weight:g}" for name, weight in self.terms.items())
        if not self.needs_backbone:
            return mix
        weights = "random weights" if self.weights is None else f"weights {self.weights}"
        return f"{mix} ({self.backbone}, {weights})"


def default_layers_for(backbone: str, preferred: Sequence[str] = DEFAULT_LAYERS) -> tuple[str, ...]:
    """``preferred`` layers if the backbone has them all, else the last ReLU of blocks 1-4.

    VGG-16/19 have relu1_2, relu2_2, relu3_3, relu4_3; VGG-11 and VGG-13 have fewer
    convolutions per block, so they get their own last ReLU of each block instead.

    Args:
        backbone: Backbone name.
        preferred: Layers to use when they all exist.

    Returns:
        Canonical layer names of ``backbone``.

    Example:
        >>> default_layers_for("vgg11")
        ('relu1_1', 'relu2_1', 'relu3_2', 'relu4_2')
    """
    from perceptual_loss import get_backbone

    names = get_backbone(backbone).layer_names
    if all(name in names for name in preferred):
        return tuple(preferred)
    last_relu: dict[str, str] = {}
    for name in names:
        if name.startswith("relu"):
            last_relu[name[4:].split("_")[0]] = name
    return tuple(last_relu[block] for block in ("1", "2", "3", "4") if block in last_relu)


def build_loss(config: LossConfig) -> PerceptualLoss:
    """Build the :class:`PerceptualLoss` that computes a :class:`LossConfig`'s mix.

    Args:
        config: Terms, layers, backbone and weights.

    Returns:
        A loss module; call it as ``loss_fn(prediction, target, return_parts=True)``.
        With no ``perceptual``/``style`` term no backbone is built at all.

    Raises:
        ValueError: For unknown layers, backbones or weights (from the library).
        perceptual_loss.weights.WeightsNotFoundError: If ImageNet weights are asked for
            but cannot be found or downloaded.
    """
    terms = config.terms
    content = terms.get("perceptual", 0.0)
    style = terms.get("style", 0.0)
    kwargs: dict[str, Any] = {
        "backbone": config.backbone,
        "weights": config.weights,
        "pixel_mse": terms.get("mse", 0.0),
        "pixel_l1": terms.get("l1", 0.0),
        "ssim_weight": terms.get("ssim", 0.0),
        "tv_weight": terms.get("tv", 0.0),
    }
    if content > 0:
        kwargs["layers"] = (
            tuple(config.layers) if config.layers else default_layers_for(config.backbone)
        )
        kwargs["feature_weight"] = content
    else:
        kwargs["layers"] = ()
    if style > 0:
        kwargs["style_layers"] = tuple(
            config.style_layers or default_layers_for(config.backbone, DEFAULT_STYLE_LAYERS)
        )
        kwargs["style_weight"] = style
    return PerceptualLoss(**kwargs)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for images in ``[0, 1]``, one value per sample.

    Args:
        prediction: ``(N, C, H, W)`` in ``[0, 1]``.
        target: Same shape.

    Returns:
        ``(N,)`` PSNR in dB; ``inf`` where the images are equal.

    Example:
        >>> round(float(psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1))), 2)
        20.0
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"psnr needs equal shapes, got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    mse = (prediction.double() - target.double()).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(1.0 / mse)).float()


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Gaussian window 11, sigma 1.5) for images in ``[0, 1]``.

    Uses ``pytorch_msssim`` (the ``ssim``/``cli`` extra).

    Args:
        prediction: ``(N, C, H, W)`` in ``[0, 1]`` with ``H, W >= 11``.
        target: Same shape.

    Returns:
        ``(N,)`` SSIM in ``[-1, 1]`` (1 for identical images).

    Raises:
        ImportError: If ``pytorch_msssim`` is missing.
        ValueError: For images smaller than the 11x11 window.
    """
    try:
        from pytorch_msssim import ssim as _ssim
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "SSIM needs pytorch-msssim: pip install 'perceptual-loss[ssim]'"
        ) from error
    if min(prediction.shape[-2:]) < 11:
        raise ValueError(
            f"SSIM needs images of at least 11x11 pixels, got {tuple(prediction.shape[-2:])}"
        )
    return _ssim(prediction.float(), target.float(), data_range=1.0, size_average=False)


# --------------------------------------------------------------------------------------------
# distributed
# --------------------------------------------------------------------------------------------
@dataclass
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: Global rank (0 when not distributed).
        world_size: Number of processes.
        device: Device this process computes on.
        created_group: Whether :func:`setup_distributed` created the process group (and
            :meth:`close` should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    created_group: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (no-op when not distributed)."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.created_group and dist.is_initialized():
            dist.destroy_process_group()
            self.created_group = False


def setup_distributed(device: torch.device) -> DistributedContext:
    """Join the process group that ``torchrun`` describes, or run as a single process.

    ``torchrun --nproc_per_node N ...`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT``; with ``WORLD_SIZE > 1`` this joins the group with
    the gloo backend on CPU or NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``).

    Args:
        device: The device asked for (``--device``); CUDA becomes ``cuda:LOCAL_RANK``.

    Returns:
        The process's :class:`DistributedContext`.

    Raises:
        ValueError: If the environment names more processes than GPUs on this node.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=device)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        created = True
    if dist.get_rank() != rank:
        raise ValueError(
            f"RANK={rank} in the environment but the process group says {dist.get_rank()}"
        )
    return DistributedContext(
        rank=rank, world_size=dist.get_world_size(), device=device, created_group=created
    )


# --------------------------------------------------------------------------------------------
# configuration and results
# --------------------------------------------------------------------------------------------
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


Evaluator = Callable[[nn.Module, Sequence[tuple[torch.Tensor, torch.Tensor]], torch.device],
                     list[dict[str, float]]]


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint written by :func:`fit`.

    Args:
        path: ``checkpoint.pt`` file (or the output folder that holds it).
        map_location: Where to put the tensors.

    Returns:
        The checkpoint dict: ``task``, ``model_config``, ``model`` (state dict),
        ``optimizer``, ``step``, ``history``, ``loss``, ``data``.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If the file is not a checkpoint of this package.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable training checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a checkpoint written by 'perceptual train' "
            f"(expected format {_CHECKPOINT_FORMAT!r})"
        )
    return checkpoint


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --------------------------------------------------------------------------------------------
# outputs: samples, curve, report
# --------------------------------------------------------------------------------------------
def _display_size(image: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Resize a low-resolution input (SR) to the target's size for side-by-side display."""
    if image.shape[-2:] == like.shape[-2:]:
        return image
    return F.interpolate(image.unsqueeze(0), size=like.shape[-2:], mode="nearest").squeeze(0)


@torch.no_grad()
def _predict(model: nn.Module, image: torch.Tensor, device: torch.device) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(image.unsqueeze(0).to(device)).squeeze(0).float().cpu()
    finally:
        model.train(was_training)


def _write_samples(
    model: nn.Module,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    path: Path,
    device: torch.device,
) -> None:
    from perceptual_loss.apps.io import save_grid

    rows = []
    for degraded, target in pairs:
        output = _predict(model, degraded, device)
        rows.append([_display_size(degraded, target), output, target])
    save_grid(rows, path, labels=["input", "output", "target"])


def plot_loss_curve(history: Sequence[dict[str, float]], path: Path, title: str) -> None:
    """Plot every recorded term against the step to a PNG (log scale when all positive).

    Args:
        history: One dict per step with a ``"step"`` key and one key per term.
        path: Output PNG.
        title: Title of the plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [entry["step"] for entry in history]
    keys = [key for key in history[-1] if key != "step"]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        for key in keys:
            values = [entry.get(key, float("nan")) for entry in history]
            axis.plot(steps, values, label=key, linewidth=2.0 if key == "loss" else 1.0)
        positive = all(
            entry.get(key, 1.0) > 0 for entry in history for key in keys
        )
        if positive:
            axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel("weighted loss")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)


def _format_number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def _write_report(
    out_dir: Path,
    title: str,
    summary: dict[str, Any],
    metrics: dict[str, Any],
    notes: Sequence[str],
) -> None:
    (out_dir / "report.json").write_text(
        json.dumps({"summary": summary, "metrics": metrics}, indent=2, default=str) + "\n"
    )
    lines = [f"# {title}", ""]
    lines += [f"> {' '.join(str(note).split())}" for note in notes]
    if notes:
        lines.append("")
    lines += ["## Run", ""]
    lines += [f"- **{key}**: {value}" for key, value in summary.items()]
    lines += ["", "## Held-out images", ""]
    images = metrics.get("images", [])
    if images:
        columns = [key for key in images[0] if key != "image"]
        lines.append("| image | " + " | ".join(columns) + " |")
        lines.append("| --- |" + " --- |" * len(columns))
        for row in images:
            cells = " | ".join(_format_number(row[key]) for key in columns)
            lines.append(f"| {row['image']} | {cells} |")
        mean = metrics.get("mean", {})
        cells = " | ".join(_format_number(mean.get(key)) for key in columns)
        lines.append(f"| **mean** | {cells} |")
        lines += ["", metrics.get("legend", ""), ""]
    else:
        lines += ["No held-out images.", ""]
    lines += [
        "![loss curve](loss_curve.png)",
        "",
        "![held-out: input / output / target](eval/grid.png)",
        "",
    ]
    (out_dir / "report.md").write_text("\n".join(lines))


def evaluate_restoration(
    distance: nn.Module | None,
) -> Evaluator:
    """Make the evaluator of denoising/SR runs: PSNR, SSIM and perceptual distance.

    Each held-out image is scored twice: the network's output and the degraded input
    (brought to the target size with bicubic interpolation for SR), so the report shows
    what training gained.

    Args:
        distance: A module ``distance(prediction, target) -> scalar`` (a
            :class:`PerceptualLoss`); ``None`` skips the perceptual column.

    Returns:
        ``evaluate(model, pairs, device) -> list of per-image dicts``.
    """

    @torch.no_grad()
    def evaluate(
        model: nn.Module,
        pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
        device: torch.device,
    ) -> list[dict[str, float]]:
        rows = []
        for degraded, target in pairs:
            output = _predict(model, degraded, device).unsqueeze(0)
            reference = target.unsqueeze(0)
            baseline = degraded.unsqueeze(0)
            if baseline.shape[-2:] != reference.shape[-2:]:
                baseline = F.interpolate(
                    baseline, size=reference.shape[-2:], mode="bicubic", align_corners=False
                ).clamp(0, 1)
            row: dict[str, float] = {}
            for label, image in (("input", baseline), ("output", output)):
                row[f"psnr_{label}"] = float(psnr(image, reference)[0])
                try:
                    row[f"ssim_{label}"] = float(ssim(image, reference)[0])
                except ValueError:
                    row[f"ssim_{label}"] = float("nan")
                if distance is not None:
                    value = distance(image.to(device), reference.to(device))
                    row[f"perceptual_{label}"] = float(value)
            rows.append(row)
        return rows

    return evaluate


RESTORATION_LEGEND = (
    "`*_input`: the degraded input (bicubic-upscaled for SR) against the clean target; "
    "`*_output`: the network's output. PSNR in dB (higher is better), SSIM in [0, 1] "
    "(higher is better), perceptual = L1 feature distance of the loss network on "
    "relu1_2, relu2_2, relu3_3, relu4_3 (last ReLU of blocks 1-4 on VGG-11/13; lower is "
    "better)."
)


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------
def _group_parts(parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum per-layer parts by term: ``content/relu1_2`` + ``content/relu2_2`` -> content.

    ``pixel/mse`` and ``pixel/l1`` become ``mse`` and ``l1``.
    """
    grouped: dict[str, torch.Tensor] = {}
    for name, value in parts.items():
        head, _, tail = name.partition("/")
        key = tail if head == "pixel" else head
        value = value.detach().float().mean()
        grouped[key] = grouped[key] + value if key in grouped else value
    return grouped


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
) -> TrainResult:
    """Train ``model`` with ``loss_fn`` on ``dataset``; write checkpoint, samples, report.

    Args:
        model: The network; it maps an input batch to an output batch in ``[0, 1]`` of the
            target's shape. It must have a ``config`` dict (see :mod:`.models`).
        loss_fn: ``loss_fn(output, target, return_parts=True) -> (loss, parts)``.
        dataset: Yields ``(input, target)`` pairs; if it has ``set_epoch`` it is called
            every epoch (as :class:`~perceptual_loss.apps.data.RestorationDataset` needs).
        eval_pairs: Held-out ``(input, target)`` pairs, scored at the end and shown in the
            sample grids; may be empty.
        config: Steps, batch size, output folder, resume, ...
        task: JSON-able description stored in the checkpoint and report (``{"name":
            "denoise", ...}``); its ``"name"`` heads the report.
        eval_names: Names of the held-out images for the report.
        evaluate: Scores held-out pairs; default :func:`evaluate_restoration` without a
            perceptual column.
        legend: Text under the report's table explaining its columns.
        notes: Lines stated at the top of the report (e.g. random-weight warnings).
        device: Where to train; default CPU. Under torchrun CUDA becomes
            ``cuda:LOCAL_RANK``.
        context: An existing :class:`DistributedContext`; default: from the environment.
        echo: Prints a line on rank 0 (default ``print``); ``None`` output otherwise.

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
    device = context.device
    echo = echo or print
    say = echo if context.is_main else (lambda _text: None)
    out_dir = Path(config.out_dir)
    checkpoint_path = out_dir / CHECKPOINT_NAME
    try:
        if context.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint_path.exists() and not (config.resume or config.overwrite):
            raise ValueError(
                f"{checkpoint_path} already exists; pass resume to continue that run or "
                "overwrite to start again (or choose another output folder)"
            )
        if config.resume and not checkpoint_path.exists():
            raise ValueError(
                f"cannot resume: no checkpoint at {checkpoint_path}; run without resume first"
            )
        model = model.to(device)
        loss_fn = loss_fn.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        start_step = 0
        history: list[dict[str, float]] = []
        if config.resume:
            checkpoint = load_checkpoint(checkpoint_path, map_location=device)
            if checkpoint["model_config"] != model.config:
                raise ValueError(
                    f"the checkpoint in {out_dir} was trained with model "
                    f"{checkpoint['model_config']}, this run builds {model.config}; "
                    "resume with the same options or choose another output folder"
                )
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            start_step = int(checkpoint["step"])
            history = list(checkpoint["history"])
            say(f"resuming from step {start_step} ({checkpoint_path})")
        context.barrier()

        train_model: nn.Module = model
        if context.distributed:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        if len(dataset) < config.batch_size * context.world_size:
            raise ValueError(
                f"an epoch of {len(dataset)} crops is shorter than one batch on every process "
                f"({config.batch_size} x {context.world_size}); raise crops_per_epoch"
            )
        sampler = DistributedSampler(
            dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True,
            seed=config.seed, drop_last=True,
        )
        loader = DataLoader(
            dataset, batch_size=config.batch_size, sampler=sampler, drop_last=True,
            num_workers=config.num_workers, pin_memory=device.type == "cuda",
        )
        batches_per_epoch = len(loader)
        samples_dir = out_dir / "samples"
        sample_pairs = [
            (_center(degraded, 128, target), _center(target, 128, target))
            for degraded, target in list(eval_pairs)[:4]
        ]
        if not sample_pairs:
            sample_pairs = [_first_pair(dataset)]

        def save(step_done: int) -> None:
            if not context.is_main:
                return
            _save_checkpoint(
                checkpoint_path,
                {
                    "format": _CHECKPOINT_FORMAT,
                    "task": task,
                    "model_config": model.config,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step_done,
                    "history": history,
                    "train": _json_ready(asdict(config)),
                },
            )
            plot_loss_curve(history, out_dir / "loss_curve.png", f"{task.get('name')} loss")

        progress = _progress_bar(
            total=config.steps, initial=min(start_step, config.steps),
            enabled=config.progress and context.is_main, description=str(task.get("name")),
        )
        step = start_step
        epoch, skip = divmod(step, batches_per_epoch)
        started = time.perf_counter()
        train_model.train()
        try:
            while step < config.steps:
                sampler.set_epoch(epoch)
                if hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(epoch)
                for index, (inputs, targets) in enumerate(loader):
                    if index < skip:
                        continue
                    inputs = inputs.to(device, non_blocking=True)
                    targets = targets.to(device, non_blocking=True)
                    outputs = train_model(inputs)
                    loss, parts = loss_fn(outputs, targets, return_parts=True)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                    step += 1
                    record = _record(step, loss, _group_parts(parts), context)
                    history.append(record)
                    if not math.isfinite(record["loss"]):
                        raise ValueError(
                            f"the loss became {record['loss']} at step {step}; lower the "
                            "learning rate or the weights of the loss terms"
                        )
                    progress.update(1)
                    progress.set_postfix(
                        {key: f"{value:.3g}" for key, value in record.items() if key != "step"},
                        refresh=False,
                    )
                    if config.sample_every and step % config.sample_every == 0 and (
                        context.is_main
                    ):
                        _write_samples(
                            model, sample_pairs, samples_dir / f"step_{step:06d}.png", device
                        )
                    if config.checkpoint_every and step % config.checkpoint_every == 0:
                        save(step)
                    if step >= config.steps:
                        break
                skip = 0
                epoch += 1
        finally:
            progress.close()
        elapsed = time.perf_counter() - started
        save(step)
        metrics: dict[str, Any] = {}
        if context.is_main:
            _write_samples(model, sample_pairs, samples_dir / f"step_{step:06d}.png", device)
            metrics = _final_evaluation(
                model, eval_pairs, eval_names, evaluate, device, out_dir, legend
            )
            summary = {
                "task": task.get("name"),
                "steps": step,
                "resumed from step": start_step,
                "processes": context.world_size,
                "device": str(device),
                "batch size per process": config.batch_size,
                "learning rate": config.learning_rate,
                "training time this run (s)": round(elapsed, 1),
                "final loss": _format_number(history[-1]["loss"]) if history else "n/a",
                **{key: value for key, value in task.items() if key != "name"},
            }
            _write_report(out_dir, f"perceptual train {task.get('name')}", summary, metrics,
                          notes)
            say(f"report: {out_dir / 'report.md'}")
        context.barrier()
        return TrainResult(step, history, metrics, out_dir, start_step)
    finally:
        if owned_context:
            context.close()


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


def _final_evaluation(
    model: nn.Module,
    eval_pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    eval_names: Sequence[str] | None,
    evaluate: Evaluator | None,
    device: torch.device,
    out_dir: Path,
    legend: str,
) -> dict[str, Any]:
    from perceptual_loss.apps.io import save_grid, save_image

    if not eval_pairs:
        return {"images": [], "mean": {}, "legend": legend}
    names = list(eval_names or [f"image_{i}" for i in range(len(eval_pairs))])
    evaluate = evaluate or evaluate_restoration(None)
    rows = evaluate(model, eval_pairs, device)
    eval_dir = out_dir / "eval"
    grid_rows = []
    for name, (degraded, target) in zip(names, eval_pairs, strict=True):
        output = _predict(model, degraded, device)
        stem = Path(name).stem
        save_image(degraded, eval_dir / f"{stem}_input.png", clamp=True)
        save_image(output, eval_dir / f"{stem}_output.png", clamp=True)
        save_image(target, eval_dir / f"{stem}_target.png", clamp=True)
        grid_rows.append([_display_size(degraded, target), output, target])
    save_grid(grid_rows, eval_dir / "grid.png", labels=["input", "output", "target"],
              row_labels=[Path(name).stem for name in names])
    images = [{"image": name, **row} for name, row in zip(names, rows, strict=True)]
    keys = [key for key in rows[0]] if rows else []
    mean = {
        key: float(sum(row[key] for row in rows) / len(rows)) for key in keys
    }
    return {"images": images, "mean": mean, "legend": legend}


def _progress_bar(total: int, initial: int, enabled: bool, description: str) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="step", dynamic_ncols=True)


class _NoProgress:
    def update(self, count: int) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------
def perceptual_distance_module(
    backbone: str, weights: str | Path | None
) -> tuple[nn.Module | None, str | None]:
    """The perceptual distance used in reports: L1 on :func:`default_layers_for` layers.

    relu1_2, relu2_2, relu3_3, relu4_3 (the library defaults) on VGG-16/19.

    Args:
        backbone: Backbone name.
        weights: Backbone weights (as for :class:`PerceptualLoss`).

    Returns:
        ``(module, None)``, or ``(None, reason)`` when the weights cannot be had (the report
        then says why the column is missing instead of failing the run).
    """
    from perceptual_loss import WeightsNotFoundError

    try:
        # Random weights (weights=None) are drawn from a fixed seed, so reports of
        # different runs measure with the same network.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return PerceptualLoss(backbone, default_layers_for(backbone), weights), None
    except WeightsNotFoundError as error:
        return None, f"perceptual distance not computed: {error}"


def _crops_per_epoch(config: TrainConfig, images: Sequence[torch.Tensor]) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    wanted = config.crops_per_epoch or 64 * len(images)
    return max(wanted, config.batch_size * max(1, world))


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
        model: The network (e.g. :class:`~perceptual_loss.apps.models.UNet`).
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
    from perceptual_loss.apps.data import RestorationDataset, make_eval_pairs

    dataset = RestorationDataset(
        train_images, crop_size, degradation, _crops_per_epoch(config, train_images),
        seed=config.seed,
    )
    eval_pairs = make_eval_pairs(eval_images, degradation, max_size=256, seed=config.seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        loss_fn = build_loss(loss_config)
    distance, reason = perceptual_distance_module(loss_config.backbone, loss_config.weights)
    notes = list(notes) + ([reason] if reason else [])
    if reason and echo is not None:
        echo(reason)
    task = {**task, "loss": loss_config.describe(), "crop size": crop_size}
    return fit(
        model, loss_fn, dataset, eval_pairs, config, task=task, eval_names=eval_names,
        evaluate=evaluate_restoration(distance), notes=notes, device=device, echo=echo,
    )
