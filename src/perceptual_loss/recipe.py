"""The recipe: what a perceptual loss computes, resolved and validated once, for every front end.

A :class:`Recipe` is plain, frozen, hashable data: canonical layer names, per-layer weights,
criteria, style, pixel, SSIM and TV terms, value range, channel handling, normalisation,
resize and reduction. The torch :class:`~perceptual_loss.PerceptualLoss`, the functional form
(whose module cache is keyed by the recipe), the Keras loss (whose ``get_config`` is
:meth:`Recipe.to_config`), the command line and the apps all build one with
:meth:`Recipe.create` and compute it with the term plan below.

The term plan (:func:`feature_terms`, :func:`pixel_terms`) is written once against a handful of
backend primitives (:class:`Ops`: distance, Gram matrix, channel normalisation, SSIM, TV), which
torch (:data:`perceptual_loss.functional.TORCH_OPS`) and ``keras.ops``
(``perceptual_loss.keras.functional.KERAS_OPS``) provide. A new term or criterion is added here
and in those primitives, and every front end has it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypedDict

from torch import nn

from perceptual_loss._checks import (
    check_choice,
    check_input_range,
    check_reduction,
    check_weight,
)
from perceptual_loss.backbones import get_backbone
from perceptual_loss.backbones.custom import ModuleSpec
from perceptual_loss.backbones.pooling import POOLINGS
from perceptual_loss.functional import CRITERIA, Ops
from perceptual_loss.preprocess import NORMALIZATIONS, Normalization, as_size, get_normalization
from perceptual_loss.weights import is_random

__all__ = [
    "CHANNEL_MODES",
    "CRITERIA",
    "DEFAULT_LAYERS",
    "POOLINGS",
    "RECIPE_OPTIONS",
    "RECIPE_OPTION_NAMES",
    "TERM_WEIGHTS",
    "Ops",
    "Recipe",
    "RecipeOptions",
    "block_ends",
    "check_option_names",
    "default_layers",
    "feature_distance_maps",
    "feature_terms",
    "group_parts",
    "pixel_terms",
    "term_group",
]

#: The PyTorch article's layers: the ends of VGG16's first four blocks.
DEFAULT_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CHANNEL_MODES: tuple[str, ...] = ("repeat", "per_channel")

Tensor = Any  # a torch.Tensor or a Keras backend tensor


class RecipeOptions(TypedDict, total=False):
    """The keyword options every front end accepts beside backbone, layers and weights."""

    criterion: str
    layer_weights: Sequence[float] | Mapping[str, float] | None
    normalize_features: bool
    feature_weight: float
    style_layers: Sequence[str]
    style_weight: float
    style_layer_weights: Sequence[float] | Mapping[str, float] | None
    style_criterion: str | None
    pixel_mse: float
    pixel_l1: float
    ssim_weight: float
    tv_weight: float
    resize: int | Sequence[int] | None
    input_range: Sequence[float]
    channel_mode: str
    normalization: str | Normalization | None
    reduction: str
    check_values: bool
    charbonnier_eps: float
    pooling: str


def check_option_names(options: Mapping[str, Any], owner: str,
                       extra: Sequence[str] = ()) -> None:
    """Refuse keyword options that no front end knows, naming the nearest known one.

    Raises:
        TypeError: An unknown option; the message lists the valid ones.
    """
    valid = sorted(RECIPE_OPTIONS | set(extra))
    for name in options:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{owner} got an unknown option {name!r}.{hint} Options: "
                            f"{', '.join(valid)}")


@dataclass(frozen=True)
class Recipe:
    """Everything a perceptual loss computes, resolved and validated (build with :meth:`create`).

    Attributes:
        backbone: Registered backbone name, or your own ``nn.Module``.
        layers: Canonical content layers, in the order given.
        weights: ``None`` (random, explicit) or the weights as given: a name, a registry key
            or a path (as a string).
        criterion: Feature distance (``"l1"``, ``"mse"``, ``"l2"``, ``"charbonnier"``).
        layer_weights: One weight per content layer.
        normalize_features: Unit-length feature vectors over channels before the distance.
        feature_weight: Weight of the whole content term.
        style_layers: Canonical style layers.
        style_weight: Weight of the whole style term.
        style_layer_weights: One weight per style layer.
        style_criterion: Distance between Gram matrices.
        pixel_mse: Weight of the pixel MSE term.
        pixel_l1: Weight of the pixel L1 term.
        ssim_weight: Weight of ``1 - SSIM``.
        tv_weight: Weight of the total variation of the prediction.
        resize: ``(height, width)`` before the backbone, or ``None``.
        input_range: ``(low, high)`` of the images, finite, ``low < high``.
        channel_mode: ``"repeat"`` or ``"per_channel"``.
        normalization: A normalisation name or :class:`Normalization` overriding the weights'
            own, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        check_values: Check inputs for NaN/Inf and range.
        charbonnier_eps: Smoothing constant of the Charbonnier distance.
        pooling: ``"max"`` (the trained network), ``"avg"`` (2x2 average pooling instead) or
            ``"l2"`` (DISTS' Hanning L2 pooling).
    """

    backbone: str | nn.Module = "vgg16"
    layers: tuple[str, ...] = DEFAULT_LAYERS
    weights: str | None = "imagenet"
    criterion: str = "l1"
    layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    normalize_features: bool = False
    feature_weight: float = 1.0
    style_layers: tuple[str, ...] = ()
    style_weight: float = 1.0
    style_layer_weights: tuple[float, ...] = ()
    style_criterion: str = "l1"
    pixel_mse: float = 0.0
    pixel_l1: float = 0.0
    ssim_weight: float = 0.0
    tv_weight: float = 0.0
    resize: tuple[int, int] | None = None
    input_range: tuple[float, float] = (0.0, 1.0)
    channel_mode: str = "repeat"
    normalization: str | Normalization | None = None
    reduction: str = "mean"
    check_values: bool = True
    charbonnier_eps: float = 1e-3
    pooling: str = "max"

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        backbone: str | nn.Module = "vgg16",
        layers: Sequence[str] | None = None,
        weights: str | os.PathLike[str] | None = "imagenet",
        *,
        criterion: str = "l1",
        layer_weights: Sequence[float] | Mapping[str, float] | None = None,
        normalize_features: bool = False,
        feature_weight: float = 1.0,
        style_layers: Sequence[str] = (),
        style_weight: float = 1.0,
        style_layer_weights: Sequence[float] | Mapping[str, float] | None = None,
        style_criterion: str | None = None,
        pixel_mse: float = 0.0,
        pixel_l1: float = 0.0,
        ssim_weight: float = 0.0,
        tv_weight: float = 0.0,
        resize: int | Sequence[int] | None = None,
        input_range: Sequence[float] = (0.0, 1.0),
        channel_mode: str = "repeat",
        normalization: str | Normalization | None = None,
        reduction: str = "mean",
        check_values: bool = True,
        charbonnier_eps: float = 1e-3,
        pooling: str = "max",
        canonical: Callable[[str], str] | None = None,
    ) -> Recipe:
        """Resolve and validate options into a recipe (the one place options are checked).

        Args mirror :class:`~perceptual_loss.PerceptualLoss`; ``layers=None`` means
        :data:`DEFAULT_LAYERS`. ``canonical`` resolves layer names for a backbone that is
        not registered (a module of your own); by default the registry's spec does.

        Raises:
            ValueError: An unknown name (backbone, layer, criterion, reduction, channel mode,
                normalisation, pooling), a negative/NaN/infinite weight, a bad range or size,
                or nothing to compute; the message names the option and the fix.
            TypeError: An option of the wrong type.
        """
        if canonical is None:
            if isinstance(backbone, nn.Module):
                if layers is None:
                    raise ValueError("name the layers of your own backbone to compare, e.g. "
                                     "layers=('layer1', 'layer2'): its named_modules() names")
                canonical = ModuleSpec.of(backbone).canonical
            elif isinstance(backbone, str):
                canonical = get_backbone(backbone).canonical
            else:
                raise TypeError(f"backbone must be a registered name such as 'vgg16' or an "
                                f"nn.Module; got {type(backbone).__name__}")
        content = _names(DEFAULT_LAYERS if layers is None else layers, "layers", canonical)
        style = _names(style_layers, "style_layers", canonical)
        criterion = _criterion("criterion", criterion)
        values = {name: check_weight(name, value) for name, value in (
            ("feature_weight", feature_weight), ("style_weight", style_weight),
            ("pixel_mse", pixel_mse), ("pixel_l1", pixel_l1), ("ssim_weight", ssim_weight),
            ("tv_weight", tv_weight))}
        eps = check_weight("charbonnier_eps", charbonnier_eps)
        if eps == 0:
            raise ValueError("charbonnier_eps must be > 0 (it smooths the distance at 0)")
        if not isinstance(check_values, bool):
            raise TypeError(f"check_values must be True or False; got {check_values!r}")
        if normalization is not None and not isinstance(normalization, Normalization):
            resolved = get_normalization(normalization)  # a name, or (mean, std)
            normalization = resolved.name if resolved.name != "custom" else resolved
        recipe = cls(
            backbone=backbone,
            layers=content,
            weights=_weights_value(weights),
            criterion=criterion,
            layer_weights=_per_layer(layer_weights, content, "layer_weights", canonical),
            normalize_features=bool(normalize_features),
            style_layers=style,
            style_layer_weights=_per_layer(style_layer_weights, style, "style_layer_weights",
                                           canonical),
            style_criterion=(criterion if style_criterion is None
                             else _criterion("style_criterion", style_criterion)),
            resize=as_size(resize),
            input_range=check_input_range(input_range),
            channel_mode=check_choice("channel_mode", channel_mode, CHANNEL_MODES),
            normalization=normalization,
            reduction=check_reduction(reduction),
            check_values=check_values,
            charbonnier_eps=eps,
            pooling=check_choice("pooling", pooling, POOLINGS),
            **values,
        )
        if not recipe.feature_layers and not recipe.has_pixel_terms:
            raise ValueError("nothing to compute: give layers, style_layers or a pixel term "
                             "(pixel_mse, pixel_l1, ssim_weight, tv_weight)")
        if recipe.ssim_weight and isinstance(backbone, str) and get_backbone(
                backbone).spatial_dims == 3:
            raise ValueError(f"ssim_weight is 2D SSIM, but {backbone!r} takes volumes "
                             "(N, C, D, H, W): drop ssim_weight, or score 2D slices with "
                             "perceptual_loss.volumes.VolumePerceptualLoss")
        return recipe

    def replace(self, **changes: Any) -> Recipe:
        """A validated copy with some options changed (e.g. ``reduction="none"``)."""
        options = {**self.to_options(), **changes}
        return Recipe.create(**options)

    def to_options(self) -> dict[str, Any]:
        """The recipe as keyword arguments of :meth:`create` (per-layer weights as sequences)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_config(self) -> dict[str, Any]:
        """JSON-friendly fields (lists for tuples), e.g. for Keras' ``get_config``.

        Raises:
            TypeError: A module backbone, or a :class:`Normalization` object instead of a name,
                cannot be saved.
        """
        if not isinstance(self.backbone, str):
            raise TypeError("a loss on your own nn.Module backbone cannot be saved as a config; "
                            "rebuild it in code")
        if isinstance(self.normalization, Normalization):
            if (self.normalization.name in NORMALIZATIONS
                    and NORMALIZATIONS[self.normalization.name] == self.normalization):
                return {**self.replace(normalization=self.normalization.name).to_config()}
            raise TypeError("a custom Normalization cannot be saved in a config; register it "
                            "by name or pass a known name ('imagenet', 'caffe', 'lpips', 'none')")
        config = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Recipe:
        """Rebuild a recipe from :meth:`to_config` output (validated again)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown recipe fields {unknown}; known: {sorted(known)}")
        return cls.create(**dict(config))

    # ------------------------------------------------------------------ questions
    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Every layer the backbone must reach: content then style, without duplicates."""
        return tuple(dict.fromkeys(self.layers + self.style_layers))

    @property
    def has_pixel_terms(self) -> bool:
        """Whether a pixel, SSIM or TV term is on."""
        return bool(self.pixel_mse or self.pixel_l1 or self.ssim_weight or self.tv_weight)

    def target_layers(self, style_cached: bool) -> frozenset[str]:
        """Layers whose target maps are needed (none for style when its Grams are cached)."""
        return frozenset(self.layers) | (frozenset() if style_cached else
                                         frozenset(self.style_layers))

    def term_names(self) -> list[str]:
        """Names of the terms this recipe returns, in order."""
        names = [f"content/{layer}" for layer in self.layers]
        names += [f"style/{layer}" for layer in self.style_layers]
        names += [name for name, weight in (("pixel/mse", self.pixel_mse),
                                            ("pixel/l1", self.pixel_l1),
                                            ("ssim", self.ssim_weight), ("tv", self.tv_weight))
                  if weight]
        return names


#: The keyword options of :meth:`Recipe.create` beside backbone, layers and weights, in field
#: order: the recipe's own fields, so a new field is a new option everywhere.
RECIPE_OPTION_NAMES: tuple[str, ...] = tuple(
    f.name for f in fields(Recipe) if f.name not in ("backbone", "layers", "weights"))
#: :data:`RECIPE_OPTION_NAMES` as a set.
RECIPE_OPTIONS: frozenset[str] = frozenset(RECIPE_OPTION_NAMES)
if set(RecipeOptions.__annotations__) != RECIPE_OPTIONS:  # pragma: no cover - caught by tests
    raise TypeError(f"RecipeOptions and the Recipe fields differ: "
                    f"{sorted(set(RecipeOptions.__annotations__) ^ RECIPE_OPTIONS)}")

#: Each term group of :func:`group_parts`: the :class:`Recipe` field that weighs it, and what
#: it measures.
TERM_WEIGHTS: dict[str, tuple[str, str]] = {
    "mse": ("pixel_mse", "mean squared error on pixels"),
    "l1": ("pixel_l1", "mean absolute error on pixels"),
    "content": ("feature_weight", "feature (content) distance on the chosen layers"),
    "style": ("style_weight", "Gram-matrix (style) distance on the style layers"),
    "ssim": ("ssim_weight", "1 - SSIM on pixels"),
    "tv": ("tv_weight", "total variation of the output (smoothness)"),
}


def term_group(name: str) -> str:
    """The group of a part: ``"content/relu2_2"`` -> ``"content"``, ``"pixel/mse"`` -> ``"mse"``.

    Example:
        >>> [term_group(n) for n in ("content/relu1_2", "style/relu2_2", "pixel/l1", "tv")]
        ['content', 'style', 'l1', 'tv']
    """
    head, _, tail = name.partition("/")
    return tail if head == "pixel" else head


def group_parts(parts: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Sum the parts of a loss by term group (:func:`term_group`), in order of appearance.

    Args:
        parts: ``{part name: value}`` as ``return_parts=True`` gives them, e.g.
            ``{"content/relu1_2": ..., "content/relu2_2": ..., "pixel/mse": ...}``; values are
            numbers or tensors of one shape (scalars, or ``(N,)`` with ``reduction="none"``).

    Returns:
        ``{"content": sum of the content parts, "mse": ..., ...}``.

    Example:
        >>> group_parts({"content/relu1_2": 0.5, "content/relu2_2": 0.25, "pixel/mse": 0.1})
        {'content': 0.75, 'mse': 0.1}
    """
    grouped: dict[str, Tensor] = {}
    for name, value in parts.items():
        key = term_group(name)
        grouped[key] = grouped[key] + value if key in grouped else value
    return grouped


def block_ends(backbone: str) -> tuple[str, ...]:
    """The last layer of every block of a registered backbone: the one before each pooling.

    Args:
        backbone: A registered backbone name.

    Returns:
        Canonical layer names, shallow to deep (the last layer when nothing pools).

    Raises:
        ValueError: An unknown backbone (the message lists the known ones).

    Example:
        >>> block_ends("vgg11")
        ('relu1_1', 'relu2_1', 'relu3_2', 'relu4_2', 'relu5_2')
    """
    names = get_backbone(backbone).layer_names
    chosen = tuple(names[i - 1] for i, name in enumerate(names) if name.startswith("pool") and i)
    return chosen or (names[-1],)


def default_layers(backbone: str, preferred: Sequence[str] = DEFAULT_LAYERS) -> tuple[str, ...]:
    """``preferred`` when the backbone has them all, else the ends of as many of its blocks.

    VGG-16/19 have relu1_2, relu2_2, relu3_3, relu4_3; VGG-11 and VGG-13 have fewer
    convolutions per block, so they get the last ReLU of each of their first four blocks.

    Args:
        backbone: A registered backbone name.
        preferred: The layers to use when they all exist.

    Returns:
        Canonical layer names of ``backbone``.

    Example:
        >>> default_layers("vgg11")
        ('relu1_1', 'relu2_1', 'relu3_2', 'relu4_2')
        >>> default_layers("vgg13")
        ('relu1_2', 'relu2_2', 'relu3_2', 'relu4_2')
    """
    names = get_backbone(backbone).layer_names
    if all(name in names for name in preferred):
        return tuple(preferred)
    return block_ends(backbone)[:len(preferred)]


# ---------------------------------------------------------------------------- the term plan
def feature_terms(recipe: Recipe, maps: Iterable[tuple[str, Tensor, Tensor | None]], ops: Ops,
                  n: int, cached_grams: Mapping[str, Tensor] | None = None
                  ) -> dict[str, Tensor]:
    """Weighted content and style terms, one ``(N,)`` value each, from paired feature maps.

    Args:
        recipe: What to compute.
        maps: ``(layer, prediction map, target map)`` in depth order; the target map may be
            ``None`` for a layer whose target is not needed (style with cached Grams). A
            consumer that drops each pair before asking for the next keeps one layer alive.
        ops: Backend primitives.
        n: Images in the batch (the maps hold ``n * C`` in ``per_channel`` mode).
        cached_grams: ``{style layer: Gram}`` of a style image cached once.

    Returns:
        ``{"content/<layer>": (N,), ..., "style/<layer>": (N,), ...}``, content first, each
        in the order the layers were given.
    """
    content = dict(zip(recipe.layers, recipe.layer_weights, strict=True))
    style = dict(zip(recipe.style_layers, recipe.style_layer_weights, strict=True))
    found: dict[str, Tensor] = {}
    for layer, prediction, target in maps:
        if layer in content:
            p, t = prediction, ops.match_batch(target, prediction)
            if recipe.normalize_features:
                p, t = ops.normalize(p), ops.normalize(t)
            distance = ops.distance(p, t, recipe.criterion, recipe.charbonnier_eps)
            found[f"content/{layer}"] = (recipe.feature_weight * content[layer]
                                         * ops.per_image(distance, n))
        if layer in style:
            gram_p = ops.gram(prediction)
            if cached_grams is not None:
                gram_t = ops.match_batch(cached_grams[layer], gram_p)
            else:
                gram_t = ops.gram(ops.match_batch(target, prediction))
            distance = ops.distance(gram_p, gram_t, recipe.style_criterion,
                                    recipe.charbonnier_eps)
            found[f"style/{layer}"] = (recipe.style_weight * style[layer]
                                       * ops.per_image(distance, n))
    names = [f"content/{k}" for k in recipe.layers] + [f"style/{k}" for k in recipe.style_layers]
    return {name: found[name] for name in names}


def feature_distance_maps(recipe: Recipe, maps: Iterable[tuple[str, Tensor, Tensor]], ops: Ops,
                          n: int) -> dict[str, Tensor]:
    """Where each content term sits: per content layer, its weighted distance at each position.

    The same maths as :func:`feature_terms` without the mean over positions: at each position
    of a layer, ``feature_weight * layer weight * distance summed over channels / channels``
    (not divided for ``"sse"``, which sums over channels; features normalised first with
    ``normalize_features``; in ``per_channel`` mode the image's channels averaged). The mean
    of a layer's map over its positions is therefore the layer's content term, and a map
    stitched from tiles or upsampled to the image (by a whole factor) keeps that mean.

    Args:
        recipe: What to compute.
        maps: ``(layer, prediction map, target map)``; layers that are not content layers are
            skipped.
        ops: Backend primitives; ``ops.distance_map`` is needed.
        n: Images in the batch (the maps hold ``n * C`` in ``per_channel`` mode).

    Returns:
        ``{"content/<layer>": (N, 1, h, w)}`` in the order of ``recipe.layers``, for the
        content layers found in ``maps``.

    Raises:
        NotImplementedError: A backend without ``distance_map``.
    """
    if ops.distance_map is None:
        raise NotImplementedError("this backend has no distance_map primitive; use torch")
    content = dict(zip(recipe.layers, recipe.layer_weights, strict=True))
    found: dict[str, Tensor] = {}
    for layer, prediction, target in maps:
        if layer not in content:
            continue
        p, t = prediction, ops.match_batch(target, prediction)
        if recipe.normalize_features:
            p, t = ops.normalize(p), ops.normalize(t)
        density = ops.distance_map(p, t, recipe.criterion, recipe.charbonnier_eps)
        if recipe.criterion != "sse":  # the other criteria average over channels
            density = density / p.shape[1]
        if density.shape[0] != n:  # per_channel: the image's channels were stacked
            density = density.reshape(n, -1, *density.shape[1:]).mean(1)
        found[f"content/{layer}"] = recipe.feature_weight * content[layer] * density
    return {f"content/{k}": found[f"content/{k}"] for k in recipe.layers
            if f"content/{k}" in found}


def pixel_terms(recipe: Recipe, prediction: Tensor, target: Tensor, ops: Ops
                ) -> dict[str, Tensor]:
    """Weighted pixel MSE/L1, ``1 - SSIM`` and TV terms, one ``(N,)`` value each.

    Computed on the images mapped to ``[0, 1]``, so the weights do not depend on
    ``input_range``; ``target`` may hold one image broadcast over the batch.
    """
    low, high = recipe.input_range
    prediction01 = (prediction - low) / (high - low)
    target01 = ops.match_batch((target - low) / (high - low), prediction01)
    terms: dict[str, Tensor] = {}
    if recipe.pixel_mse:
        terms["pixel/mse"] = recipe.pixel_mse * ops.distance(prediction01, target01, "mse", 0.0)
    if recipe.pixel_l1:
        terms["pixel/l1"] = recipe.pixel_l1 * ops.distance(prediction01, target01, "l1", 0.0)
    if recipe.ssim_weight:
        terms["ssim"] = recipe.ssim_weight * (1.0 - ops.ssim(prediction01, target01))
    if recipe.tv_weight:
        terms["tv"] = recipe.tv_weight * ops.total_variation(prediction01)
    return terms


# ---------------------------------------------------------------------------- option helpers
def _names(layers: Sequence[str] | str, what: str, canonical: Callable[[str], str]
           ) -> tuple[str, ...]:
    if isinstance(layers, str):
        layers = (layers,)
    try:
        items = list(layers)
    except TypeError:
        raise TypeError(f"{what} must be a sequence of layer names such as ('relu2_2',); got "
                        f"{type(layers).__name__}") from None
    for name in items:
        if not isinstance(name, str):
            raise TypeError(f"{what} must hold layer names (strings); got {name!r}")
    return tuple(dict.fromkeys(canonical(name) for name in items))


def _criterion(what: str, value: object) -> str:
    if value not in CRITERIA:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(CRITERIA)}")
    return str(value)


def _weights_value(weights: object) -> str | None:
    if is_random(weights):
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be a name, a registry key, a path or None; got "
                        f"{type(weights).__name__}")
    return os.fspath(weights)


def _per_layer(weights: Sequence[float] | Mapping[str, float] | None, layers: tuple[str, ...],
               what: str, canonical: Callable[[str], str]) -> tuple[float, ...]:
    if weights is None:
        return tuple(1.0 for _ in layers)
    if isinstance(weights, Mapping):
        given = {canonical(k): check_weight(f"{what}[{k!r}]", v) for k, v in weights.items()}
        unknown = sorted(set(given) - set(layers))
        if unknown:
            raise ValueError(f"{what} names layers {unknown} that are not in {list(layers)}")
        return tuple(given.get(layer, 1.0) for layer in layers)
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Iterable):
        raise TypeError(f"{what} must be a sequence of numbers or {{layer: weight}}; got "
                        f"{type(weights).__name__}")
    values = tuple(check_weight(f"{what}[{i}]", w) for i, w in enumerate(weights))
    if len(values) != len(layers):
        raise ValueError(f"{what} has {len(values)} values for {len(layers)} layers {list(layers)}")
    return values

