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

**A preset over the shared machinery.** The networks are registered backbones
(:mod:`perceptual_loss.backbones`: ``resnet50``, ``radimagenet_resnet50``,
``medicalnet_resnet10``, ``medicalnet_resnet50``), built and preprocessed by the same
:class:`~perceptual_loss.extractor.FeatureExtractor` as every other loss, their files resolved
by :mod:`perceptual_loss.weights`, and the distance is
:func:`~perceptual_loss.functional.unit_feature_distance`. :data:`MEDICAL_NETWORKS` names the
presets: a backbone, the weights its ``"pretrained"`` means, and its final layer ``layer4``.
For other layers, style terms or pixel terms on the same networks use
:class:`~perceptual_loss.PerceptualLoss` (e.g. ``PerceptualLoss("radimagenet_resnet50",
layers=("layer1", "layer2"), style_layers=("layer1",))``).

Weights: ``"resnet50/imagenet"`` is torchvision's ``resnet50-0676ba61.pth`` (IMAGENET1K_V1)
and ``"resnet50/imagenet-v2"`` its ``resnet50-11ad3fa6.pth`` (IMAGENET1K_V2, torchvision's
default and what MONAI's ``resnet50`` loads, so the default here), found in the torch hub
cache or downloaded with their SHA-256 prefix checked. The RadImageNet and MedicalNet files
have no published hash (local-only entries of the weight registry, listed by ``perceptual
weights list``), so they are never downloaded: put the file in
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

import dataclasses
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from perceptual_loss._checks import (
    Reduction,
    check_choice,
    check_image,
    check_input_range,
    check_min_size,
    check_pair,
    check_positive_number,
    check_reduction,
    check_values_of,
    check_weight,
    value_role,
)
from perceptual_loss.backbones import BackboneSpec, get_backbone
from perceptual_loss.extractor import FeatureExtractor
from perceptual_loss.functional import unit_feature_distance
from perceptual_loss.preprocess import ZScore, get_normalization
from perceptual_loss.weights import (
    build_random,
    load_weights_into,
    resolve_weight_file,
    resolve_weights,
)

__all__ = [
    "FEATURE_EPS",
    "MEDICAL_NETWORKS",
    "MedicalNetwork",
    "MedicalPerceptualLoss",
    "build_network",
    "load_network_state",
]

#: Feature normalisation ``f / sqrt(sum f^2 + eps^2)``: eps^2 = 1e-10 as in MONAI.
FEATURE_EPS = 1e-5
#: The layer MONAI compares: the last stage of each ResNet.
FINAL_LAYER = "layer4"


@dataclass(frozen=True)
class MedicalNetwork:
    """One preset of :class:`MedicalPerceptualLoss`: a registered backbone and its weights.

    Attributes:
        name: The ``network=`` name.
        backbone: The backbone in :mod:`perceptual_loss.backbones`.
        weights_name: The name ``weights=`` accepts for the published file (besides
            ``"pretrained"``).
        backbone_weights: The backbone's name for that file (a key of its ``weights``).
    """

    name: str
    backbone: str
    weights_name: str
    backbone_weights: str

    @property
    def spec(self) -> BackboneSpec:
        """The registered backbone."""
        return get_backbone(self.backbone)

    @property
    def spatial_dims(self) -> int:
        """2 (images ``(N, C, H, W)``) or 3 (volumes ``(N, C, D, H, W)``)."""
        return self.spec.spatial_dims


MEDICAL_NETWORKS: dict[str, MedicalNetwork] = {
    preset.name: preset for preset in (
        MedicalNetwork("radimagenet_resnet50", "radimagenet_resnet50", "radimagenet",
                       "radimagenet"),
        MedicalNetwork("resnet50", "resnet50", "imagenet-v2", "imagenet-v2"),
        MedicalNetwork("medicalnet_resnet10", "medicalnet_resnet10", "medicalnet", "medicalnet"),
        MedicalNetwork("medicalnet_resnet10_23datasets", "medicalnet_resnet10", "medicalnet",
                       "medicalnet-23datasets"),
        MedicalNetwork("medicalnet_resnet50", "medicalnet_resnet50", "medicalnet", "medicalnet"),
        MedicalNetwork("medicalnet_resnet50_23datasets", "medicalnet_resnet50", "medicalnet",
                       "medicalnet-23datasets"),
    )
}
"""The presets of :class:`MedicalPerceptualLoss`, by name."""


def _network(name: object) -> MedicalNetwork:
    if not isinstance(name, str) or name not in MEDICAL_NETWORKS:
        raise ValueError(f"network must be one of {', '.join(MEDICAL_NETWORKS)}; got {name!r}")
    return MEDICAL_NETWORKS[name]


# ----------------------------------------------------------------------------------- weights
def weights_file(name: str, weights: str | os.PathLike[str] | None) -> Path | None:
    """The file ``weights`` names for preset ``name`` (``None``: random weights).

    ``"pretrained"``, the preset's weights name and ``"<preset>/<weights name>"`` mean its
    published file; anything else is resolved as for the backbone (its own names such as
    ``"imagenet"``, its registry keys, a path).

    Raises:
        TypeError: ``weights`` is neither a name, a path nor ``None``.
        ValueError: Weights of another network.
        WeightsNotFoundError: The file is not found (the message says where to put it).
        WeightsIntegrityError: A registered file fails its hash check.
    """
    preset = _network(name)
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a name, a path or None; got {type(weights).__name__}")
    text = os.fspath(weights)
    if text in ("pretrained", preset.weights_name, f"{preset.name}/{preset.weights_name}"):
        text = preset.backbone_weights
    choice = resolve_weights(text, preset.spec)
    if choice.spec is not None:
        return resolve_weight_file(choice.spec)
    assert choice.path is not None  # random words are not names of a file here
    return choice.path


def load_network_state(network: nn.Module, name: str, path: str | os.PathLike[str]) -> None:
    """Load a published (or compatible) file of network ``name`` into its trunk, strictly.

    Reads plain state dicts and ones wrapped in ``"state_dict"``/``"model"``, with or without
    ``"module."`` prefixes; a full torchvision ResNet50 file (with ``fc``) or its trunk alone.
    Batch-norm ``num_batches_tracked`` counters may be missing (old files), as torch allows.
    (The backbone's file reading of :mod:`perceptual_loss.weights`.)

    Args:
        network: The trunk (``build_network(name, None)[0]``) or the network itself.
        name: Preset name.
        path: The ``.pth`` file.

    Raises:
        WeightsIntegrityError: Unreadable file, missing/unexpected keys or wrong shapes (the
            first few are named), or a non-floating or non-finite tensor (file and key named).
    """
    load_weights_into(network, _network(name).spec, Path(path))  # type: ignore[arg-type]


def build_network(name: str, weights: str | os.PathLike[str] | None = "pretrained"
                  ) -> tuple[nn.Module, str]:
    """The frozen trunk of preset ``name`` in eval mode, and where its weights came from.

    Args:
        name: A key of :data:`MEDICAL_NETWORKS`.
        weights: ``"pretrained"`` or the network's weights name (``"imagenet"``,
            ``"radimagenet"``, ``"medicalnet"``): its published file; a registry key such as
            ``"resnet50/imagenet"``; a path to a ``.pth`` file; or ``None`` for random
            weights (only when asked for).

    Returns:
        ``(trunk, source)``: the trunk (``conv1`` ... ``layer4``, named as in the network)
        returns the final feature map; ``source`` is the file path or ``"random"``.

    Raises:
        ValueError: Unknown network, or weights of another network.
        WeightsNotFoundError: The file is not found (the message says where to put it).
        WeightsIntegrityError: The file does not fit the network.
    """
    spec = _network(name).spec
    path = weights_file(name, weights)
    if path is None:  # the same random network in every build and process
        network, source = build_random(spec.build_features), "random"
    else:
        with torch.device("meta"):  # no random initialisation: every tensor is loaded
            network = spec.build_features()
        network = network.to_empty(device="cpu")
        load_network_state(network, name, path)
        source = str(path)
    network.requires_grad_(False)
    return network.eval(), source


@functools.cache
def _output_stride(backbone: str) -> int:
    """Input pixels per pixel of the final map (the extractor's geometry of ``layer4``)."""
    spec = get_backbone(backbone)
    from perceptual_loss.backbones.geometry import TrunkGeometry

    with torch.device("meta"):
        trunk = spec.build_features().eval()
    geometry = TrunkGeometry(list(trunk), {len(trunk) - 1: FINAL_LAYER},
                             in_channels=spec.in_channels, spatial_dims=spec.spatial_dims)
    return geometry.taps[FINAL_LAYER].stride


# -------------------------------------------------------------------------------------- loss
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
        extractor: The :class:`~perceptual_loss.extractor.FeatureExtractor` of the backbone,
            tapping ``layer4``.
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
        preset = _network(network)
        self.network_name = preset.name
        self.spatial_dims = preset.spatial_dims
        input_range = check_input_range(input_range)
        if not isinstance(channel_wise, bool):
            raise TypeError(f"channel_wise must be True or False; got {channel_wise!r}")
        if channel_wise and preset.spatial_dims != 3:
            raise ValueError(f"channel_wise=True needs a 3D MedicalNet network; {network!r} is "
                             "2D (its channels are colours): drop channel_wise")
        self.channel_wise = channel_wise
        if zscore is not None and preset.spatial_dims != 3:
            raise ValueError(f"zscore applies to 3D MedicalNet networks only; drop it for "
                             f"{network!r}")
        if zscore is not None:
            check_choice("zscore", zscore, ("batch", "volume"))
        self.zscore: ZScore | None = zscore or ("batch" if preset.spatial_dims == 3 else None)
        self.reduction: Reduction = check_reduction(reduction)
        self.weight = check_weight("weight", weight)
        self.eps = check_positive_number("eps", eps)
        self.fake_3d_ratio = check_positive_number("fake_3d_ratio", fake_3d_ratio)
        if self.fake_3d_ratio > 1:
            raise ValueError(f"fake_3d_ratio must be in (0, 1]; got {fake_3d_ratio!r}")
        if self.fake_3d_ratio < 1 and preset.spatial_dims == 3:
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
        path = weights_file(preset.name, weights)
        self.weights_source = "random" if path is None else str(path)
        normalization = get_normalization(preset.spec.normalization)
        if self.zscore is not None:
            normalization = dataclasses.replace(normalization, zscore=self.zscore)
        # Channels_last off: the values stay those of MONAI's NCHW network to the last bit.
        self.extractor = FeatureExtractor(
            preset.backbone, (FINAL_LAYER,), path, input_range=input_range,
            channel_mode="per_channel" if preset.spatial_dims == 3 else "repeat",
            normalization=normalization, check_values=check_values, channels_last=False)
        self.min_input_size = _output_stride(preset.backbone)
        self.register_load_state_dict_pre_hook(_rename_old_trunk_keys)

    @property
    def input_range(self) -> tuple[float, float]:
        """The declared ``(low, high)`` of the inputs."""
        return self.extractor.input_range

    @property
    def check_values(self) -> bool:
        """Whether inputs are checked for NaN/Inf and the declared range."""
        return self.extractor.check_values

    @property
    def network(self) -> nn.Module:
        """The frozen trunk, ``conv1`` ... ``layer4`` (the extractor's body)."""
        return self.extractor.body

    def __setattr__(self, name: str, value: object) -> None:
        # nn.Module would register an assigned trunk as a submodule of its own: give it to the
        # extractor instead (loss.network = other.network shares one trunk).
        if name == "network":
            self.extractor.body = value
            return
        super().__setattr__(name, value)

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
            # over the batch only: channel-wise values stay (C,); a scalar is already the
            # mean of slices drawn over the whole batch
            if value.ndim != 0 and self.reduction != "none":
                value = value.mean(0) if self.reduction == "mean" else value.sum(0)
            return value * self.weight if self.weight != 1.0 else value

    def _distance(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample distance ``(N,)`` (``(N, C)`` channel-wise) in float32."""
        channels = prediction.shape[1] if self.spatial_dims == 3 else 1
        features_a = self._features(prediction)
        with torch.no_grad():
            features_b = self._features(target)
        with torch.autocast(device_type=prediction.device.type, enabled=False):
            return unit_feature_distance(features_a, features_b, groups=channels,
                                         channel_wise=self.channel_wise, eps=self.eps)

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
        """The final feature map through the extractor; ``(N, C * F, ...)`` for volumes.

        A 3D network sees each of the ``C`` channels on its own (the extractor's
        ``per_channel`` mode); their features are stacked back per sample.
        """
        ((_, features),) = self.extractor.stream(x, check=False)
        if self.spatial_dims == 3:
            n, c = x.shape[:2]
            features = features.reshape(n, c * features.shape[1], *features.shape[2:])
        return features

    def _check(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Layout, channels and size by the shared checks; values in one synchronisation."""
        dims = 3 if self.spatial_dims == 3 else (2, 3)
        check_pair(check_image(prediction, "prediction", dims), check_image(target, "target", dims))
        if self.spatial_dims == 2 and prediction.shape[1] not in (1, 3):
            raise ValueError(f"{self.network_name!r} takes 1 (grayscale) or 3 (RGB) channels; "
                             f"got {prediction.shape[1]}: select or average the channels first")
        check_min_size(prediction, self.min_input_size, self.network_name, "its total stride")
        if self.check_values:
            check_values_of(((prediction, "prediction", value_role(prediction, prediction=True)),
                             (target, "target", value_role(target))), self.input_range,
                            self.extractor.value_warnings)

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


def _rename_old_trunk_keys(module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str,
                           *_: object) -> None:
    """Checkpoints written when the trunk was ``network``: its keys now sit in the extractor.

    They are then checked against the trunk like any frozen tensors of an old checkpoint.
    """
    old = f"{prefix}network."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[f"{prefix}extractor.body.{key[len(old):]}"] = state_dict.pop(key)


def _axis_planes(volume: torch.Tensor, axis: int) -> torch.Tensor:
    """The slices of ``(N, C, D, H, W)`` along ``axis`` as ``(N * S, C, h, w)``, volume-major.

    The order MONAI's ``batchify_axis`` gives (its draws index into it).
    """
    others = [d for d in (2, 3, 4) if d != axis]
    planes = volume.permute(0, axis, 1, *others)
    return planes.reshape(-1, volume.shape[1], *(volume.shape[d] for d in others))
