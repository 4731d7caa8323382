"""Perceptual loss on networks trained on medical images: RadImageNet (2D) and MedicalNet (3D).

:class:`MedicalPerceptualLoss` compares the last feature map of a frozen ResNet the way MONAI's
``PerceptualLoss`` does, with the same preprocessing, so its default values equal MONAI's for
the same network and weights:

    f = unit-length feature vectors (over channels) of network(preprocess(x))
    value per sample = mean over positions of sum over channels of (f_pred - f_target)^2

Networks (``network=``), inputs first mapped from ``input_range`` to ``[0, 1]``:

- ``"radimagenet_resnet50"`` (2D, 1 or 3 channels): RGB -> BGR, minus the ImageNet mean in
  BGR order ``(0.406, 0.456, 0.485)``, no scaling (RadImageNet's Keras training).
- ``"resnet50"`` (2D, 1 or 3 channels; torchvision's ImageNet ResNet50): ImageNet mean/std.
- ``"medicalnet_resnet10"``, ``"medicalnet_resnet10_23datasets"``, ``"medicalnet_resnet50"``,
  ``"medicalnet_resnet50_23datasets"`` (3D, any channels): z-score (see
  :func:`zscore_intensity`), each channel through the single-channel network.

One-channel 2D inputs are repeated to three. A 3D input with ``C`` channels passes each
channel through the single-channel network; the ``C * F`` feature channels are normalised to
unit length together and summed (``channel_wise=True`` keeps one value per input channel).

**Volumes through a 2D network (MONAI's fake 3D).** A 2D network given ``(N, C, D, H, W)``
volumes scores them as MONAI's ``PerceptualLoss(spatial_dims=3, is_fake_3d=True)`` does: the
slices along D (``H x W`` planes), along H (``D x W``) and along W (``D x H``) pass as 2D
batches, each axis' values are averaged over its slices, and the three axis values are
**summed** (MONAI's sum; :class:`~perceptual_loss.volumes.VolumePerceptualLoss` averages its
axes, a third of this). ``fake_3d_ratio=1`` (default) scores every slice; below 1,
``max(1, int(ratio * N * S))`` of the ``N * S`` slices of each axis are drawn jointly over
the batch with ``torch.randperm`` in the order D, H, W, from ``generator`` or torch's global
generator, exactly MONAI's draws (under the same ``torch.manual_seed`` the same slices, so
the same value). Those draws pool the batch, so they give one value: ``reduction="mean"``.

Differences from MONAI (all where MONAI is undefined or surprising; values agree elsewhere):
declared ``input_range`` with value checks; a z-score with ``sqrt(var + 1e-10)`` so a constant
volume gives 0 instead of NaN; channel-wise results always ``(C,)`` (MONAI's ``squeeze`` makes
them a scalar for a batch of one); the target passes without autograd; inputs are never
modified in place; ``reduction="none"`` and a ``min_input_size`` for the 2.5D
:class:`~perceptual_loss.volumes.VolumePerceptualLoss`.

Weights: ``"resnet50/imagenet"`` is torchvision's ``resnet50-0676ba61.pth`` (IMAGENET1K_V1)
and ``"resnet50/imagenet-v2"`` its ``resnet50-11ad3fa6.pth`` (IMAGENET1K_V2, torchvision's
default and what MONAI's ``resnet50`` loads, so the default here), found in the torch hub
cache or downloaded with
their SHA-256 prefix checked. The RadImageNet and MedicalNet
files have no published hash, so they are never downloaded: put the file in
``$PERCEPTUAL_LOSS_WEIGHTS_DIR`` or the torch hub cache (where MONAI keeps it:
``<hub>/monai_checkpoints``), or pass its path.

References:
    Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
    CVPR 2018 (unit-normalised feature distance).
    Mei et al., "RadImageNet: An Open Radiologic Deep Learning Research Dataset for Effective
    Transfer Learning", Radiology: Artificial Intelligence, 2022.
    Chen, Ma and Zheng, "Med3D: Transfer Learning for 3D Medical Image Analysis",
    arXiv:1904.00625, 2019.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from perceptual_loss import weights as _weights
from perceptual_loss._checks import check_input_range, check_pair, check_values_of, value_role
from perceptual_loss._weight_files import check_shapes, check_tensor_values
from perceptual_loss.backbones.medicalnet import medicalnet_resnet10, medicalnet_resnet50
from perceptual_loss.backbones.resnet import radimagenet_resnet50, resnet50
from perceptual_loss.frozen import keep_out_of_state_dict
from perceptual_loss.functional import normalize_channels

__all__ = [
    "MEDICAL_NETWORKS",
    "MedicalNetwork",
    "MedicalPerceptualLoss",
    "build_network",
    "local_weight_files",
    "load_network_state",
    "zscore_intensity",
]

Reduction = Literal["none", "mean", "sum"]
ZScore = Literal["batch", "volume"]

#: Added to the variance of the z-score (in units of the declared range mapped to [0, 1]):
#: a constant volume gives 0 instead of MONAI's NaN; negligible for any real volume.
ZSCORE_EPS = 1e-5
#: Feature normalisation ``f / sqrt(sum f^2 + eps^2)``: eps^2 = 1e-10 as in MONAI.
FEATURE_EPS = 1e-5

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HF_CHECKPOINTS = "https://huggingface.co/MONAI/checkpoints"
_MEDICALNET = "https://github.com/Tencent/MedicalNet"


@dataclass(frozen=True)
class MedicalNetwork:
    """What the loss knows about one network.

    Attributes:
        name: The ``network=`` name.
        spatial_dims: 2 (images ``(N, C, H, W)``) or 3 (volumes ``(N, C, D, H, W)``).
        build: Builds the trunk (random weights), returning the final feature map.
        preprocessing: ``"radimagenet"``, ``"imagenet"`` or ``"zscore"``.
        weights_name: The name of its published weights (``weights=`` accepts it).
        filenames: File names of the published weights, looked for in the weight folders.
        registry_key: Key in :mod:`perceptual_loss.weights` if the file can be downloaded
            with a checked hash, else ``None`` (local files only).
        published_at: Where the weights are published (for the not-found message).
        build_full: Builds the model whose keys a full published file has (with a head), or
            ``None`` if the file holds the trunk only.
        other_weights: Further published weights, ``{name: registry key}``.
    """

    name: str
    spatial_dims: int
    build: Callable[[], nn.Module]
    preprocessing: str
    weights_name: str
    filenames: tuple[str, ...]
    registry_key: str | None
    published_at: str
    build_full: Callable[[], nn.Module] | None = None
    other_weights: Mapping[str, str] = field(default_factory=dict)


# MedicalNet's trunks: (name, builder, file names looked for, where they are published).
_MEDICALNET_FILES = (
    ("medicalnet_resnet10", medicalnet_resnet10, ("resnet_10.pth",),
     f"{_MEDICALNET} (pretrain/resnet_10.pth)"),
    ("medicalnet_resnet10_23datasets", medicalnet_resnet10,
     ("medicalnet_resnet_10_23dataset.pth", "resnet_10_23dataset.pth"),
     f"{_HF_CHECKPOINTS} (medicalnet_resnet_10_23dataset.pth) or {_MEDICALNET} "
     "(pretrain/resnet_10_23dataset.pth)"),
    ("medicalnet_resnet50", medicalnet_resnet50, ("resnet_50.pth",),
     f"{_MEDICALNET} (pretrain/resnet_50.pth)"),
    ("medicalnet_resnet50_23datasets", medicalnet_resnet50,
     ("medicalnet_resnet50_23datasets.pth", "resnet_50_23dataset.pth"),
     f"{_HF_CHECKPOINTS} (medicalnet_resnet50_23datasets.pth) or {_MEDICALNET} "
     "(pretrain/resnet_50_23dataset.pth)"),
)

MEDICAL_NETWORKS: dict[str, MedicalNetwork] = {
    spec.name: spec for spec in (
        MedicalNetwork("radimagenet_resnet50", 2, radimagenet_resnet50, "radimagenet",
                       "radimagenet", ("RadImageNet-ResNet50_notop.pth",), None,
                       f"{_HF_CHECKPOINTS} (RadImageNet-ResNet50_notop.pth)"),
        MedicalNetwork("resnet50", 2, resnet50, "imagenet", "imagenet-v2",
                       ("resnet50-11ad3fa6.pth",), "resnet50/imagenet-v2",
                       "https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
                       functools.partial(resnet50, 1000),
                       {"imagenet": "resnet50/imagenet"}),
        *(MedicalNetwork(name, 3, build, "zscore", "medicalnet", files, None, where)
          for name, build, files, where in _MEDICALNET_FILES),
    )
}
"""The networks of :class:`MedicalPerceptualLoss`, by name."""

def _network(name: object) -> MedicalNetwork:
    if not isinstance(name, str) or name not in MEDICAL_NETWORKS:
        raise ValueError(f"network must be one of {', '.join(MEDICAL_NETWORKS)}; got {name!r}")
    return MEDICAL_NETWORKS[name]


# ----------------------------------------------------------------------------------- weights
def _weight_folders() -> list[Path]:
    """Where published files are looked for: the weights folder, then the torch hub cache."""
    folders = []
    if os.environ.get(_weights.ENV_WEIGHTS_DIR):
        folders.append(Path(os.environ[_weights.ENV_WEIGHTS_DIR]).expanduser())
    hub = Path(torch.hub.get_dir())
    folders += [hub / "checkpoints", hub / "monai_checkpoints", hub / "medicalnet"]
    return folders


def local_weight_files() -> list[dict[str, object]]:
    """Rows for the medical files that are never downloaded (no published hash).

    Each row says where the file is looked for and whether it is there, in the form
    ``perceptual weights list`` shows.
    """
    rows: list[dict[str, object]] = []
    for spec in MEDICAL_NETWORKS.values():
        if spec.registry_key is not None:
            continue
        searched = [folder / name for folder in _weight_folders() for name in spec.filenames]
        present = next((path for path in searched if path.is_file()), None)
        rows.append({
            "key": f"{spec.name}/{spec.weights_name}", "backbone": spec.name,
            "file": " or ".join(spec.filenames), "format": "torch",
            "normalization": spec.preprocessing, "url": spec.published_at,
            "license": "see the publisher (not downloaded: no published hash)",
            "present": present is not None, "path": str(present) if present else None,
            "searched": [str(path) for path in searched],
        })
    return rows


def _resolve_weights(spec: MedicalNetwork, weights: str | os.PathLike[str]) -> Path:
    """The file ``weights`` names for ``spec``: its published file, a registry key or a path."""
    text = os.fspath(weights)
    for name, key in spec.other_weights.items():
        if text in (name, key):
            return _weights.resolve_weight_file(key)
    known = {"pretrained", spec.weights_name, f"{spec.name}/{spec.weights_name}"}
    if text in known:
        if spec.registry_key is not None:
            return _weights.resolve_weight_file(spec.registry_key)
        folders = _weight_folders()
        for folder in folders:
            for filename in spec.filenames:
                if (folder / filename).is_file():
                    return folder / filename
        places = "; ".join(str(folder) for folder in folders)
        raise _weights.WeightsNotFoundError(
            f"weights of {spec.name!r} not found: no {' or '.join(spec.filenames)} in {places}. "
            f"They are not downloaded automatically (no published hash): get the file from "
            f"{spec.published_at}, put it in one of those folders (or point "
            f"{_weights.ENV_WEIGHTS_DIR} at it) or pass its path; weights=None gives random "
            "weights."
        )
    if "/" in text and text in _weights.list_weights():
        raise ValueError(f"weights {text!r} are for another network, not {spec.name!r}; use "
                         f"weights={spec.weights_name!r}, a file path or None")
    path = Path(text).expanduser()
    if not path.is_file():
        names = ", ".join(repr(n) for n in ("pretrained", spec.weights_name, *spec.other_weights))
        raise _weights.WeightsNotFoundError(
            f"weights {text!r}: no such file, and not a weights name of {spec.name!r} (known: "
            f"{names}). Pass an existing .pth path, a known name, or weights=None for random "
            "weights."
        )
    return path


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without the ``"module."`` prefixes ``DataParallel`` adds (MedicalNet's files)."""
    stripped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module."):]
        stripped[key] = value
    return stripped


def load_network_state(network: nn.Module, name: str, path: str | os.PathLike[str]) -> None:
    """Load a published (or compatible) file of network ``name`` into its trunk, strictly.

    Reads plain state dicts and ones wrapped in ``"state_dict"``/``"model"``, with or without
    ``"module."`` prefixes; a full torchvision ResNet50 file (with ``fc``) or its trunk alone.
    Batch-norm ``num_batches_tracked`` counters may be missing (old files), as torch allows.

    Args:
        network: The trunk built by ``MEDICAL_NETWORKS[name].build()``.
        name: Network name.
        path: The ``.pth`` file.

    Raises:
        WeightsIntegrityError: Unreadable file, missing/unexpected keys or wrong shapes (the
            first few are named), or a non-floating or non-finite tensor (file and key named).
    """
    spec = _network(name)
    path = Path(path)
    state = _strip_prefixes(_weights.read_state_dict(path))
    with torch.device("meta"):
        full = (spec.build_full or spec.build)()
    expected = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    trunk_keys = set(network.state_dict())
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    if spec.build_full is not None and not any(k in state for k in set(expected) - trunk_keys):
        optional |= set(expected) - trunk_keys  # a trunk-only file
    check_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, path, name,
                 optional=optional)
    check_tensor_values(state, path, {k: not k.endswith("num_batches_tracked") for k in state})
    own = network.state_dict()
    trunk_state = {k: state[k] if k in state else torch.zeros_like(own[k]) for k in own}
    network.load_state_dict(trunk_state, strict=True)


def build_network(name: str, weights: str | os.PathLike[str] | None = "pretrained"
                  ) -> tuple[nn.Module, str]:
    """The frozen trunk of network ``name`` in eval mode, and where its weights came from.

    Args:
        name: A key of :data:`MEDICAL_NETWORKS`.
        weights: ``"pretrained"`` or the network's weights name (``"imagenet"``,
            ``"radimagenet"``, ``"medicalnet"``): its published file; a registry key such as
            ``"resnet50/imagenet"``; a path to a ``.pth`` file; or ``None`` for random
            weights (only when asked for).

    Returns:
        ``(trunk, source)``: the trunk returns the final feature map; ``source`` is the file
        path or ``"random"``.

    Raises:
        ValueError: Unknown network, or weights of another network.
        WeightsNotFoundError: The file is not found (the message says where to put it).
        WeightsIntegrityError: The file does not fit the network.
    """
    spec = _network(name)
    if weights is None:  # the same random network in every build and process
        network, source = _weights.build_random(spec.build), "random"
    elif isinstance(weights, (str, os.PathLike)):
        path = _resolve_weights(spec, weights)
        with torch.device("meta"):  # no random initialisation: every tensor is loaded
            network = spec.build()
        network = network.to_empty(device="cpu")
        load_network_state(network, name, path)
        source = str(path)
    else:
        raise TypeError(f"weights must be a name, a path or None; got {type(weights).__name__}")
    network.requires_grad_(False)
    return network.eval(), source


@functools.cache
def _output_stride(name: str) -> int:
    """Input pixels per pixel of the network's final map, measured on shapes alone."""
    spec = _network(name)
    with torch.device("meta"):
        network = spec.build().eval()
        sides = []
        for size in (64, 128):
            shape = (1, 3 if spec.spatial_dims == 2 else 1) + (size,) * spec.spatial_dims
            sides.append(int(network(torch.empty(shape)).shape[-1]))
    return round(64 / (sides[1] - sides[0]))


# ------------------------------------------------------------------------------------ maths
def zscore_intensity(volume: torch.Tensor, mode: ZScore = "batch",
                     eps: float = ZSCORE_EPS) -> torch.Tensor:
    """Z-score intensities as MONAI does for MedicalNet, with a guard for constant volumes.

    Args:
        volume: ``(N, C, D, H, W)`` (any shape for ``"batch"``).
        mode: ``"batch"`` (MONAI): one mean and one standard deviation over the whole tensor,
            all samples and channels together, so a sample's value depends on the rest of the
            batch. ``"volume"``: one mean/std per sample and channel.
        eps: ``std = sqrt(var + eps^2)`` (unbiased variance, as ``torch.std``).

    Returns:
        float32 (float64 stays float64) tensor of ``volume``'s shape.
    """
    if mode not in ("batch", "volume"):
        raise ValueError(f"mode must be 'batch' or 'volume'; got {mode!r}")
    x = volume if volume.dtype == torch.float64 else volume.float()
    dims = tuple(range(x.ndim)) if mode == "batch" else tuple(range(2, x.ndim))
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps * eps)


def _unit_distance(features_a: torch.Tensor, features_b: torch.Tensor, groups: int,
                   channel_wise: bool) -> torch.Tensor:
    """Mean over positions of the squared distance of unit-normalised features.

    Returns ``(N,)``, or ``(N, groups)`` with ``channel_wise`` (each group a block of channels).
    """
    diff = (features_a - features_b).pow(2)
    n = diff.shape[0]
    if channel_wise:
        return diff.reshape(n, groups, diff.shape[1] // groups, -1).sum(2).mean(-1)
    return diff.sum(1).reshape(n, -1).mean(1)


class MedicalPerceptualLoss(nn.Module):
    """Perceptual loss on RadImageNet/ImageNet ResNet50 (2D) or MedicalNet (3D) features.

    Args:
        network: ``"radimagenet_resnet50"``, ``"resnet50"`` (2D); ``"medicalnet_resnet10"``,
            ``"medicalnet_resnet10_23datasets"``, ``"medicalnet_resnet50"``,
            ``"medicalnet_resnet50_23datasets"`` (3D).
        weights: ``"pretrained"`` (default) or the network's weights name (``"radimagenet"``,
            ``"imagenet-v2"``, ``"medicalnet"``): its published file (see the module docstring
            for where it is looked for); ``"imagenet"`` (IMAGENET1K_V1) for ``"resnet50"``; a
            registry key; a path to a ``.pth`` file; ``None`` for random weights.
        input_range: Declared ``(low, high)`` of the inputs, mapped to ``[0, 1]`` first.
        channel_wise: 3D only: one value per input channel, ``(..., C)``, as MONAI's
            ``channel_wise=True``.
        zscore: 3D only: ``"batch"`` (default, MONAI: one mean/std over the whole batch
            tensor) or ``"volume"`` (per sample and channel; values independent of the batch).
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"``.
        weight: Multiplies the value (its weight in a sum of losses); finite, ``>= 0``.
        check_values: Check inputs for NaN/Inf and the declared range (one device sync).
        eps: Feature normalisation ``f / sqrt(sum_c f^2 + eps^2)``; the default gives MONAI's.
        fake_3d_ratio: 2D networks given volumes: the fraction of each axis' slices scored,
            in ``(0, 1]`` (MONAI's ``fake_3d_ratio``; MONAI's default is 0.5). ``1``: every
            slice, nothing drawn. Below 1 needs ``reduction="mean"`` (see the module).
        generator: Draw the slices from this generator instead of torch's global one.

    Shape:
        - prediction, target: ``(N, C, H, W)`` with ``C`` 1 or 3 for 2D networks, or
          ``(N, C, D, H, W)`` volumes (MONAI's fake 3D: three axes' slices, summed);
          ``(N, C, D, H, W)`` for 3D networks; every spatial side ``>= min_input_size``.
        - Output: a scalar, ``(N,)`` with ``reduction="none"``; with ``channel_wise``,
          ``(C,)`` and ``(N, C)``.

    Attributes:
        network: The frozen trunk (no parameter requires grad; always in eval mode).
        min_input_size: Smallest spatial side accepted: the network's total stride (32 in
            2D, 8 in 3D), below which its last map sees less than one cell of input.
        spatial_dims: 2 or 3.
        weights_source: The weights file, or ``"random"``.

    Example:
        >>> loss_fn = MedicalPerceptualLoss("medicalnet_resnet10", weights=None)
        >>> gen = torch.Generator().manual_seed(0)
        >>> x = torch.rand(2, 1, 16, 16, 16, generator=gen)
        >>> loss_fn(x, x).item()
        0.0
    """

    def __init__(
        self,
        network: str = "radimagenet_resnet50",
        weights: str | os.PathLike[str] | None = "pretrained",
        *,
        input_range: Sequence[float] = (0.0, 1.0),
        channel_wise: bool = False,
        zscore: ZScore | None = None,
        reduction: Reduction = "mean",
        weight: float = 1.0,
        check_values: bool = True,
        eps: float = FEATURE_EPS,
        fake_3d_ratio: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        spec = _network(network)
        self.network_name = spec.name
        self.spatial_dims = spec.spatial_dims
        self.input_range = check_input_range(input_range)
        if not isinstance(channel_wise, bool):
            raise TypeError(f"channel_wise must be True or False; got {channel_wise!r}")
        if channel_wise and spec.spatial_dims != 3:
            raise ValueError(f"channel_wise=True needs a 3D MedicalNet network; {network!r} is "
                             "2D (its channels are colours): drop channel_wise")
        self.channel_wise = channel_wise
        if zscore is not None and spec.spatial_dims != 3:
            raise ValueError(f"zscore applies to 3D MedicalNet networks only; drop it for "
                             f"{network!r}")
        if zscore is not None and zscore not in ("batch", "volume"):
            raise ValueError(f"zscore must be 'batch' or 'volume'; got {zscore!r}")
        self.zscore: ZScore | None = zscore or ("batch" if spec.spatial_dims == 3 else None)
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction must be 'none', 'mean' or 'sum'; got {reduction!r}")
        self.reduction: Reduction = reduction
        self.weight = _finite_number("weight", weight, minimum=0.0, strict=False)
        self.eps = _finite_number("eps", eps, minimum=0.0, strict=True)
        self.fake_3d_ratio = _finite_number("fake_3d_ratio", fake_3d_ratio, minimum=0.0,
                                            strict=True)
        if self.fake_3d_ratio > 1:
            raise ValueError(f"fake_3d_ratio must be in (0, 1]; got {fake_3d_ratio!r}")
        if self.fake_3d_ratio < 1 and spec.spatial_dims == 3:
            raise ValueError(f"fake_3d_ratio slices volumes for a 2D network; {network!r} is 3D "
                             "and sees the whole volume: drop fake_3d_ratio")
        if self.fake_3d_ratio < 1 and reduction != "mean":
            raise ValueError(
                f"fake_3d_ratio={fake_3d_ratio:g} draws slices from the whole batch (as MONAI), "
                f"which gives one value, not reduction={reduction!r}: use reduction='mean', "
                "fake_3d_ratio=1, or VolumePerceptualLoss (the same slices for every volume)")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None; got "
                            f"{type(generator).__name__}")
        self.generator = generator
        if not isinstance(check_values, bool):
            raise TypeError(f"check_values must be True or False; got {check_values!r}")
        self.check_values = check_values
        #: Names of the images already warned about (a prediction far outside the range).
        self._value_warnings: set[str] = set()
        self.network, self.weights_source = build_network(spec.name, weights)
        keep_out_of_state_dict(self, "network")  # it comes from its weights file
        self.min_input_size = _output_stride(spec.name)
        if spec.preprocessing == "imagenet":
            mean, std = _IMAGENET_MEAN, _IMAGENET_STD
        else:  # RadImageNet: BGR minus the ImageNet mean (BGR order), no scaling
            mean, std = _IMAGENET_MEAN[::-1], (1.0, 1.0, 1.0)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._bgr = spec.preprocessing == "radimagenet"

    def train(self, mode: bool = True) -> MedicalPerceptualLoss:
        """Set the mode of the module; the frozen network stays in eval mode."""
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss between ``prediction`` and ``target`` (see the class docstring for shapes).

        Gradients flow to ``prediction`` only; the target passes without autograd.
        """
        self._check(prediction, target)
        if self.spatial_dims == 2 and prediction.ndim == 5:
            value = self._fake_3d(prediction, target)
        else:
            value = self._distance(prediction, target)
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            if value.ndim == 0:  # slices drawn over the whole batch: already its mean
                pass
            elif self.reduction == "mean":
                value = value.mean(0)
            elif self.reduction == "sum":
                value = value.sum(0)
            return value * self.weight if self.weight != 1.0 else value

    def _distance(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample distance ``(N,)`` (``(N, C)`` channel-wise) in float32."""
        channels = prediction.shape[1] if self.spatial_dims == 3 else 1
        features_a = self._features(prediction)
        with torch.no_grad():
            features_b = self._features(target)
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            return _unit_distance(features_a, features_b, channels, self.channel_wise)

    def _fake_3d(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """MONAI's fake 3D: the sum over D, H, W of the mean over each axis' slices.

        Returns ``(N,)`` with every slice, or the batch's scalar when slices are drawn.
        """
        total = torch.zeros((), device=prediction.device)
        n = prediction.shape[0]
        for axis in (2, 3, 4):
            planes_a, planes_b = _axis_planes(prediction, axis), _axis_planes(target, axis)
            count = planes_a.shape[0]
            if self.fake_3d_ratio < 1:
                # MONAI's draw: one permutation of all N * S slices, its first k kept.
                keep = max(1, int(count * self.fake_3d_ratio))
                chosen = torch.randperm(count, generator=self.generator)[:keep]
                chosen = chosen.to(prediction.device)
                planes_a = planes_a.index_select(0, chosen)
                planes_b = planes_b.index_select(0, chosen)
                total = total + self._distance(planes_a, planes_b).mean()
            else:
                total = total + self._distance(planes_a, planes_b).view(n, -1).mean(1)
        return total

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-normalised final feature map, float32; ``(N, C * F, ...)`` in 3D."""
        low, high = self.input_range
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x if x.dtype == torch.float64 else x.float()
            x = (x - low) / (high - low)
            if self.spatial_dims == 3:
                n, c = x.shape[:2]
                x = zscore_intensity(x, self.zscore or "batch").reshape(n * c, 1, *x.shape[2:])
            else:
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                if self._bgr:
                    x = x.flip(1)
                x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        parameter = next(self.network.parameters())
        features = self.network(x.to(parameter.dtype))
        if self.spatial_dims == 3:
            n = features.shape[0] // c
            features = features.reshape(n, c * features.shape[1], *features.shape[2:])
        return normalize_channels(features, eps=self.eps)

    def _check(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        rank = self.spatial_dims + 2
        layout = "(N, C, H, W) or (N, C, D, H, W)" if rank == 4 else "(N, C, D, H, W)"
        for name, x in (("prediction", prediction), ("target", target)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor {layout}; got "
                                f"{type(x).__name__}")
            if not torch.is_floating_point(x):
                raise TypeError(f"{name} has dtype {x.dtype}; expected floating point: convert "
                                f"it with .float() and declare input_range")
            if x.ndim != rank and not (rank == 4 and x.ndim == 5):
                hint = (" For 2D slices use 'radimagenet_resnet50' or 'resnet50'."
                        if x.ndim == 4 else "")
                raise ValueError(f"{name} must have shape {layout} for {self.network_name!r}; "
                                 f"got {tuple(x.shape)}.{hint}")
            if x.numel() == 0:
                raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
        check_pair(prediction, target)
        if self.spatial_dims == 2 and prediction.shape[1] not in (1, 3):
            raise ValueError(f"{self.network_name!r} takes 1 (grayscale) or 3 (RGB) channels; "
                             f"got {prediction.shape[1]}: select or average the channels first")
        sides = tuple(int(s) for s in prediction.shape[2:])
        if min(sides) < self.min_input_size:
            size = "x".join([str(self.min_input_size)] * len(sides))
            raise ValueError(
                f"inputs of spatial size {'x'.join(map(str, sides))} are too small for "
                f"{self.network_name!r}: it needs at least {size} (its total stride); pad or "
                "resize them")
        if self.check_values:  # one device synchronisation for both
            check_values_of(((prediction, "prediction", value_role(prediction, prediction=True)),
                             (target, "target", value_role(target))), self.input_range,
                            self._value_warnings)

    def extra_repr(self) -> str:
        options = [f"network={self.network_name!r}", f"weights={self.weights_source!r}",
                   f"input_range={self.input_range}", f"reduction={self.reduction!r}"]
        if self.spatial_dims == 3:
            options += [f"zscore={self.zscore!r}", f"channel_wise={self.channel_wise}"]
        elif self.fake_3d_ratio < 1:
            options.append(f"fake_3d_ratio={self.fake_3d_ratio:g}")
        if self.weight != 1.0:
            options.append(f"weight={self.weight:g}")
        return ", ".join(options)


def _axis_planes(volume: torch.Tensor, axis: int) -> torch.Tensor:
    """The slices of ``(N, C, D, H, W)`` along ``axis`` as ``(N * S, C, h, w)``, volume-major.

    The order MONAI's ``batchify_axis`` gives (its draws index into it).
    """
    others = [d for d in (2, 3, 4) if d != axis]
    planes = volume.permute(0, axis, 1, *others)
    return planes.reshape(-1, volume.shape[1], *(volume.shape[d] for d in others))


def _finite_number(name: str, value: object, *, minimum: float, strict: bool) -> float:
    """``value`` as a finite float ``>= minimum`` (``> minimum`` if ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    number = float(value)
    bad = number <= minimum if strict else number < minimum
    if not math.isfinite(number) or bad:
        bound = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {bound} {minimum:g}; got {value!r}")
    return number
