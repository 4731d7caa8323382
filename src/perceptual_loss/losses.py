"""Loss modules: options stored once, maths delegated to :mod:`perceptual_loss.functional`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from perceptual_loss._checks import check_image, check_pair, check_values
from perceptual_loss.extractor import DEFAULT_LAYERS, FeatureExtractor
from perceptual_loss.functional import (
    CRITERIA,
    Criterion,
    Reduction,
    feature_distance,
    gram_matrix,
    normalize_channels,
    reduce,
    total_variation,
)
from perceptual_loss.preprocess import ChannelMode, Normalization

__all__ = ["PerceptualLoss", "TotalVariationLoss"]


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
        backbone: Backbone name (``vgg16``, ``vgg19``, ``vgg16_bn``, ...).
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
        channels_last: Run the backbone in channels-last memory format (faster convolutions
            on CPU; values differ by float rounding only).
        chunk_size: Run the backbone on at most this many samples at a time. Values and
            gradients are unchanged; the peak memory of a training step falls with the chunk
            (``chunk_size=1`` keeps about a third of the plain computation's activations),
            at the cost of smaller convolutions (slower on a GPU).
        extractor: Reuse this prebuilt extractor instead of building one.

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
        backbone: str = "vgg16",
        layers: Sequence[str] | None = None,
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
        ssim_weight: float = 0.0,
        tv_weight: float = 0.0,
        resize: int | Sequence[int] | None = None,
        input_range: tuple[float, float] = (0.0, 1.0),
        channel_mode: ChannelMode = "repeat",
        normalization: str | Normalization | None = None,
        reduction: Reduction = "mean",
        check_values: bool = True,
        charbonnier_eps: float = 1e-3,
        memory: Literal["lean", "plain"] = "lean",
        channels_last: bool = False,
        chunk_size: int | None = None,
        extractor: FeatureExtractor | None = None,
    ) -> None:
        super().__init__()
        if isinstance(layers, str):
            layers = (layers,)
        if isinstance(style_layers, str):
            style_layers = (style_layers,)
        for name, value in (("criterion", criterion), ("style_criterion", style_criterion)):
            if value is not None and value not in CRITERIA:
                raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(CRITERIA)}")
        if reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction must be 'none', 'mean' or 'sum'; got {reduction!r}")
        if extractor is not None:
            layers = extractor.layers if layers is None else layers
            self.extractor = extractor
            spec = extractor.spec
        else:
            layers = DEFAULT_LAYERS if layers is None else layers
            wanted = list(layers) + list(style_layers)
            if not wanted and not (pixel_mse or pixel_l1 or ssim_weight or tv_weight):
                raise ValueError("nothing to compute: give layers, style_layers or a pixel term")
            self.extractor = FeatureExtractor(
                backbone, wanted or ("relu1_1",), weights, input_range=input_range,
                channel_mode=channel_mode, resize=resize, normalization=normalization,
                check_values=check_values, memory=memory, channels_last=channels_last,
            ) if wanted else None
            spec = self.extractor.spec if self.extractor is not None else None
        canon = spec.canonical if spec is not None else (lambda n: n)
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(canon(n) for n in layers))
        self.style_layers: tuple[str, ...] = tuple(dict.fromkeys(canon(n) for n in style_layers))
        if self.extractor is not None:
            missing = [n for n in self.layers + self.style_layers if n not in self.extractor.layers]
            if missing:
                raise ValueError(f"the extractor does not compute layers {missing}; it has "
                                 f"{list(self.extractor.layers)}")
        self.layer_weights = _weights_per_layer(layer_weights, self.layers, "layer_weights", canon)
        self.style_layer_weights = _weights_per_layer(style_layer_weights, self.style_layers,
                                                      "style_layer_weights", canon)
        self.criterion = criterion
        self.style_criterion = style_criterion or criterion
        self.normalize_features = normalize_features
        self.feature_weight = float(feature_weight)
        self.style_weight = float(style_weight)
        self.pixel_mse = float(pixel_mse)
        self.pixel_l1 = float(pixel_l1)
        self.ssim_weight = float(ssim_weight)
        self.tv_weight = float(tv_weight)
        self.reduction = reduction
        self.charbonnier_eps = charbonnier_eps
        if chunk_size is not None and int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}")
        self.chunk_size = int(chunk_size) if chunk_size is not None else None
        self.input_range = (self.extractor.input_range if self.extractor is not None
                            else (float(input_range[0]), float(input_range[1])))
        self.check_values = self.extractor.check_values if self.extractor is not None \
            else check_values
        if self.ssim_weight:
            _import_ssim()
        self._cached_target: dict[str, torch.Tensor] | None = None
        self._cached_style: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ cached targets
    @torch.no_grad()
    def set_style_target(self, style_image: torch.Tensor) -> None:
        """Compute and cache the Gram matrices of a style image that never changes.

        Afterwards the style term compares against these Grams, whatever target is passed
        (content terms still use the per-call target). The style image may have any size.

        Args:
            style_image: ``(1, C, H, W)`` (shared by the batch) or ``(N, C, H, W)``.
        """
        if not self.style_layers:
            raise ValueError("set_style_target needs style_layers")
        feats = self._features(style_image, "style_image")
        self._cached_style = {n: gram_matrix(feats[n]) for n in self.style_layers}

    @torch.no_grad()
    def set_target(self, target: torch.Tensor) -> None:
        """Cache the features of a target that never changes; then call ``loss_fn(prediction)``.

        Args:
            target: ``(1, C, H, W)`` (shared by the batch) or ``(N, C, H, W)``.
        """
        check_image(target, "target")
        if self.check_values:
            check_values(target, "target", self.input_range)
        self._cached_target = {"__image__": target.detach()}
        if self.extractor is not None:
            feats = self._features(target, "target")
            self._cached_target.update({n: f.detach() for n, f in feats.items()})

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202
        """Move and cast cached targets with the module (``.to``, ``.cuda``, ``.double``)."""
        super()._apply(fn, recurse)
        for name in ("_cached_target", "_cached_style"):
            cached = getattr(self, name)
            if cached is not None:
                setattr(self, name, {k: fn(v) for k, v in cached.items()})
        return self

    def clear_targets(self) -> None:
        """Forget targets cached by :meth:`set_target` and :meth:`set_style_target`."""
        self._cached_target = None
        self._cached_style = None

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
        check_image(prediction, "prediction")
        cached = self._cached_target
        if target is None:
            if cached is None:
                raise ValueError("target is missing: pass one, or cache it with set_target()")
            target_image = cached["__image__"]
        else:
            check_image(target, "target")
            check_pair(prediction, target)
            target_image = target
        if target is None and target_image.shape[1:] != prediction.shape[1:]:
            raise ValueError(f"cached target has shape {tuple(target_image.shape)}, prediction "
                             f"{tuple(prediction.shape)}")

        terms: dict[str, torch.Tensor] = {}
        if self.extractor is not None:
            self._feature_terms(prediction, target, terms)
        if self.pixel_mse or self.pixel_l1 or self.ssim_weight or self.tv_weight:
            self._pixel_terms(prediction, target_image, terms)

        total = torch.stack(list(terms.values())).sum(0)
        loss = reduce(total, self.reduction)
        if not return_parts:
            return loss
        parts = {name: reduce(value.detach(), self.reduction) for name, value in terms.items()}
        return loss, parts

    def _features(self, x: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
        assert self.extractor is not None
        self.extractor.check_input(x, name)
        return self.extractor.forward_preprocessed(self.extractor.preprocess(x))

    def _feature_terms(self, prediction: torch.Tensor, target: torch.Tensor | None,
                       terms: dict[str, torch.Tensor]) -> None:
        assert self.extractor is not None
        fx = self.extractor
        fx.check_input(prediction, "prediction")
        need_target = bool(self.layers) or (bool(self.style_layers) and self._cached_style is None)
        use_target = target is not None and need_target
        if use_target:
            fx.check_input(target, "target")
        n = prediction.shape[0]
        chunk = self.chunk_size or n
        chunk_terms: list[dict[str, torch.Tensor]] = []
        for first in range(0, n, chunk):
            rows = slice(first, min(first + chunk, n))
            part: dict[str, torch.Tensor] = {}
            self._stream_chunk(prediction[rows], target[rows] if use_target else None, rows,
                               part)
            chunk_terms.append(part)
        for name in chunk_terms[0]:
            terms[name] = torch.cat([part[name] for part in chunk_terms]) \
                if len(chunk_terms) > 1 else chunk_terms[0][name]

    def _stream_chunk(self, prediction: torch.Tensor, target: torch.Tensor | None, rows: slice,
                      terms: dict[str, torch.Tensor]) -> None:
        """Feature terms of a slice of the batch, one trunk segment at a time.

        Each layer's distance is taken as soon as both images reach it, and the maps are
        dropped before the next segment runs: with the lean trunk, what stays for backward is
        a byte mask per activation and an int8 sign per L1 element, not float maps.
        """
        assert self.extractor is not None
        fx = self.extractor
        n = prediction.shape[0]
        grad_target = target is not None and torch.is_grad_enabled() and target.requires_grad
        pred_stream = fx.iter_features(fx.preprocess(prediction))
        target_stream = fx.iter_features(fx.preprocess(target)) if target is not None else None
        cached = self._cached_target
        content = dict(zip(self.layers, self.layer_weights, strict=True))
        style = dict(zip(self.style_layers, self.style_layer_weights, strict=True))
        # Layers whose target maps are needed; the target's pass stops after the last one
        # (with cached style Grams, e.g. content at relu2_2, style up to relu4_3).
        target_layers = set(content) | (set() if self._cached_style is not None else set(style))
        found: dict[str, torch.Tensor] = {}
        for layer, p in pred_stream:
            t = None
            if target_stream is not None:
                with torch.set_grad_enabled(grad_target):
                    _, t = next(target_stream)
                target_layers.discard(layer)
                if not target_layers:
                    target_stream.close()
                    target_stream = None
            elif cached is not None and layer in cached:
                t = cached[layer]
                batch = cached["__image__"].shape[0]
                if batch != 1:  # one cached target per sample: take this chunk's rows
                    per_image = t.shape[0] // batch
                    t = t[rows.start * per_image: rows.stop * per_image]
            if layer in content:
                assert t is not None
                pt, tt = p, _match_batch(t, p)
                if self.normalize_features:
                    pt, tt = normalize_channels(pt), normalize_channels(tt)
                d = feature_distance(pt, tt, self.criterion, eps=self.charbonnier_eps)
                found[f"content/{layer}"] = self.feature_weight * content[layer] * _per_sample(d, n)
            if layer in style:
                gram_p = gram_matrix(p)
                if self._cached_style is not None:
                    gram_t = _match_batch(self._cached_style[layer], gram_p)
                else:
                    assert t is not None
                    gram_t = gram_matrix(_match_batch(t, p))
                d = feature_distance(gram_p, gram_t, self.style_criterion,
                                     eps=self.charbonnier_eps)
                found[f"style/{layer}"] = self.style_weight * style[layer] * _per_sample(d, n)
            del p, t
        # In the order the layers were given, content first.
        terms.update({f"content/{k}": found[f"content/{k}"] for k in self.layers})
        terms.update({f"style/{k}": found[f"style/{k}"] for k in self.style_layers})

    def _pixel_terms(self, prediction: torch.Tensor, target: torch.Tensor,
                     terms: dict[str, torch.Tensor]) -> None:
        if self.extractor is None and self.check_values:
            check_values(prediction, "prediction", self.input_range)
            check_values(target, "target", self.input_range)
        low, high = self.input_range
        pred01 = (prediction - low) / (high - low)
        target01 = _match_batch((target - low) / (high - low), pred01)
        if self.pixel_mse:
            terms["pixel/mse"] = self.pixel_mse * feature_distance(pred01, target01, "mse")
        if self.pixel_l1:
            terms["pixel/l1"] = self.pixel_l1 * feature_distance(pred01, target01, "l1")
        if self.ssim_weight:
            ssim = _import_ssim()
            with torch.autocast(device_type=prediction.device.type, enabled=False):
                value = ssim(pred01.float(), target01.float(), data_range=1.0, size_average=False)
            terms["ssim"] = self.ssim_weight * (1.0 - value)
        if self.tv_weight:
            terms["tv"] = self.tv_weight * total_variation(pred01)

    def extra_repr(self) -> str:
        parts = [f"layers={self.layers}", f"criterion={self.criterion!r}"]
        if self.style_layers:
            parts.append(f"style_layers={self.style_layers}, style_weight={self.style_weight}")
        for name in ("pixel_mse", "pixel_l1", "ssim_weight", "tv_weight"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        parts.append(f"reduction={self.reduction!r}")
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
        self.kind = kind
        self.reduction = reduction

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Total variation of ``images``."""
        check_image(images, "images")
        return reduce(total_variation(images, self.kind), self.reduction)


def _per_sample(values: torch.Tensor, n: int) -> torch.Tensor:
    """Average per-image values over the channels that ``per_channel`` mode stacked."""
    return values.view(n, -1).mean(1) if values.shape[0] != n else values


def _match_batch(reference: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a cached target computed for one image (or one image's channels) to a batch."""
    if reference.shape[0] == like.shape[0]:
        return reference
    if like.shape[0] % reference.shape[0] == 0:
        repeats = like.shape[0] // reference.shape[0]
        return reference.unsqueeze(0).expand(repeats, *reference.shape).reshape(like.shape[0],
                                                                                 *reference.shape[1:])
    raise ValueError(f"cached target batch {reference.shape[0]} does not fit a batch of "
                     f"{like.shape[0]}; cache one image or a batch of the same size")


def _weights_per_layer(weights: Sequence[float] | Mapping[str, float] | None,
                       layers: tuple[str, ...], what: str, canonical) -> tuple[float, ...]:  # noqa: ANN001
    if weights is None:
        return tuple(1.0 for _ in layers)
    if isinstance(weights, Mapping):
        given = {canonical(k): float(v) for k, v in weights.items()}
        unknown = sorted(set(given) - set(layers))
        if unknown:
            raise ValueError(f"{what} names layers {unknown} that are not in {list(layers)}")
        return tuple(given.get(layer, 1.0) for layer in layers)
    values = tuple(float(w) for w in weights)
    if len(values) != len(layers):
        raise ValueError(f"{what} has {len(values)} values for {len(layers)} layers {list(layers)}")
    return values


def _import_ssim():  # noqa: ANN202
    try:
        from pytorch_msssim import ssim
    except ImportError as err:
        raise ImportError(
            "the SSIM term needs pytorch-msssim: pip install \"perceptual-loss[ssim]\""
        ) from err
    return ssim
