"""``keras.losses.Loss`` front end of :class:`perceptual_loss.PerceptualLoss`.

The options are resolved by the PyTorch class itself (same names, same checks, same defaults),
then the frozen trunk is copied into Keras layers and every term is computed with
``keras.ops``. Given the same weights and settings both front ends return the same value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from perceptual_loss.extractor import DEFAULT_LAYERS
from perceptual_loss.functional import Criterion
from perceptual_loss.keras._compat import import_keras
from perceptual_loss.keras.extractor import FeatureExtractor, check_range
from perceptual_loss.keras.functional import (
    feature_distance,
    gram_matrix,
    normalize_channels,
    total_variation,
)
from perceptual_loss.losses import PerceptualLoss as TorchPerceptualLoss
from perceptual_loss.preprocess import ChannelMode

keras = import_keras()
ops = keras.ops

__all__ = ["PerceptualLoss"]

Tensor = Any  # a backend tensor (torch.Tensor, jax.Array, tf.Tensor)

# Keras' names for the reductions, mapped to the PyTorch vocabulary they equal for (N,) losses.
_REDUCTIONS: dict[str | None, str] = {
    "mean": "mean",
    "sum_over_batch_size": "mean",
    "sum": "sum",
    "none": "none",
    None: "none",
}


@keras.saving.register_keras_serializable(package="perceptual_loss")
class PerceptualLoss(keras.losses.Loss):
    """Perceptual loss for ``model.compile(loss=...)`` on channels-last images.

    ``total = feature_weight * sum_l w_l * d(F_l(y_pred), F_l(y_true))``
    ``      + style_weight * sum_s v_s * d(G(F_s(y_pred)), G(F_s(y_true)))``
    ``      + pixel_mse * MSE + pixel_l1 * L1 + tv_weight * TV(y_pred)``

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
        criterion: Criterion = "l1",
        layer_weights: Sequence[float] | Mapping[str, float] | None = None,
        normalize_features: bool = False,
        feature_weight: float = 1.0,
        style_layers: Sequence[str] = (),
        style_weight: float = 1.0,
        style_layer_weights: Sequence[float] | Mapping[str, float] | None = None,
        style_criterion: Criterion | None = None,
        pixel_mse: float = 0.0,
        pixel_l1: float = 0.0,
        tv_weight: float = 0.0,
        resize: int | Sequence[int] | None = None,
        input_range: tuple[float, float] = (0.0, 1.0),
        channel_mode: ChannelMode = "repeat",
        normalization: str | None = None,
        reduction: str | None = "mean",
        check_values: bool = True,
        charbonnier_eps: float = 1e-3,
        name: str = "perceptual_loss",
        dtype: str | None = None,
    ) -> None:
        if reduction not in _REDUCTIONS and reduction != "mean_with_sample_weight":
            raise ValueError(
                f"reduction must be 'mean', 'sum' or 'none' (or a Keras name: "
                f"'sum_over_batch_size', 'mean_with_sample_weight'); got {reduction!r}"
            )
        if normalization is not None and not isinstance(normalization, str):
            raise TypeError(
                f"normalization must be a name such as 'imagenet' or 'caffe' (so the loss can "
                f"be saved with the model); got {type(normalization).__name__}"
            )
        super().__init__(name=name, reduction="none" if reduction is None else reduction,
                         dtype=dtype)
        self._config: dict[str, Any] = {
            "backbone": backbone,
            "layers": None if layers is None else list(layers) if not isinstance(layers, str)
            else [layers],
            "weights": None if weights is None else os.fspath(weights),
            "criterion": criterion,
            "layer_weights": _plain(layer_weights),
            "normalize_features": bool(normalize_features),
            "feature_weight": float(feature_weight),
            "style_layers": [style_layers] if isinstance(style_layers, str)
            else list(style_layers),
            "style_weight": float(style_weight),
            "style_layer_weights": _plain(style_layer_weights),
            "style_criterion": style_criterion,
            "pixel_mse": float(pixel_mse),
            "pixel_l1": float(pixel_l1),
            "tv_weight": float(tv_weight),
            "resize": resize if resize is None or isinstance(resize, int) else list(resize),
            "input_range": [float(input_range[0]), float(input_range[1])]
            if isinstance(input_range, Sequence) and len(input_range) == 2 else input_range,
            "channel_mode": channel_mode,
            "normalization": normalization,
            "check_values": bool(check_values),
            "charbonnier_eps": float(charbonnier_eps),
        }
        # The PyTorch class validates and resolves every option (layer names and aliases,
        # weights files, per-layer weights, range, resize); the Keras side mirrors the result.
        resolved = TorchPerceptualLoss(
            backbone, layers, weights, criterion=criterion, layer_weights=layer_weights,
            normalize_features=normalize_features, feature_weight=feature_weight,
            style_layers=style_layers, style_weight=style_weight,
            style_layer_weights=style_layer_weights, style_criterion=style_criterion,
            pixel_mse=pixel_mse, pixel_l1=pixel_l1, tv_weight=tv_weight, resize=resize,
            input_range=input_range, channel_mode=channel_mode, normalization=normalization,
            reduction=_REDUCTIONS.get(reduction, "mean"), check_values=check_values,
            charbonnier_eps=charbonnier_eps,
        )
        self.extractor: FeatureExtractor | None = (
            FeatureExtractor.from_torch(resolved.extractor)
            if resolved.extractor is not None else None
        )
        self.layers: tuple[str, ...] = resolved.layers
        self.style_layers: tuple[str, ...] = resolved.style_layers
        self.layer_weights: tuple[float, ...] = resolved.layer_weights
        self.style_layer_weights: tuple[float, ...] = resolved.style_layer_weights
        self.criterion: str = resolved.criterion
        self.style_criterion: str = resolved.style_criterion
        self.normalize_features: bool = resolved.normalize_features
        self.feature_weight: float = resolved.feature_weight
        self.style_weight: float = resolved.style_weight
        self.pixel_mse: float = resolved.pixel_mse
        self.pixel_l1: float = resolved.pixel_l1
        self.tv_weight: float = resolved.tv_weight
        self.input_range: tuple[float, float] = resolved.input_range
        self.check_values: bool = resolved.check_values
        self.charbonnier_eps: float = resolved.charbonnier_eps
        self._cached_style: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ Keras API
    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        """Per-sample loss ``(N,)``; Keras applies the reduction and any sample weights."""
        terms = self._terms(y_true, y_pred)
        total = terms[0][1]
        for _, value in terms[1:]:
            total = total + value
        return total

    def get_config(self) -> dict[str, Any]:
        """Everything needed to rebuild the loss (weights are re-read from their file).

        With ``weights=None`` a rebuilt loss has new random weights.
        """
        config = super().get_config()
        config.update(self._config)
        return config

    # ------------------------------------------------------------------ extras
    def compute_parts(self, y_true: Tensor, y_pred: Tensor) -> dict[str, Tensor]:
        """Each term's weighted contribution, for logging.

        Args:
            y_true: ``(N, H, W, C)`` target images.
            y_pred: ``(N, H, W, C)`` predictions.

        Returns:
            ``{term: value}`` with keys ``content/<layer>``, ``style/<layer>``,
            ``pixel/mse``, ``pixel/l1``, ``tv``; each ``(N,)`` with ``reduction="none"``,
            else reduced like the loss (without sample weights). Gradients are stopped.
        """
        y_true = ops.convert_to_tensor(y_true, dtype=self.dtype)
        y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
        parts = {}
        for name, value in self._terms(y_true, y_pred):
            value = ops.stop_gradient(value)
            if self.reduction == "sum":
                value = ops.sum(value)
            elif self.reduction not in ("none", None):
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
        if not self.style_layers or self.extractor is None:
            raise ValueError("set_style_target needs style_layers, e.g. style_layers="
                             "('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3')")
        style_image = ops.convert_to_tensor(style_image, dtype=self.dtype)
        feats = self._features(style_image, "style_image")
        self._cached_style = {n: ops.stop_gradient(gram_matrix(feats[n]))
                              for n in self.style_layers}

    def clear_style_target(self) -> None:
        """Forget the Gram matrices cached by :meth:`set_style_target`."""
        self._cached_style = None

    # ------------------------------------------------------------------ maths
    def _features(self, images: Tensor, name: str) -> dict[str, Tensor]:
        assert self.extractor is not None
        self.extractor.check_input(images, name)
        return self.extractor.forward_preprocessed(self.extractor.preprocess(images))

    def _check_pair(self, y_true: Tensor, y_pred: Tensor) -> None:
        true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
        comparable = len(true_shape) == len(pred_shape) and all(
            a is None or b is None or a == b for a, b in zip(true_shape, pred_shape, strict=True))
        if not comparable:
            raise ValueError(
                f"y_true and y_pred must have the same shape (N, H, W, C); got {true_shape} "
                f"and {pred_shape}. The model must output images of the target's size."
            )

    def _terms(self, y_true: Tensor, y_pred: Tensor) -> list[tuple[str, Tensor]]:
        """``[(term name, (N,) weighted value), ...]``."""
        self._check_pair(y_true, y_pred)
        y_true = ops.stop_gradient(y_true)
        terms: list[tuple[str, Tensor]] = []
        if self.extractor is not None:
            terms.extend(self._feature_terms(y_true, y_pred))
        if self.pixel_mse or self.pixel_l1 or self.tv_weight:
            terms.extend(self._pixel_terms(y_true, y_pred))
        return terms

    def _feature_terms(self, y_true: Tensor, y_pred: Tensor) -> list[tuple[str, Tensor]]:
        n = ops.shape(y_pred)[0]
        pred_feats = self._features(y_pred, "y_pred")
        need_target = bool(self.layers) or (bool(self.style_layers)
                                            and self._cached_style is None)
        target_feats = ({k: ops.stop_gradient(v)
                         for k, v in self._features(y_true, "y_true").items()}
                        if need_target else {})
        per_channel = self.extractor.channel_mode == "per_channel"

        def per_sample(values: Tensor) -> Tensor:
            return ops.mean(ops.reshape(values, (n, -1)), axis=1) if per_channel else values

        terms: list[tuple[str, Tensor]] = []
        for layer, weight in zip(self.layers, self.layer_weights, strict=True):
            p, t = pred_feats[layer], target_feats[layer]
            if self.normalize_features:
                p, t = normalize_channels(p), normalize_channels(t)
            d = feature_distance(p, t, self.criterion, eps=self.charbonnier_eps)
            terms.append((f"content/{layer}", self.feature_weight * weight * per_sample(d)))
        for layer, weight in zip(self.style_layers, self.style_layer_weights, strict=True):
            gram_p = gram_matrix(pred_feats[layer])
            if self._cached_style is not None:
                gram_t = _match_batch(self._cached_style[layer], gram_p)
            else:
                gram_t = gram_matrix(target_feats[layer])
            d = feature_distance(gram_p, gram_t, self.style_criterion, eps=self.charbonnier_eps)
            terms.append((f"style/{layer}", self.style_weight * weight * per_sample(d)))
        return terms

    def _pixel_terms(self, y_true: Tensor, y_pred: Tensor) -> list[tuple[str, Tensor]]:
        if self.extractor is None and self.check_values:
            check_range(y_pred, "y_pred", self.input_range)
            check_range(y_true, "y_true", self.input_range)
        low, high = self.input_range
        pred01 = (y_pred - low) / (high - low)
        true01 = (y_true - low) / (high - low)
        terms: list[tuple[str, Tensor]] = []
        if self.pixel_mse:
            terms.append(("pixel/mse", self.pixel_mse * feature_distance(pred01, true01, "mse")))
        if self.pixel_l1:
            terms.append(("pixel/l1", self.pixel_l1 * feature_distance(pred01, true01, "l1")))
        if self.tv_weight:
            terms.append(("tv", self.tv_weight * total_variation(pred01)))
        return terms


def _match_batch(reference: Tensor, like: Tensor) -> Tensor:
    """Repeat cached Grams of one style image (or of its channels) over a batch."""
    cached, batch = reference.shape[0], like.shape[0]
    if cached == batch:
        return reference
    if batch is not None and cached is not None and batch % cached == 0:
        return ops.tile(reference, (batch // cached, 1, 1))
    raise ValueError(f"cached style target has batch {cached}, which does not fit a batch of "
                     f"{batch}; cache one image or a batch of the same size")


def _plain(weights: Sequence[float] | Mapping[str, float] | None) -> Any:
    """Per-layer weights as JSON-friendly values for :meth:`PerceptualLoss.get_config`."""
    if weights is None:
        return None
    if isinstance(weights, Mapping):
        return {str(k): float(v) for k, v in weights.items()}
    return [float(w) for w in weights]
