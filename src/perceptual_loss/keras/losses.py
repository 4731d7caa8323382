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

from perceptual_loss.keras._compat import import_keras
from perceptual_loss.keras.extractor import FeatureExtractor, check_range
from perceptual_loss.keras.functional import KERAS_OPS, gram_matrix
from perceptual_loss.recipe import (
    DEFAULT_LAYERS,
    Recipe,
    RecipeOptions,
    check_option_names,
    feature_terms,
    pixel_terms,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

keras = import_keras()
ops = keras.ops

__all__ = ["PerceptualLoss"]

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
    Backend-agnostic (``keras.ops`` only): tested on the torch and JAX backends.

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
        check_values: Check both images for NaN/Inf and range where they hold values (eager
            steps, e.g. the torch backend); compiled JAX/TensorFlow steps skip it.
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
        check_option_names(options, "perceptual_loss.keras.PerceptualLoss")
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

    def __getattr__(self, name: str) -> Any:
        recipe = self.__dict__.get("recipe")
        if recipe is not None and name in Recipe.__dataclass_fields__ and name != "reduction":
            return getattr(recipe, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ Keras API
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
    def compute_parts(self, y_true: Tensor, y_pred: Tensor) -> dict[str, Tensor]:
        """Each term's weighted contribution, for logging.

        Args:
            y_true: ``(N, H, W, C)`` target images.
            y_pred: ``(N, H, W, C)`` predictions.

        Returns:
            ``{term: value}`` with keys ``content/<layer>``, ``style/<layer>``,
            ``pixel/mse``, ``pixel/l1``, ``ssim``, ``tv``; each ``(N,)`` with
            ``reduction="none"``, else reduced like the loss (without sample weights).
            Gradients are stopped.
        """
        y_true = ops.convert_to_tensor(y_true, dtype=self.dtype)
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

    def set_style_target(self, style_image: Tensor) -> None:
        """Compute and cache the Gram matrices of a style image that never changes.

        Afterwards the style term compares against these Grams whatever ``y_true`` is
        (content terms still use ``y_true``): the style-transfer setting, where ``y_true`` is
        the content image. The style image may have any size.

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

    def _terms(self, y_true: Tensor, y_pred: Tensor) -> dict[str, Tensor]:
        """``{term name: (N,) weighted value}`` in the order of the recipe."""
        self._check_pair(y_true, y_pred)
        y_true = ops.stop_gradient(y_true)
        recipe = self.recipe
        terms: dict[str, Tensor] = {}
        if self.extractor is not None:
            predicted = self.extractor(y_pred, "y_pred")
            needed = recipe.target_layers(self._cached_style is not None)
            target = ({k: ops.stop_gradient(v) for k, v in self.extractor(y_true, "y_true").items()}
                      if needed else {})
            maps = [(layer, predicted[layer], target.get(layer))
                    for layer in recipe.feature_layers]
            terms.update(feature_terms(recipe, maps, KERAS_OPS, ops.shape(y_pred)[0],
                                       self._cached_style))
        if recipe.has_pixel_terms:
            if self.extractor is None and recipe.check_values:
                check_range(y_pred, "y_pred", recipe.input_range)
                check_range(y_true, "y_true", recipe.input_range)
            terms.update(pixel_terms(recipe, y_pred, y_true, KERAS_OPS))
        return terms
