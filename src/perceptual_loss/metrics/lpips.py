"""LPIPS-compatible perceptual distance: per-sample values, spatial maps, tiled evaluation.

LPIPS (Zhang et al., 2018) compares two images through a frozen ImageNet trunk. At each tapped
layer ``l`` the feature vector at every position is scaled to unit length over channels, the
two images' unit vectors are subtracted and squared, a learned non-negative 1x1 "linear head"
``w_l`` weighs the channels, and the result is averaged over positions; the layers are summed:

    d(x, y) = sum_l mean_{h,w} sum_c w_{l,c} * (f̂_l(x)_{c,h,w} - f̂_l(y)_{c,h,w})^2

With ``lpips=False`` every ``w_{l,c}`` is 1 (the unlearned, channel-normalised feature
distance). The published v0.1 heads ship with this package (``data/lpips/v0.1``, BSD-2-Clause);
given the same trunk weights the values equal the ``lpips`` package's.

What differs from the ``lpips`` package, on purpose:

- The value range is declared (``input_range``, ``(0, 1)`` by default like the rest of this
  library) and checked: values outside it are an error, so ``[-1, 1]`` and ``[0, 1]`` images are
  never confused silently.
- Unit-length scaling never takes ``sqrt(0)`` in a way that produces NaN gradients; it runs in
  float32 (also under ``torch.autocast``), so float16 features cannot overflow.
- Large images can be evaluated in tiles (``tile_size``) with bounded memory; with the default
  overlap the value equals the whole-image value (see :class:`LPIPS`).

References:
    Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a
    Perceptual Metric", CVPR 2018.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss._checks import (
    Reduction,
    check_input_range,
    check_reduction,
)
from perceptual_loss._weight_files import (
    check_tensor_values,
    read_tensor_file,
)
from perceptual_loss.backbones import get_backbone, list_backbones, lpips_backbone
from perceptual_loss.backbones.geometry import TrunkGeometry
from perceptual_loss.extractor import FeatureExtractor
from perceptual_loss.functional import reduce, unit_difference
from perceptual_loss.metrics import MetricSettings
from perceptual_loss.metrics._twin import twin_value, weights_or_imagenet
from perceptual_loss.preprocess import ChannelMode
from perceptual_loss.tiling import Tiler

__all__ = [
    "LPIPS",
    "LPIPS_NETS",
    "LpipsNet",
    "load_lpips_heads",
    "lpips_distance",
    "scorer_metric",
]

#: Stabiliser of each feature vector's length (the ``lpips`` package adds 1e-10 to it).
UNIT_NORM_EPS = 1e-10


@dataclass(frozen=True)
class LpipsNet:
    """One LPIPS trunk: a registered backbone and the layers LPIPS taps (its own heads).

    Attributes:
        name: LPIPS name (``"vgg"``, ``"alex"``, ``"squeeze"``).
        backbone: Name in :mod:`perceptual_loss.backbones`.
        layers: Tapped layers, in the order of the heads ``lin0``, ``lin1``, ...
    """

    name: str
    backbone: str
    layers: tuple[str, ...]

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of each tapped layer (the registry's geometry, from shapes alone)."""
        return _tap_channels(self.backbone, self.layers)


@functools.cache
def _tap_channels(backbone: str, layers: tuple[str, ...]) -> tuple[int, ...]:
    spec = get_backbone(backbone)
    taps = {spec.index(layer): layer for layer in layers}
    with torch.device("meta"):
        trunk = list(spec.build_features().children())[: max(taps) + 1]
    geometry = TrunkGeometry([module.eval() for module in trunk], taps)
    return tuple(geometry.taps[layer].channels for layer in layers)


def _lpips_net(net: str) -> LpipsNet:
    spec = lpips_backbone(net)
    assert spec.lpips_name is not None
    return LpipsNet(spec.lpips_name, spec.name, spec.lpips_layers)


LPIPS_NETS: dict[str, LpipsNet] = {
    spec.lpips_name: _lpips_net(spec.name)
    for spec in map(get_backbone, list_backbones()) if spec.lpips_name is not None}
"""The three published LPIPS trunks: lookups into the backbone registry (``lpips_name``)."""

_HEAD_VERSIONS = ("0.1",)


def _lpips_net(net: str) -> LpipsNet:
    aliases = {"vgg16": "vgg", "alexnet": "alex", "squeezenet1_1": "squeeze"}
    key = aliases.get(net, net)
    if key not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of: {', '.join(LPIPS_NETS)}")
    return LPIPS_NETS[key]


def load_lpips_heads(net: str, version: str = "0.1",
                     path: str | os.PathLike[str] | None = None) -> list[torch.Tensor]:
    """The per-channel weights of the LPIPS linear heads.

    Args:
        net: ``"vgg"``, ``"alex"`` or ``"squeeze"``.
        version: Published version of the heads shipped with the package (``"0.1"``).
        path: A heads file of your own instead (the ``lpips`` package's format: a state dict
            with ``lin{i}.model.1.weight`` or ``lin{i}.weight`` of shape ``(1, C_i, 1, 1)``).

    Returns:
        One float32 tensor of shape ``(C_i,)`` per tapped layer, non-negative for the shipped
        heads.

    Raises:
        ValueError: Unknown net or version, or a file whose keys or shapes do not fit ``net``.
    """
    spec = _lpips_net(net)
    if path is None:
        if version not in _HEAD_VERSIONS:
            raise ValueError(
                f"LPIPS heads version {version!r} are not shipped; available: "
                f"{', '.join(_HEAD_VERSIONS)} (v0.0 had an input-scaling bug and is not "
                "supported). Pass heads=<file> (LPIPS) or path=<file> (load_lpips_heads) for "
                "heads of your own."
            )
        ref = (resources.files("perceptual_loss") / "data" / "lpips" / f"v{version}"
               / f"{spec.name}.pth")
        with resources.as_file(ref) as file:
            state = torch.load(file, map_location="cpu", weights_only=True)
        source = f"shipped v{version} heads for {spec.name!r}"
    else:
        source = os.fspath(path)
        state = read_tensor_file(source, "LPIPS heads file")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f"{source}: expected a state dict of tensors, got "
                         f"{type(state).__name__}")
    check_tensor_values(state, source)
    heads: list[torch.Tensor] = []
    for index, channels in enumerate(spec.channels):
        weight = state.get(f"lin{index}.model.1.weight", state.get(f"lin{index}.weight"))
        if weight is None:
            raise ValueError(
                f"{source}: no weight for head {index} (expected key 'lin{index}.model.1.weight'"
                f" or 'lin{index}.weight'); keys found: {', '.join(sorted(state))}"
            )
        if weight.numel() != channels:
            raise ValueError(
                f"{source}: head {index} has {weight.numel()} weights but layer "
                f"{spec.layers[index]!r} of {spec.backbone} has {channels} channels"
            )
        heads.append(weight.detach().reshape(channels).to(torch.float32).clone())
    extra = (set(state) - {f"lin{i}.model.1.weight" for i in range(len(spec.channels))}
             - {f"lin{i}.weight" for i in range(len(spec.channels))})
    if extra:
        raise ValueError(f"{source}: unexpected keys for {spec.name!r}: {', '.join(sorted(extra))}")
    return heads


class LPIPS(nn.Module):
    """LPIPS-compatible perceptual distance, usable as a metric and as a loss.

    Args:
        net: Trunk: ``"alex"`` (default, as in the ``lpips`` package), ``"vgg"`` (VGG16) or
            ``"squeeze"`` (SqueezeNet 1.1).
        version: Version of the shipped linear heads (``"0.1"``).
        lpips: ``True``: weigh channels with the learned heads. ``False``: unlearned variant,
            the plain squared distance of channel-normalised features.
        weights: Trunk weights: ``"imagenet"`` (torchvision's file, from the cache or
            downloaded; see :mod:`perceptual_loss.weights`), a path to a ``.pth`` file, or
            ``None`` for random weights (tests only).
        input_range: ``(low, high)`` of the images, e.g. ``(0, 1)`` or ``(-1, 1)`` (the
            ``lpips`` package's convention). Values outside it are an error.
        spatial: Return a distance map ``(N, 1, H, W)`` (each layer's map upsampled
            bilinearly to the input size, then summed) instead of one value per image.
        reduction: ``"none"``: ``(N,)`` (or the maps); ``"mean"``/``"sum"`` over the batch.
        channel_mode: ``"repeat"``: 1-channel images (grayscale, CT) are repeated to RGB;
            ``"per_channel"``: each channel compared as its own grayscale image and the
            distances averaged over channels.
        heads: A heads file of your own (see :func:`load_lpips_heads`) instead of the shipped
            ``version``.
        tile_size: Evaluate in square tiles of at most this many pixels a side (the trunk
            never sees a larger image), e.g. 512. ``None``: the whole image at once.
        tile_overlap: Context in pixels each tile gets beyond the part it contributes,
            rounded up to a multiple of the trunk's stride (16) and to at least
            :attr:`min_tile_overlap` (alex 16, vgg 0, squeeze 16: the context without which a
            tile loses feature pixels at its edge). ``None``: the deepest layer's
            receptive field (vgg 112, alex 96, squeeze 128), which makes the tiled value equal
            to the whole-image value up to float round-off. Smaller overlaps are faster and
            differ slightly (see ``docs/metrics.md`` for measured differences).
        check_values: Check inputs for NaN/Inf and for values outside ``input_range``; this
            synchronises the device.

    Shape:
        - prediction, target: ``(N, C, H, W)``, ``C`` in {1, 3} (any with ``"per_channel"``),
          values in ``input_range``; ``H, W`` at least the trunk's minimum (alex 31,
          vgg 16, squeeze 17).
        - Output: ``(N,)`` float32 with ``reduction="none"``, a scalar otherwise, or
          ``(N, 1, H, W)`` with ``spatial=True``. Values are ``>= 0`` and ``0`` for identical
          images.

    The trunk is frozen (no parameter requires a gradient, it stays in eval mode); gradients
    flow to both inputs. Under ``torch.autocast`` the trunk runs in low precision and the
    normalisation, heads and averages in float32.

    Example:
        >>> metric = LPIPS("alex", weights=None)  # random trunk: for illustration only
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(2, 3, 64, 64, generator=gen), torch.rand(2, 3, 64, 64, generator=gen)
        >>> metric(x, y).shape
        torch.Size([2])
        >>> float(metric(x, x).abs().max())
        0.0
    """

    def __init__(
        self,
        net: str = "alex",
        version: str = "0.1",
        lpips: bool = True,
        *,
        weights: str | os.PathLike[str] | None = "imagenet",
        input_range: tuple[float, float] = (0.0, 1.0),
        spatial: bool = False,
        reduction: Reduction = "none",
        channel_mode: ChannelMode = "repeat",
        heads: str | os.PathLike[str] | None = None,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        check_values: bool = True,
    ) -> None:
        super().__init__()
        self.net = _lpips_net(net)
        check_reduction(reduction)
        if spatial and reduction != "none":
            raise ValueError(
                f"spatial=True returns one map per image and needs reduction='none'; got "
                f"reduction={reduction!r}. Reduce the maps yourself, e.g. maps.mean(0)."
            )
        self.version = version
        self.lpips = bool(lpips)
        self.spatial = bool(spatial)
        self.reduction: Reduction = reduction
        self.extractor = FeatureExtractor(
            self.net.backbone, self.net.layers, weights,
            input_range=check_input_range(input_range), channel_mode=channel_mode,
            normalization="lpips", check_values=check_values,
        )
        if self.lpips:
            weights_per_layer = load_lpips_heads(self.net.name, version, heads)
        else:
            if heads is not None:
                raise ValueError("heads=... is only used with lpips=True (learned heads)")
            weights_per_layer = [torch.ones(c) for c in self.net.channels]
        for index, weight in enumerate(weights_per_layer):
            self.register_buffer(f"head{index}", weight.view(1, -1, 1, 1), persistent=False)

        assert self.extractor.geometry is not None
        self.tiler = Tiler(self.extractor.geometry, self.net.layers, tile_size, tile_overlap,
                           name=self.net.backbone)
        self.tile_size, self.tile_overlap = self.tiler.tile_size, self.tiler.overlap
        #: Called after each tile (e.g. a progress bar's ``update``); ``None``: nothing.
        self.tile_callback: Callable[[], None] | None = None
        self.receptive_margin = self.tiler.receptive_margin
        self.min_tile_overlap = self.tiler.min_overlap

    @property
    def min_input_size(self) -> int:
        """Smallest image side the trunk accepts, in pixels."""
        return int(self.extractor.min_input_size)

    @property
    def layers(self) -> tuple[str, ...]:
        """The tapped layers, in the order of the heads."""
        return self.net.layers

    @property
    def input_range(self) -> tuple[float, float]:
        """The declared ``(low, high)`` of the images."""
        return self.extractor.input_range

    def train(self, mode: bool = True) -> LPIPS:
        """Set the module's flag; the frozen trunk stays in eval mode."""
        super().train(mode)
        self.extractor.train(mode)
        return self

    def forward(self, prediction: torch.Tensor, target: torch.Tensor,
                return_parts: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """LPIPS distance between ``prediction`` and ``target`` (symmetric).

        Args:
            prediction: ``(N, C, H, W)`` in ``input_range``.
            target: Same shape, dtype and device.
            return_parts: Also return each layer's contribution, keyed ``"lpips/<layer>"``,
                reduced like the total.

        Returns:
            The distance (see the class docstring for shapes), and the parts if asked for.
        """
        self.extractor.check_pair(prediction, target)
        maps = self._layer_maps(prediction, target)
        per_channel = self.extractor.channel_mode == "per_channel"
        channels = prediction.shape[1]
        height, width = prediction.shape[-2:]
        parts: dict[str, torch.Tensor] = {}
        for name, layer_map in zip(self.net.layers, maps, strict=True):
            if self.spatial:
                value = F.interpolate(layer_map, size=(height, width), mode="bilinear",
                                      align_corners=False)
            else:
                value = layer_map.mean(dim=(1, 2, 3))
            if per_channel:
                value = value.view(-1, channels, *value.shape[1:]).mean(dim=1)
            parts[f"lpips/{name}"] = reduce(value, self.reduction)
        total = torch.stack(list(parts.values())).sum(dim=0)
        return (total, parts) if return_parts else total

    def _layer_maps(self, prediction: torch.Tensor, target: torch.Tensor
                    ) -> list[torch.Tensor]:
        """Per-layer distance maps ``(N', 1, H_l, W_l)`` in float32, whole or tiled."""
        batch = prediction.shape[0] * (prediction.shape[1] if
                                       self.extractor.channel_mode == "per_channel" else 1)
        return self.tiler.maps(prediction, target, self._tile_maps, batch, self.tile_callback)

    def _tile_maps(self, prediction: torch.Tensor, target: torch.Tensor
                   ) -> list[torch.Tensor]:
        # Both images advance one trunk segment at a time; each layer's map is taken as soon as
        # both reach it, so only one segment's features are alive at once.
        fx = self.extractor
        stream_a = fx.stream(prediction, "prediction", check=False)
        stream_b = fx.stream(target, "target", check=False)
        maps_by_layer: dict[str, torch.Tensor] = {}
        for (name, feat_a), (_, feat_b) in zip(stream_a, stream_b, strict=True):
            with torch.autocast(prediction.device.type, enabled=False):
                difference = unit_difference(feat_a, feat_b, UNIT_NORM_EPS)
                del feat_a, feat_b
                head = getattr(self, f"head{self.net.layers.index(name)}")
                squared = (difference.square() if difference.requires_grad
                           else difference.square_())  # in place when nothing is recorded
                # The heads weigh and sum the channels: a 1x1 convolution, one pass.
                maps_by_layer[name] = F.conv2d(squared, head.to(squared.dtype))
            del difference, squared
        return [maps_by_layer[name] for name in self.net.layers]

    def extra_repr(self) -> str:
        return (f"net={self.net.name!r}, version={self.version!r}, lpips={self.lpips}, "
                f"spatial={self.spatial}, reduction={self.reduction!r}, "
                f"tile_size={self.tile_size}, tile_overlap={self.tile_overlap}")


@functools.lru_cache(maxsize=8)
def _cached_metric(net: str, version: str, lpips: bool, weights: str | None,
                   input_range: tuple[float, float], channel_mode: str, device: str) -> LPIPS:
    metric = LPIPS(net, version, lpips, weights=weights, input_range=input_range,
                   channel_mode=channel_mode)  # type: ignore[arg-type]
    return metric.to(device)


def lpips_distance(
    prediction: torch.Tensor,
    target: torch.Tensor,
    net: str = "alex",
    *,
    version: str = "0.1",
    lpips: bool = True,
    weights: str | os.PathLike[str] | None = "imagenet",
    input_range: tuple[float, float] = (0.0, 1.0),
    channel_mode: ChannelMode = "repeat",
    reduction: Reduction = "none",
    metric: LPIPS | None = None,
) -> torch.Tensor:
    """Functional LPIPS: the value of :class:`LPIPS` without keeping a module yourself.

    The module is built once per configuration and device and cached (up to 8), so calling
    this in a loop never rebuilds the trunk. Pass ``metric=`` to use a module you built.

    Args:
        prediction: ``(N, C, H, W)`` in ``input_range``.
        target: Same shape, dtype and device.
        net: ``"alex"``, ``"vgg"`` or ``"squeeze"``.
        version: Version of the shipped heads.
        lpips: Learned heads (``True``) or the unlearned variant.
        weights: Trunk weights (see :class:`LPIPS`).
        input_range: ``(low, high)`` of the images.
        channel_mode: ``"repeat"`` or ``"per_channel"``.
        reduction: ``"none"`` (``(N,)``), ``"mean"`` or ``"sum"``.
        metric: A prebuilt :class:`LPIPS`; the other options are then ignored except
            ``reduction``.

    Returns:
        ``(N,)`` float32 distances, or their mean/sum.
    """
    if metric is not None and metric.spatial:
        raise ValueError("lpips_distance returns values per image; pass a metric built with "
                         "spatial=False, or call the module itself for maps")
    weights_key = None if weights is None else os.fspath(weights)
    return twin_value(prediction, target, reduction, metric, lambda device: _cached_metric(
        _lpips_net(net).name, version, bool(lpips), weights_key,
        check_input_range(input_range), channel_mode, device))


def scorer_metric(settings: MetricSettings) -> tuple[LPIPS, str]:
    """LPIPS as ``perceptual compare`` scores with it (its registry factory).

    ``settings.weights`` go on the trunk where they fit it; otherwise its ImageNet weights are
    used and a note says why. ``--weights random`` gives a random trunk.

    Returns:
        ``(metric, weights label)``: ``reduction="none"``, tiled above ``settings.tile_size``.
    """
    net, tile_size = settings.lpips_net, settings.tile_size
    return weights_or_imagenet(
        lambda weights: LPIPS(net, weights=weights, reduction="none", tile_size=tile_size),
        settings, "lpips", net)
