"""``keras.losses.Loss`` front end: the same recipe and term plan as the PyTorch loss.

The options are resolved by :meth:`perceptual_loss.recipe.Recipe.create` (same names, same
checks, same defaults), the frozen trunk is copied into Keras layers once, and the terms are
computed by :func:`perceptual_loss.recipe.feature_terms` and ``pixel_terms`` with ``keras.ops``
primitives. Given the same weights and settings both front ends return the same value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from perceptual_loss import recipe as plan
from perceptual_loss.keras._compat import import_keras
from perceptual_loss.keras.extractor import FeatureExtractor, check_range
from perceptual_loss.keras.functional import KERAS_OPS, gram_matrix
from perceptual_loss.recipe import DEFAULT_LAYERS, Recipe, RecipeOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

keras = import_keras()
ops = keras.ops

__all__ = ["PerceptualLoss"]

_IMAGE = "__image__"  # the cached target image, next to its feature maps

Tensor = Any  # a backend tensor (torch.Tensor, jax.Array, tf.Tensor)

# Keras' names for the reductions, mapped to the PyTorch vocabulary they equal for (N,) losses.
_REDUCTIONS: dict[str | None, str] = {
    "mean": "mean",
    "sum_over_batch_size": "mean",
    "mean_with_sample_weight": "mean",
    "sum": "sum",
    "none": "none",
    None: "none",
}


@keras.saving.register_keras_serializable(package="perceptual_loss")
class PerceptualLoss(keras.losses.Loss):
    """Perceptual loss for ``model.compile(loss=...)`` on channels-last images.

    ``total = feature_weight * sum_l w_l * d(F_l(y_pred), F_l(y_true))``
    ``      + style_weight * sum_s v_s * d(G(F_s(y_pred)), G(F_s(y_true)))``
    ``      + pixel_mse * MSE + pixel_l1 * L1 + ssim_weight * (1 - SSIM) + tv_weight * TV``

    the same sum as :class:`perceptual_loss.PerceptualLoss`: each layer distance ``d`` is a
    mean over that layer's elements per sample, ``G`` is the Gram matrix normalised by
    ``C*H*W`` in float32, and the pixel and TV terms are computed on the images mapped to
    ``[0, 1]``. The model being trained stays a plain image-to-image model: ``y_true`` is the
    target image, the frozen backbone runs inside the loss, and ``model.predict`` gives images.

    Keras passes ``(y_true, y_pred)``; the target goes through the backbone without gradient.
    A target that never changes can be cached with :meth:`set_target` (then ``y_true`` is
    ignored) and a style image's Gram matrices with :meth:`set_style_target`.
    Backend-agnostic (``keras.ops`` only): tested on the torch, JAX and TensorFlow backends.
    Gram matrices, feature norms and distances are computed in float32 under a
    ``mixed_float16`` policy (the backbone itself runs in the policy's dtype).

    Args:
        backbone: Backbone name (``vgg16``, ``vgg19``, ``vgg16_bn``, ...).
        layers: Content layers, ours (``relu3_3``, ``conv3_3``) or Keras names
            (``block3_conv3``); ``()`` for a pure style or pixel loss.
        weights: ``"imagenet"`` (the torchvision file), ``"keras-imagenet"`` (the Keras
            Applications "notop" file, VGG16/VGG19, Caffe preprocessing), a registry key, a path
            to a ``.pth``/``.h5`` file, or ``None`` (random, explicit). Files are found as by
            the PyTorch side (``PERCEPTUAL_LOSS_WEIGHTS_DIR``, torch hub cache,
            ``~/.keras/models``); a missing file is an error that names it.
        criterion: Feature distance: ``"l1"``, ``"mse"``/``"l2"`` or ``"charbonnier"``.
        layer_weights: One weight per content layer (sequence or ``{layer: weight}``).
        normalize_features: Scale each feature vector to unit length over channels first.
        feature_weight: Weight of the whole content term.
        style_layers: Layers whose Gram matrices are compared.
        style_weight: Weight of the whole style term.
        style_layer_weights: One weight per style layer.
        style_criterion: Distance between Gram matrices (default: ``criterion``).
        pixel_mse: Weight of the pixel MSE term (on images mapped to ``[0, 1]``).
        pixel_l1: Weight of the pixel L1 term (on images mapped to ``[0, 1]``).
        ssim_weight: Weight of ``1 - SSIM`` (Gaussian window 11, sigma 1.5, on ``[0, 1]``),
            the value of pytorch-msssim, computed with ``keras.ops``.
        tv_weight: Weight of the total variation of the prediction.
        resize: Resize (bilinear) to this size before the backbone, or ``None``.
        input_range: ``(low, high)`` of the images: ``(0, 1)``, ``(-1, 1)``, ``(0, 255)``...
        channel_mode: ``"repeat"`` (grayscale repeated to 3 channels) or ``"per_channel"``.
        normalization: Override the normalisation implied by the weights.
        reduction: ``"mean"`` (Keras' ``"sum_over_batch_size"``), ``"sum"`` or ``"none"``
            (``(N,)``); ``"mean_with_sample_weight"`` is passed on to Keras.
        check_values: Check both images for NaN/Inf and values outside ``input_range``:
            eagerly, and inside compiled JAX/TensorFlow steps as part of the step (an error
            when the step runs; XLA-compiled TensorFlow steps cannot raise and warn instead).
            ``False`` skips it (it costs a device synchronisation per image).
        charbonnier_eps: Smoothing constant of the Charbonnier distance.
        pooling: ``"max"`` (default) or ``"avg"`` (2x2 average pooling instead, same weights).
        name: Name of the loss (Keras logs it).
        dtype: Dtype the inputs are cast to; defaults to ``keras.config.floatx()``.

    Shape:
        - y_true, y_pred: ``(N, H, W, C)``, ``C`` in {1, 3} (any ``C`` with
          ``channel_mode="per_channel"``).
        - Output: scalar, or ``(N,)`` with ``reduction="none"``.

    Example:
        >>> import numpy as np
        >>> loss_fn = PerceptualLoss("vgg11", layers=("block1_conv1",), weights=None,
        ...                          pixel_mse=1.0)
        >>> rng = np.random.default_rng(0)
        >>> y_true, y_pred = rng.random((2, 2, 16, 16, 3), dtype="float32")
        >>> tuple(loss_fn(y_true, y_pred).shape)
        ()
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        layers: Sequence[str] | None = DEFAULT_LAYERS,
        weights: str | os.PathLike[str] | None = "imagenet",
        *,
        reduction: str | None = "mean",
        name: str = "perceptual_loss",
        dtype: str | None = None,
        **options: Unpack[RecipeOptions],
    ) -> None:
        plan.check_option_names(options, "perceptual_loss.keras.PerceptualLoss")
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"reduction must be 'mean', 'sum' or 'none' (or a Keras name: "
                f"'sum_over_batch_size', 'mean_with_sample_weight'); got {reduction!r}"
            )
        normalization = options.get("normalization")
        if normalization is not None and not isinstance(normalization, str):
            raise TypeError(
                f"normalization must be a name such as 'imagenet' or 'caffe' (so the loss can "
                f"be saved with the model); got {type(normalization).__name__}"
            )
        options.pop("reduction", None)  # type: ignore[misc]
        recipe = Recipe.create(backbone, layers, weights, reduction=_REDUCTIONS[reduction],
                               **options)
        super().__init__(name=name, reduction="none" if reduction is None else reduction,
                         dtype=dtype)
        self.recipe = recipe
        self.extractor: FeatureExtractor | None = (
            FeatureExtractor.from_recipe(self.recipe) if self.recipe.feature_layers else None)
        self._cached_style: dict[str, Tensor] | None = None
        self._cached_target: dict[str, Tensor] | None = None
        self._target_grams: dict[str, Tensor] | None = None
        self._value_warnings: set[str] = set()  # pixel-only losses: warn once (see check_range)

    def __getattr__(self, name: str) -> Any:
        recipe = self.__dict__.get("recipe")
        if recipe is not None and name in Recipe.__dataclass_fields__ and name != "reduction":
            return getattr(recipe, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ Keras API
    def __call__(self, y_true: Tensor | None, y_pred: Tensor, sample_weight: Tensor | None = None
                 ) -> Tensor:
        """The reduced loss; ``y_true`` may be ``None`` once :meth:`set_target` cached one."""
        return super().__call__(self._true_or_placeholder(y_true, y_pred), y_pred, sample_weight)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        """Per-sample loss ``(N,)``; Keras applies the reduction and any sample weights."""
        terms = list(self._terms(y_true, y_pred).values())
        total = terms[0]
        for value in terms[1:]:
            total = total + value
        return total

    def get_config(self) -> dict[str, Any]:
        """The recipe's fields plus Keras' own (name, reduction, dtype).

        Weights are re-read from their file when the loss is rebuilt; with ``weights=None`` a
        rebuilt loss has new random weights.
        """
        config = super().get_config()
        recipe = self.recipe.to_config()
        recipe.pop("reduction")  # Keras' own reduction (its vocabulary) is in ``config``
        config.update(recipe)
        return config

    # ------------------------------------------------------------------ extras
    def compute_parts(self, y_true: Tensor | None, y_pred: Tensor) -> dict[str, Tensor]:
        """Each term's weighted contribution, for logging.

        Args:
            y_true: ``(N, H, W, C)`` target images (ignored, and may be ``None``, after
                :meth:`set_target`).
            y_pred: ``(N, H, W, C)`` predictions.

        Returns:
            ``{term: value}`` with keys ``content/<layer>``, ``style/<layer>``,
            ``pixel/mse``, ``pixel/l1``, ``ssim``, ``tv``; each ``(N,)`` with
            ``reduction="none"``, else reduced like the loss (without sample weights).
            Gradients are stopped.
        """
        y_true = ops.convert_to_tensor(self._true_or_placeholder(y_true, y_pred), dtype=self.dtype)
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        parts = {}
        for name, value in self._terms(y_true, y_pred).items():
            value = ops.stop_gradient(value)
            if self.recipe.reduction == "sum":
                value = ops.sum(value)
            elif self.recipe.reduction == "mean":
                value = ops.mean(value)
            parts[name] = value
        return parts

    def set_target(self, target: Tensor) -> None:
        """Cache a target that never changes; afterwards ``y_true`` is ignored.

        Keras always passes ``y_true``; with a cached target the loss compares ``y_pred`` with
        this target instead, whatever ``y_true`` holds: fit with any array of the right
        length (``model.fit(x, x)``), or call ``loss(None, y_pred)``. The target's feature maps
        (and Gram matrices for style layers) are computed once, so each step runs the backbone
        on ``y_pred`` only. Pixel, SSIM and TV terms use the cached image too.

        On JAX and TensorFlow a compiled step holds the values it was traced with: set
        targets before ``compile`` and compile again after changing them. Cached targets are
        not saved with the model.

        Args:
            target: ``(1, H, W, C)`` (shared by every sample) or ``(N, H, W, C)`` (one per
                sample of a batch of exactly ``N``), in ``input_range``, the size of
                ``y_pred``.

        Raises:
            ValueError: The image is invalid (rank, channels, size, values).
        """
        target = ops.convert_to_tensor(target, dtype=self.dtype)
        if self.extractor is None and self.recipe.check_values:
            check_range(target, "target", self.recipe.input_range)
        cached: dict[str, Tensor] = {_IMAGE: ops.stop_gradient(target)}
        grams: dict[str, Tensor] = {}
        if self.extractor is not None:
            feats = self.extractor(target, "target")
            cached.update({n: ops.stop_gradient(feats[n]) for n in self.recipe.layers})
            grams = {n: ops.stop_gradient(gram_matrix(feats[n])) for n in self.recipe.style_layers}
        self._cached_target, self._target_grams = cached, grams or None

    def clear_target(self) -> None:
        """Forget the target cached by :meth:`set_target`: ``y_true`` is used again."""
        self._cached_target = self._target_grams = None

    def set_style_target(self, style_image: Tensor) -> None:
        """Compute and cache the Gram matrices of a style image that never changes.

        Afterwards the style term compares against these Grams whatever ``y_true`` is
        (content terms still use ``y_true``): the style-transfer setting, where ``y_true`` is
        the content image. The style image may have any size. As for :meth:`set_target`,
        compiled JAX/TensorFlow steps hold the Grams they were traced with.

        Args:
            style_image: ``(1, H, W, C)`` (shared by the batch) or ``(N, H, W, C)``.

        Raises:
            ValueError: The loss has no style layers, or the image is invalid.
        """
        if not self.recipe.style_layers or self.extractor is None:
            raise ValueError("set_style_target needs style_layers, e.g. style_layers="
                             "('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3')")
        style_image = ops.convert_to_tensor(style_image, dtype=self.dtype)
        feats = self.extractor(style_image, "style_image")
        self._cached_style = {n: ops.stop_gradient(gram_matrix(feats[n]))
                              for n in self.recipe.style_layers}

    def clear_style_target(self) -> None:
        """Forget the Gram matrices cached by :meth:`set_style_target`."""
        self._cached_style = None

    def clear_targets(self) -> None:
        """Forget everything cached by :meth:`set_target` and :meth:`set_style_target`."""
        self.clear_target()
        self.clear_style_target()

    # ------------------------------------------------------------------ maths
    def _check_pair(self, y_true: Tensor, y_pred: Tensor) -> None:
        true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
        comparable = len(true_shape) == len(pred_shape) and all(
            a is None or b is None or a == b for a, b in zip(true_shape, pred_shape, strict=True))
        if not comparable:
            raise ValueError(
                f"y_true and y_pred must have the same shape (N, H, W, C); got {true_shape} "
                f"and {pred_shape}. The model must output images of the target's size."
            )

    def _true_or_placeholder(self, y_true: Tensor | None, y_pred: Tensor) -> Tensor:
        """``y_true``, or ``y_pred`` standing in for it (unused) when a target is cached."""
        if y_true is not None:
            return y_true
        if self._cached_target is None:
            raise ValueError("y_true is None: pass the target images, or cache a fixed target "
                             "with loss.set_target(image)")
        return y_pred

    def _terms(self, y_true: Tensor, y_pred: Tensor) -> dict[str, Tensor]:
        """``{term name: (N,) weighted value}`` in the order of the recipe."""
        recipe = self.recipe
        cached = self._cached_target
        if cached is None:
            self._check_pair(y_true, y_pred)
            target_image = ops.stop_gradient(y_true)
        else:
            self._check_cached(cached[_IMAGE], y_pred)
            target_image = cached[_IMAGE]
        grams = self._cached_style or (self._target_grams if cached is not None else None)
        terms: dict[str, Tensor] = {}
        if self.extractor is not None:
            predicted = self.extractor(y_pred, "y_pred", "training output")
            if cached is not None:
                target = cached
            elif recipe.target_layers(grams is not None):
                target = {k: ops.stop_gradient(v)
                          for k, v in self.extractor(target_image, "y_true").items()}
            else:
                target = {}
            maps = [(layer, predicted[layer], target.get(layer))
                    for layer in recipe.feature_layers]
            terms.update(plan.feature_terms(recipe, maps, KERAS_OPS, ops.shape(y_pred)[0],
                                            grams))
        if recipe.has_pixel_terms:
            if self.extractor is None and recipe.check_values:
                check_range(y_pred, "y_pred", recipe.input_range, "training output",
                            self._value_warnings)
                if cached is None:
                    check_range(target_image, "y_true", recipe.input_range)
            terms.update(plan.pixel_terms(recipe, y_pred, target_image, KERAS_OPS))
        return terms

    @staticmethod
    def _check_cached(image: Tensor, y_pred: Tensor) -> None:
        cached, pred = tuple(image.shape), tuple(y_pred.shape)
        fits = len(cached) == len(pred) and all(
            a is None or b is None or a == b for a, b in zip(cached[1:], pred[1:], strict=True))
        if not fits or (pred[0] is not None and cached[0] not in (1, pred[0])):
            raise ValueError(
                f"the cached target has shape {cached}, y_pred {pred}: cache one image (batch "
                "1, shared by every sample) or a batch of the same size with set_target(), "
                "or clear_target() to use y_true"
            )
