"""The loss mix of a training run: ``"mse=1,perceptual=0.1"`` parsed into a recipe.

A spec names terms and weights (:data:`LOSS_TERMS`); :class:`LossConfig` adds the backbone,
layers and weights, and :func:`loss_recipe` turns it into the library's
:class:`~perceptual_loss.recipe.Recipe`, so training computes exactly what the library does.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from perceptual_loss.backbones import list_backbones
from perceptual_loss.losses import PerceptualLoss
from perceptual_loss.medical import MEDICAL_NETWORKS, MedicalPerceptualLoss
from perceptual_loss.recipe import TERM_WEIGHTS, Recipe, default_layers
from perceptual_loss.weights import WeightsNotFoundError, is_random

__all__ = [
    "DEFAULT_STYLE_LAYERS",
    "LOSS_TERMS",
    "LossConfig",
    "MedicalMix",
    "build_loss",
    "loss_recipe",
    "parse_loss_spec",
    "perceptual_distance_module",
]

#: The spec's name of the content term; every other spec name is a term group of the recipe.
CONTENT_TERM = "perceptual"
#: Names accepted in a loss spec, and what each weighs: the recipe's term groups
#: (:data:`~perceptual_loss.recipe.TERM_WEIGHTS`), the content term named ``perceptual``.
LOSS_TERMS: dict[str, str] = {
    CONTENT_TERM if group == "content" else group: description
    for group, (_, description) in TERM_WEIGHTS.items()
}
#: Layers whose Gram matrices carry the style (Johnson et al. 2016).
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


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
        return self.terms.get(CONTENT_TERM, 0.0) > 0 or self.terms.get("style", 0.0) > 0

    def describe(self) -> str:
        """Human-readable summary, e.g. ``mse=1, perceptual=0.1 (vgg16, random weights)``."""
        mix = ", ".join(f"{name}={weight:g}" for name, weight in self.terms.items())
        if not self.needs_backbone:
            return mix
        weights = "random weights" if is_random(self.weights) else f"weights {self.weights}"
        return f"{mix} ({self.backbone}, {weights})"


def _content_layers(config: LossConfig) -> tuple[str, ...]:
    """The ``perceptual`` term's layers: as given, else the library's default for the backbone."""
    return tuple(config.layers) if config.layers else default_layers(config.backbone)


def loss_recipe(config: LossConfig) -> Recipe:
    """The :class:`~perceptual_loss.recipe.Recipe` of a :class:`LossConfig`'s mix.

    Raises:
        ValueError: For unknown layers or backbones (from the library).
    """
    content = config.terms.get(CONTENT_TERM, 0.0) > 0
    style = config.terms.get("style", 0.0) > 0
    return Recipe.create(
        config.backbone,
        layers=_content_layers(config) if content else (),
        weights=None if is_random(config.weights) else os.fspath(config.weights),
        style_layers=tuple(config.style_layers
                           or default_layers(config.backbone, DEFAULT_STYLE_LAYERS))
        if style else (),
        **_recipe_weights(config),
    )


def _recipe_weights(config: LossConfig) -> dict[str, float]:
    """The spec's positive weights as the recipe's fields (``perceptual`` weighs content)."""
    return {TERM_WEIGHTS["content" if name == CONTENT_TERM else name][0]: weight
            for name, weight in config.terms.items() if weight > 0}


class MedicalMix(nn.Module):
    """Pixel terms plus the perceptual term of a medical network, as one loss module.

    ``loss_fn(prediction, target, return_parts=True)`` as :class:`PerceptualLoss` does; the
    perceptual part is keyed ``"perceptual/<network>"``.

    Args:
        pixels: The pixel, SSIM and TV terms (a :class:`PerceptualLoss` without layers), or
            ``None``.
        medical: The :class:`~perceptual_loss.MedicalPerceptualLoss` (``reduction="none"``).
        weight: Weight of its term.
    """

    def __init__(self, pixels: PerceptualLoss | None, medical: MedicalPerceptualLoss,
                 weight: float) -> None:
        super().__init__()
        self.pixels, self.medical, self.weight = pixels, medical, weight

    def forward(self, prediction: torch.Tensor, target: torch.Tensor, *,
                return_parts: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mix's mean over the batch (and its parts with ``return_parts``)."""
        term = self.weight * self.medical(prediction, target)
        parts = {f"perceptual/{self.medical.network_name}": term.detach().mean()}
        total = term.mean()
        if self.pixels is not None:
            value, pixel_parts = self.pixels(prediction, target, return_parts=True)
            total = total + value
            parts.update(pixel_parts)
        return (total, parts) if return_parts else total


def build_loss(config: LossConfig) -> PerceptualLoss | MedicalMix:
    """Build the :class:`PerceptualLoss` that computes a :class:`LossConfig`'s mix.

    With a 2D medical network as backbone (``radimagenet_resnet50``, ``resnet50``) the
    ``perceptual`` term is :class:`~perceptual_loss.MedicalPerceptualLoss` on it (MONAI's
    definition) and the loss is a :class:`MedicalMix`; style terms need a VGG backbone.

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
    if config.backbone in MEDICAL_NETWORKS and not _names_layers(config):
        return _medical_mix(config)
    return PerceptualLoss.from_recipe(loss_recipe(config))


def _names_layers(config: LossConfig) -> bool:
    """Whether the mix names layers of a medical network: then it is an ordinary recipe.

    Without ``--layers``/``--style-layers`` a medical network compares its final map as MONAI
    does (:class:`MedicalMix`); with them it is a backbone like any other.
    """
    style = config.terms.get("style", 0.0) > 0
    if style and not config.style_layers and config.backbone in list_backbones():
        raise ValueError(f"{config.backbone} has no default style layers: name them, e.g. "
                         "--style-layers layer1,layer2 (and --layers for the content term)")
    return bool(config.layers or config.style_layers)


def _medical_mix(config: LossConfig) -> MedicalMix:
    network = MEDICAL_NETWORKS[config.backbone]
    if network.spatial_dims != 2:
        raise ValueError(f"{config.backbone} is a 3D network; training here runs on 2D slices: "
                         "use radimagenet_resnet50 or resnet50 (or MedicalPerceptualLoss on "
                         "volumes in your own loop)")
    if config.terms.get("style", 0.0) > 0:
        raise ValueError(f"{config.backbone} is a preset of its final feature map (as MONAI "
                         "compares it): for a style term use its backbone and name the layers, "
                         "e.g. --style-layers layer1,layer2")
    medical = MedicalPerceptualLoss(config.backbone, weights=_medical_weights(config.weights),
                                    reduction="none")
    image_terms = {name: weight for name, weight in _recipe_weights(config).items()
                   if name not in (TERM_WEIGHTS["content"][0], TERM_WEIGHTS["style"][0])}
    pixels = None
    if image_terms:
        pixels = PerceptualLoss.from_recipe(Recipe.create(layers=(), weights=None, **image_terms))
    return MedicalMix(pixels, medical, config.terms.get(CONTENT_TERM, 0.0))


def perceptual_distance_module(
    backbone: str, weights: str | Path | None
) -> tuple[nn.Module | None, str | None]:
    """The perceptual distance used in reports: L1 on the backbone's default layers.

    The layers are :func:`perceptual_loss.recipe.default_layers` of the backbone:

    relu1_2, relu2_2, relu3_3, relu4_3 (the library defaults) on VGG-16/19.

    Args:
        backbone: Backbone name.
        weights: Backbone weights (as for :class:`PerceptualLoss`).

    Returns:
        ``(module, None)``, or ``(None, reason)`` when the weights cannot be had (the report
        then says why the column is missing instead of failing the run).
    """
    try:
        # Random weights (weights=None) are drawn from a fixed seed, so reports of
        # different runs measure with the same network.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if backbone in MEDICAL_NETWORKS:
                return MedicalPerceptualLoss(backbone, weights=_medical_weights(weights)), None
            return PerceptualLoss(backbone, default_layers(backbone), weights), None
    except WeightsNotFoundError as error:
        return None, _missing_weights_note(error)


def _medical_weights(weights: str | os.PathLike[str] | None) -> str | None:
    """A medical network's weights: the command line's default ``imagenet`` is its own file.

    ``MedicalPerceptualLoss`` calls a network's published file ``"pretrained"``
    (RadImageNet's for ``radimagenet_resnet50``), so the training default stands for it.
    """
    if is_random(weights):
        return None
    return "pretrained" if weights == "imagenet" else os.fspath(weights)  # type: ignore[arg-type]


def _missing_weights_note(error: WeightsNotFoundError) -> str:
    """One line for the report and the console: which file is missing and the fixes."""
    key = getattr(error, "key", None)
    if key is None:  # a path or a name that is not in the registry
        return f"perceptual distance of the report not computed: {' '.join(str(error).split())}"
    folders = getattr(error, "folders", ())
    folder = f" or copy it into {folders[0]}" if folders else ""
    return (f"perceptual distance of the report not computed: weights file "
            f"{error.weights_file} ({key}) is not here. Fetch it with `perceptual weights "
            f"fetch {key}`{folder}, or run with --weights random (weights=None) for an "
            "untrained network")
