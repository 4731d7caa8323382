"""Loss modules: a recipe stored once, its terms computed by the shared term plan.

:class:`PerceptualLoss` holds a :class:`~perceptual_loss.recipe.Recipe` and a
:class:`~perceptual_loss.FeatureExtractor`; a forward validates both images once, streams them
through the trunk together and hands each layer's pair of maps to
:func:`~perceptual_loss.recipe.feature_terms`. Its functional form is
:func:`perceptual_loss.functional_loss.perceptual_loss`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from perceptual_loss._checks import (
    Reduction,
    check_choice,
    check_image,
    check_pair,
    check_positive_int,
    check_reduction,
    check_values,
    check_values_of,
    value_role,
)
from perceptual_loss._chunked import run_chunks
from perceptual_loss.execution import (
    ChannelsLast,
    ChunkSize,
    Convolution,
    check_chunk_size,
    check_convolution,
    choose_chunk_size,
    runs_lean,
)
from perceptual_loss.extractor import FeatureExtractor
from perceptual_loss.functional import (
    TORCH_OPS,
    gram_matrix,
    import_ssim,
    reduce,
    total_variation,
)
from perceptual_loss.recipe import (
    RECIPE_OPTIONS,
    Recipe,
    RecipeOptions,
    check_option_names,
    feature_distance_maps,
    feature_terms,
    pixel_terms,
)
from perceptual_loss.tiling import Tiler

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["PerceptualLoss", "TotalVariationLoss"]

#: Options that a given extractor fixes (they are the extractor's, not the loss's).
_EXTRACTOR_OPTIONS = frozenset({"input_range", "channel_mode", "resize", "normalization",
                                "check_values", "pooling"})
#: Recipe fields a PerceptualLoss exposes as read-only attributes: every option of the recipe
#: but those the class defines itself (properties) or that belong to its extractor's setup.
_RECIPE_ATTRIBUTES = RECIPE_OPTIONS - {"style_layers", "resize", "channel_mode", "normalization",
                                       "reduction"}


class PerceptualLoss(nn.Module):
    """Perceptual loss: distances between frozen-CNN feature maps, plus optional terms.

    ``total = feature_weight * sum_l w_l * d(F_l(x), F_l(y))``
    ``      + style_weight * sum_s v_s * d(G(F_s(x)), G(F_s(y)))``
    ``      + pixel_mse * MSE(x, y) + pixel_l1 * L1(x, y)``
    ``      + ssim_weight * (1 - SSIM(x, y)) + tv_weight * TV(x)``

    where each layer distance ``d`` is a mean over that layer's elements (per sample) and
    ``G`` is the Gram matrix normalised by ``C*H*W`` (float32). Pixel, SSIM and TV terms are
    computed on the images mapped to ``[0, 1]``, so their weights do not depend on
    ``input_range``. One backbone pass serves content and style; the target's features are
    computed without autograd unless the target itself requires grad. The defaults
    (VGG16, relu1_2/relu2_2/relu3_3/relu4_3, L1, unit weights) plus ``resize=224`` give the
    value of the widely used ``VGGPerceptualLoss`` recipe.

    Args:
        backbone: Backbone name (``vgg16``, ``vgg19``, ``vgg16_bn``, ...), or your own
            ``nn.Module`` (layers are then its ``named_modules()`` names, taps by forward
            hooks; it is frozen and put in eval mode in place, see
            :mod:`perceptual_loss.backbones.custom`).
        layers: Content layers (ours or Keras names); ``()`` for a pure style loss. ``None``:
            the extractor's layers when ``extractor`` is given, else :data:`DEFAULT_LAYERS`
            (relu1_2, relu2_2, relu3_3, relu4_3).
        weights: ``"imagenet"``, ``"keras-imagenet"``, a path, or ``None`` (random, explicit).
        criterion: Feature distance: ``"l1"``, ``"mse"``/``"l2"``, ``"charbonnier"``.
        layer_weights: One weight per content layer (sequence or ``{layer: weight}``).
        normalize_features: Scale each feature vector to unit length over channels first
            (LPIPS-style) so that every layer counts alike.
        feature_weight: Weight of the whole content term.
        style_layers: Layers whose Gram matrices are compared.
        style_weight: Weight of the whole style term.
        style_layer_weights: One weight per style layer.
        style_criterion: Distance between Gram matrices (default: ``criterion``).
        pixel_mse: Weight of the pixel MSE term.
        pixel_l1: Weight of the pixel L1 term.
        ssim_weight: Weight of ``1 - SSIM`` (needs ``pip install "perceptual-loss[ssim]"``).
        tv_weight: Weight of the total variation of the prediction.
        resize: Resize to this size before the backbone (the article uses 224), or ``None``.
        input_range: ``(low, high)`` of the images: ``(0, 1)``, ``(-1, 1)``, ``(0, 255)``...
        channel_mode: ``"repeat"`` (grayscale repeated to 3 channels) or ``"per_channel"``.
        normalization: Override the normalisation implied by the weights.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"`` for ``(N,)``.
        check_values: Check inputs for NaN/Inf and range (syncs the device; off for speed).
        charbonnier_eps: Smoothing constant of the Charbonnier distance.
        memory: ``"lean"`` (default): the frozen backbone keeps only what the input gradient
            needs (byte masks instead of float activations; same values and gradients).
            ``"plain"``: ordinary autograd, needed only for double backward.
        channels_last: Run the backbone in channels-last memory format. ``"auto"`` (default):
            on CPU, and under fp16/bf16 autocast on CUDA (:mod:`perceptual_loss.execution`);
            values differ from NCHW by float rounding only.
        chunk_size: Run the backbone on at most this many samples at a time. ``"auto"``
            (default): for a training step on CPU about one 256x256 image's pixels per
            chunk, i.e. one sample from 224x224 up, two at 160x160 (faster there, and a
            fraction of the plain computation's activations), the whole batch on CUDA and
            without gradient; ``None``: the whole batch. Values and gradients are those of the whole
            batch up to float rounding. ``memory="plain"`` with the ``"auto"``
            options is the plain computation itself (NCHW, whole batch, the framework's
            convolutions): bit-identical values, for users who need them.
        convolution: ``"auto"`` (default): on CPU in float32 the wide 3x3 layers (VGG16 from
            ``conv3_1`` on) run by Winograd F(4x4, 3x3): 0.4-0.6x their time, within 3e-6 of
            a float64 convolution (:mod:`perceptual_loss.execution`); ``"direct"``: the
            framework's kernels always.
        tile_size: Evaluate images larger than this many pixels a side in overlapping tiles
            (bounded memory for large images; content terms only, see
            :mod:`perceptual_loss.tiling`). ``None``: whole images.
        tile_overlap: Context of each tile; ``None``: the deepest layer's receptive margin,
            which makes the tiled value equal the whole-image value up to float rounding.
        pooling: ``"max"`` (default), ``"avg"``: 2x2 average pooling in place of max
            pooling in the VGG trunk, same weights (often preferred for style), or ``"l2"``
            (DISTS' Hanning L2 pooling).
        extractor: Reuse this prebuilt extractor instead of building one (its backbone,
            range, channel mode, resize, normalisation and value checks then apply).

    Shape:
        - prediction, target: ``(N, C, H, W)``, ``C`` in {1, 3}.
        - Output: scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> loss_fn = PerceptualLoss("vgg11", layers=("relu1_1",), weights=None, pixel_mse=1.0)
        >>> x, y = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
        >>> loss, parts = loss_fn(x, y, return_parts=True)
        >>> sorted(parts)
        ['content/relu1_1', 'pixel/mse']
    """

    def __init__(
        self,
        backbone: str | nn.Module = "vgg16",
        layers: Sequence[str] | None = None,
        weights: str | os.PathLike[str] | None = "imagenet",
        *,
        memory: Literal["lean", "plain"] = "lean",
        channels_last: ChannelsLast = "auto",
        chunk_size: ChunkSize = "auto",
        convolution: Convolution = "auto",
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        extractor: FeatureExtractor | None = None,
        **options: Unpack[RecipeOptions],
    ) -> None:
        check_option_names(options, "PerceptualLoss")
        if extractor is not None:
            if not isinstance(extractor, FeatureExtractor):
                raise TypeError(f"extractor must be a FeatureExtractor; got "
                                f"{type(extractor).__name__}")
            clash = sorted(set(options) & _EXTRACTOR_OPTIONS)
            if clash:
                raise ValueError(f"{', '.join(clash)} belong to the extractor given with "
                                 "extractor=...; set them when building it")
            recipe = Recipe.create(
                extractor.backbone, extractor.layers if layers is None else layers, None,
                input_range=extractor.input_range, channel_mode=extractor.channel_mode,
                resize=extractor.preprocess.resize, normalization=extractor.normalization,
                check_values=extractor.check_values, pooling=extractor.pooling, **options)
        else:
            recipe = Recipe.create(backbone, layers, weights, **options)
        self._setup(recipe, memory=memory, channels_last=channels_last, chunk_size=chunk_size,
                    convolution=convolution, extractor=extractor)
        self._set_tiles(tile_size, tile_overlap)

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, memory: Literal["lean", "plain"] = "lean",
                    channels_last: ChannelsLast = "auto", chunk_size: ChunkSize = "auto",
                    convolution: Convolution = "auto", tile_size: int | None = None,
                    tile_overlap: int | None = None,
                    extractor: FeatureExtractor | None = None) -> PerceptualLoss:
        """Build the loss a :class:`~perceptual_loss.recipe.Recipe` describes.

        Args:
            recipe: What to compute.
            memory: See the class docstring.
            channels_last: See the class docstring.
            chunk_size: See the class docstring.
            convolution: See the class docstring.
            tile_size: See the class docstring.
            tile_overlap: See the class docstring.
            extractor: Reuse this extractor (it must compute the recipe's layers).
        """
        self = cls.__new__(cls)
        self._setup(recipe, memory=memory, channels_last=channels_last, chunk_size=chunk_size,
                    convolution=convolution, extractor=extractor)
        self._set_tiles(tile_size, tile_overlap)
        return self

    def _set_tiles(self, tile_size: int | None, tile_overlap: int | None) -> None:
        self.tiler: Tiler | None = None
        #: Called after each tile (e.g. a progress bar's ``update``); ``None``: nothing.
        self.tile_callback: Callable[[], None] | None = None
        if tile_size is None:
            check_positive_int("tile_overlap", tile_overlap, allow_none=True, minimum=0)
            return
        if self.recipe.style_layers:
            raise ValueError("tile_size= evaluates content layers tile by tile; Gram matrices "
                             "(style_layers) need whole maps: drop one of the two")
        fx = self.extractor
        if fx is None or fx.geometry is None:
            raise ValueError("tile_size= needs feature layers of a registered backbone")
        self.tiler = Tiler(fx.geometry, self.recipe.layers, tile_size, tile_overlap,
                           name=fx.spec.name)

    def _setup(self, recipe: Recipe, *, memory: str, channels_last: ChannelsLast,
               chunk_size: ChunkSize, convolution: Convolution,
               extractor: FeatureExtractor | None) -> None:
        nn.Module.__init__(self)
        self.chunk_size = check_chunk_size(chunk_size)
        check_choice("memory", memory, ("lean", "plain"))
        check_convolution(convolution)
        if extractor is None and recipe.feature_layers:
            extractor = FeatureExtractor.from_recipe(recipe, memory=memory,  # type: ignore[arg-type]
                                                     channels_last=channels_last,
                                                     convolution=convolution)
        if extractor is not None:
            missing = [n for n in recipe.feature_layers if n not in extractor.layers]
            if missing:
                raise ValueError(f"the extractor does not compute layers {missing}; it has "
                                 f"{list(extractor.layers)}")
        self.extractor: FeatureExtractor | None = extractor if recipe.feature_layers else None
        self.recipe = recipe
        if recipe.ssim_weight:
            import_ssim()
        self._cached_target: dict[str, torch.Tensor] | None = None
        self._cached_style: dict[str, torch.Tensor] | None = None
        self._pixel_value_warnings: set[str] = set()

    # ------------------------------------------------------------------ the recipe's options
    def __getattr__(self, name: str) -> Any:
        if name in _RECIPE_ATTRIBUTES:
            return getattr(self.__dict__["recipe"], name)
        return super().__getattr__(name)

    @property
    def layers(self) -> tuple[str, ...]:
        """Canonical content layers."""
        return self.recipe.layers

    @property
    def style_layers(self) -> tuple[str, ...]:
        """Canonical style layers."""
        return self.recipe.style_layers

    @property
    def reduction(self) -> str:
        """``"mean"``, ``"sum"`` or ``"none"``; may be set (validated)."""
        return self.recipe.reduction

    @reduction.setter
    def reduction(self, value: str) -> None:
        self.recipe = self.recipe.replace(reduction=check_reduction(value))

    # ------------------------------------------------------------------ cached targets
    @torch.no_grad()
    def set_style_target(self, style_image: torch.Tensor) -> None:
        """Compute and cache the Gram matrices of a style image that never changes.

        Afterwards the style term compares against these Grams, whatever target is passed
        (content terms still use the per-call target). The style image may have any size.

        Args:
            style_image: ``(1, C, H, W)`` (shared by the batch) or ``(N, C, H, W)``.
        """
        if not self.style_layers or self.extractor is None:
            raise ValueError("set_style_target needs style_layers, e.g. style_layers="
                             "('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3')")
        wanted = set(self.style_layers)
        grams: dict[str, torch.Tensor] = {}
        for layer, feature in self.extractor.stream(style_image, "style_image"):
            if layer in wanted:
                grams[layer] = gram_matrix(feature)
                wanted.discard(layer)
            if not wanted:
                break
        self._cached_style = grams

    @torch.no_grad()
    def set_target(self, target: torch.Tensor) -> None:
        """Cache the features of a target that never changes; then call ``loss_fn(prediction)``.

        While a target is cached it is the target: passing another one to the call is refused
        (call :meth:`clear_target` first). The Keras loss follows the same rule; there
        ``y_true``, which Keras always passes, is ignored.

        Args:
            target: ``(1, C, H, W)`` (shared by the batch) or ``(N, C, H, W)``.
        """
        self._check_image(target, "target")
        self._cached_target = {"__image__": target.detach()}
        if self.extractor is not None:
            self._cached_target.update(
                {n: f.detach() for n, f in self.extractor.stream(target, "target", check=False)})

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202
        """Move and cast cached targets with the module (``.to``, ``.cuda``, ``.double``)."""
        super()._apply(fn, recurse)
        for name in ("_cached_target", "_cached_style"):
            cached = getattr(self, name)
            if cached is not None:
                setattr(self, name, {k: fn(v) for k, v in cached.items()})
        return self

    def clear_target(self) -> None:
        """Forget the target cached by :meth:`set_target`: targets are passed again."""
        self._cached_target = None

    def clear_style_target(self) -> None:
        """Forget the Gram matrices cached by :meth:`set_style_target`."""
        self._cached_style = None

    def clear_targets(self) -> None:
        """Forget targets cached by :meth:`set_target` and :meth:`set_style_target`."""
        self.clear_target()
        self.clear_style_target()

    # ------------------------------------------------------------------ forward
    def forward(self, prediction: torch.Tensor, target: torch.Tensor | None = None, *,
                return_parts: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Compute the loss.

        Args:
            prediction: ``(N, C, H, W)`` in ``input_range``.
            target: Same shape; may be omitted after :meth:`set_target`.
            return_parts: Also return ``{term: value}``: each term's weighted contribution to
                the total (detached; ``(N,)`` with ``reduction="none"``, else reduced). Keys:
                ``content/<layer>``, ``style/<layer>``, ``pixel/mse``, ``pixel/l1``, ``ssim``,
                ``tv``.

        Returns:
            The loss (scalar or ``(N,)``), or ``(loss, parts)`` with ``return_parts=True``.
        """
        target_image = self._validated_target(prediction, target)
        terms: dict[str, torch.Tensor] = {}
        carried: torch.Tensor | None = None  # feature terms whose gradient was taken already
        height, width = prediction.shape[-2:]
        if self.tiler is not None and self.tiler.needed(height, width):
            terms.update(self._tiled_terms(prediction, target_image))
        elif self.extractor is not None:
            features, carried = self._feature_terms(prediction, target)
            terms.update(features)
        pixels = (pixel_terms(self.recipe, prediction, target_image, TORCH_OPS)
                  if self.recipe.has_pixel_terms else {})
        terms.update(pixels)
        if carried is not None:
            total = carried + sum(pixels.values()) if pixels else carried
        else:
            total = torch.stack(list(terms.values())).sum(0)
        loss = reduce(total, self.reduction)  # type: ignore[arg-type]
        if not return_parts:
            return loss
        parts = {name: reduce(value.detach(), self.reduction)  # type: ignore[arg-type]
                 for name, value in terms.items()}
        return loss, parts

    def _check_image(self, x: object, name: str, *, values: bool = True,
                     prediction: bool = False) -> torch.Tensor:
        """Validate one image batch by the extractor's rules when there is one."""
        if self.extractor is not None:
            return self.extractor.check_input(x, name, values=values, prediction=prediction)
        x = check_image(x, name)
        if self.recipe.check_values and values:
            check_values(x, name, self.recipe.input_range, value_role(x, prediction=prediction),
                         self._value_warnings)
        return x

    @property
    def _value_warnings(self) -> set[str]:
        """Names already warned about: the extractor's set, or this loss's own without one."""
        if self.extractor is not None:
            return self.extractor.value_warnings
        return self._pixel_value_warnings

    def _validated_target(self, prediction: torch.Tensor, target: torch.Tensor | None
                          ) -> torch.Tensor:
        """Validate both images once; return the target image (given or cached).

        The values of both are checked with one device synchronisation.
        """
        if target is not None and self._cached_target is not None:
            raise ValueError("a target is cached with set_target(): call loss_fn(prediction) "
                             "to compare with it, or clear_target() before passing targets")
        if target is None:
            self._check_image(prediction, "prediction", prediction=True)
        else:  # shapes, dtypes and devices first: the clearest message
            dims = self.extractor.spatial_dims if self.extractor is not None else 2
            check_pair(check_image(prediction, "prediction", dims),
                       check_image(target, "target", dims))
            self._check_image(prediction, "prediction", values=False)
            self._check_image(target, "target", values=False)
            if self.recipe.check_values:
                check_values_of(((prediction, "prediction", value_role(prediction,
                                                                      prediction=True)),
                                 (target, "target", value_role(target))),
                                self.recipe.input_range, self._value_warnings)
            return target
        if self._cached_target is None:
            raise ValueError("target is missing: pass one, or cache it with set_target()")
        cached = self._cached_target["__image__"]
        batch = prediction.shape[0]
        if cached.shape[1:] != prediction.shape[1:] or cached.shape[0] not in (1, batch):
            raise ValueError(
                f"cached target has shape {tuple(cached.shape)}, prediction "
                f"{tuple(prediction.shape)}: cache one image (batch 1, shared by every "
                f"sample) or exactly {batch} of the same size with set_target()"
            )
        return cached

    def _tiled_terms(self, prediction: torch.Tensor, target: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
        """Content terms of a large image, from maps stitched tile by tile.

        Each tile's maps are the recipe's own (:func:`~perceptual_loss.recipe.
        feature_distance_maps`: criterion, normalised features, layer and feature weights),
        so the mean of a stitched map is the content term of the whole image.
        """
        assert self.tiler is not None and self.extractor is not None
        fx, recipe = self.extractor, self.recipe
        target = target.expand_as(prediction)

        def tile_maps(a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
            pairs = ((layer, p, t) for (layer, p), (_, t) in zip(
                fx.stream(a, "prediction", check=False), fx.stream(b, "target", check=False),
                strict=True))
            return list(feature_distance_maps(recipe, pairs, TORCH_OPS, a.shape[0]).values())

        maps = self.tiler.maps(prediction, target, tile_maps, prediction.shape[0],
                               self.tile_callback)
        return {f"content/{layer}": layer_map.mean(dim=(1, 2, 3))
                for layer, layer_map in zip(recipe.layers, maps, strict=True)}

    def _feature_terms(self, prediction: torch.Tensor, target: torch.Tensor | None
                       ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Content and style terms, the batch run in chunks (see :mod:`._chunked`)."""
        n = prediction.shape[0]
        assert self.extractor is not None
        target_grad = target is not None and target.requires_grad
        needs_grad = torch.is_grad_enabled() and (prediction.requires_grad or target_grad)
        lean = runs_lean(self.extractor.memory)
        chunk = choose_chunk_size(self.chunk_size, prediction.device, needs_grad=needs_grad,
                                  plain=not lean, batch=n,
                                  pixels=prediction.shape[-2] * prediction.shape[-1])

        def terms_of(rows_input: torch.Tensor, rows: slice) -> dict[str, torch.Tensor]:
            maps = self._paired_maps(rows_input, target, rows, n)
            return feature_terms(self.recipe, maps, TORCH_OPS, rows_input.shape[0],
                                 self._cached_style)

        if chunk is None:  # the whole batch; no Python arithmetic on N (compiled: dynamic N)
            return terms_of(prediction, slice(None)), None
        chunk = min(chunk, n)
        eager = needs_grad and lean and chunk < n and not target_grad
        return run_chunks(prediction, chunk, terms_of, eager_backward=eager)

    def _paired_maps(self, prediction: torch.Tensor, target: torch.Tensor | None, rows: slice,
                     whole: int) -> Iterator[tuple[str, torch.Tensor, torch.Tensor | None]]:
        """``(layer, prediction map, target map)`` as both images reach each layer.

        The target runs without autograd (unless it requires grad itself) and stops after the
        last layer it serves; with the lean trunk only byte masks stay for backward.
        """
        assert self.extractor is not None
        fx = self.extractor
        needed = set(self.recipe.target_layers(self._cached_style is not None))
        target_stream = None
        grad_target = False
        if target is not None and needed:
            target = target[rows]
            grad_target = torch.is_grad_enabled() and target.requires_grad
            target_stream = fx.stream(target, "target", check=False)
        cached = self._cached_target if target is None else None
        for layer, p in fx.stream(prediction, "prediction", check=False):
            t = None
            if target_stream is not None:
                with torch.set_grad_enabled(grad_target):
                    _, t = next(target_stream)
                needed.discard(layer)
                if not needed:
                    target_stream.close()
                    target_stream = None
            elif cached is not None and layer in cached:
                t = cached[layer]
                if rows != slice(None) and cached["__image__"].shape[0] == whole and whole != 1:
                    per_image = t.shape[0] // whole  # this chunk's rows (channels per image)
                    t = t[rows.start * per_image: rows.stop * per_image]
            yield layer, p, t
            del p, t

    def extra_repr(self) -> str:
        recipe = self.recipe
        parts = [f"layers={recipe.layers}", f"criterion={recipe.criterion!r}"]
        if recipe.style_layers:
            parts.append(f"style_layers={recipe.style_layers}, style_weight={recipe.style_weight}")
        for name in ("pixel_mse", "pixel_l1", "ssim_weight", "tv_weight"):
            if getattr(recipe, name):
                parts.append(f"{name}={getattr(recipe, name)}")
        parts.append(f"reduction={recipe.reduction!r}")
        return ", ".join(parts)


class TotalVariationLoss(nn.Module):
    """Total variation of images (smoothness prior used in style transfer).

    Args:
        kind: ``"l1"`` (anisotropic) or ``"l2"`` (squared differences).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(N,)``).

    Shape:
        - Input: ``(N, C, H, W)``, ``H, W >= 2``.
        - Output: scalar, or ``(N,)``.
    """

    def __init__(self, kind: Literal["l1", "l2"] = "l1", reduction: Reduction = "mean") -> None:
        super().__init__()
        self.kind = check_choice("kind", kind, ("l1", "l2"))
        self.reduction = check_reduction(reduction)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Total variation of ``images``."""
        check_image(images, "images")
        return reduce(total_variation(images, self.kind), self.reduction)
