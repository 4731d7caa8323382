"""A frozen, truncated backbone that returns named feature maps."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss._checks import check_image, check_input_range, check_values
from perceptual_loss._lean import LeanPlan, build_plan, lean_forward
from perceptual_loss.backbones import BackboneSpec, get_backbone
from perceptual_loss.preprocess import ChannelMode, Normalization, Preprocessor
from perceptual_loss.weights import load_weights_into

__all__ = ["DEFAULT_LAYERS", "FeatureExtractor"]

#: The PyTorch article's layers: the ends of VGG16's first four blocks.
DEFAULT_LAYERS: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")

_MAX_PROBE_SIZE = 4096


class FeatureExtractor(nn.Module):
    """Frozen backbone, cut after the deepest requested layer, returning named feature maps.

    The backbone's parameters never require gradients and it stays in eval mode even when a
    parent module calls ``.train()``. Gradients flow to the input. A pre-activation tap such
    as ``conv5_4`` is never overwritten by the in-place ReLU that follows it.

    Args:
        backbone: Registered backbone name (``vgg11``..``vgg19``, ``*_bn``, ...).
        layers: Layers to return, by our names (``relu3_3``, ``conv5_4``, ``pool2``) or Keras
            aliases (``block3_conv3``). Order is kept; duplicates are dropped.
        weights: ``"imagenet"`` (the official torchvision file), another name the backbone
            knows (``"keras-imagenet"``), a registry key, a path to a ``.pth``/``.h5`` file,
            or ``None`` for random weights (only when asked for).
        input_range: ``(low, high)`` of the images, e.g. ``(0, 1)``, ``(-1, 1)``, ``(0, 255)``.
        channel_mode: ``"repeat"`` (1 channel repeated to 3, 3 pass through) or
            ``"per_channel"`` (each channel compared as its own grayscale image).
        resize: Resize inputs (bilinear) to this size before the backbone; ``None`` keeps them.
        normalization: Override the normalisation implied by the weights (``"imagenet"``,
            ``"caffe"``, ``"lpips"``, ``"none"`` or a :class:`Normalization`).
        check_values: Check inputs for NaN/Inf and for values outside ``input_range``. The
            check synchronises the device; turn it off for speed once inputs are trusted.
        progress: Show a progress bar if weights are downloaded.
        memory: ``"lean"`` (default) saves only what the input gradient needs: a 1-byte ReLU
            mask per element and a uint8 max-pool window position, instead of float
            activations and int64 indices (see :mod:`perceptual_loss._lean`). Values are
            bit-identical to ``"plain"`` and gradients equal; ``"plain"`` is ordinary autograd,
            needed only for double backward (e.g. a gradient penalty through this loss).
        channels_last: Run the backbone in ``torch.channels_last`` memory format (faster
            convolutions on CPU; values differ from NCHW by float rounding only).

    Shape:
        - Input: ``(N, C, H, W)``, ``C`` in {1, 3} (any ``C`` with ``"per_channel"``).
        - Output: ``{layer: (N', C_l, H_l, W_l)}`` with ``N' = N`` (``N * C`` per channel).

    Example:
        >>> fx = FeatureExtractor("vgg11", layers=("relu1_1", "pool2"), weights=None)
        >>> feats = fx(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
        >>> {name: tuple(f.shape) for name, f in feats.items()}
        {'relu1_1': (2, 64, 32, 32), 'pool2': (2, 128, 8, 8)}
    """

    def __init__(
        self,
        backbone: str = "vgg16",
        layers: Sequence[str] = DEFAULT_LAYERS,
        weights: str | os.PathLike[str] | None = "imagenet",
        *,
        input_range: tuple[float, float] = (0.0, 1.0),
        channel_mode: ChannelMode = "repeat",
        resize: int | Sequence[int] | None = None,
        normalization: str | Normalization | None = None,
        check_values: bool = True,
        progress: bool = True,
        memory: Literal["lean", "plain"] = "lean",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if memory not in ("lean", "plain"):
            raise ValueError(f"memory must be 'lean' or 'plain'; got {memory!r}")
        self.memory = memory
        self.channels_last = bool(channels_last)
        if isinstance(layers, str):
            layers = (layers,)
        self.spec: BackboneSpec = get_backbone(backbone)
        canonical = list(dict.fromkeys(self.spec.canonical(name) for name in layers))
        if not canonical:
            raise ValueError("layers must name at least one layer; got an empty sequence")
        self.layers: tuple[str, ...] = tuple(canonical)
        self.input_range = check_input_range(input_range)
        self.check_values = check_values

        if weights is None:
            trunk = self.spec.build_features()
            self.weights_source, implied = "random (weights=None)", "imagenet"
        else:
            # Allocate without the random initialisation that the file overwrites anyway.
            with torch.device("meta"):
                trunk = self.spec.build_features()
            trunk = trunk.to_empty(device="cpu")
            self.weights_source, implied = load_weights_into(trunk, self.spec, weights,
                                                             progress=progress)
        deepest = max(self.spec.layer_names.index(name) for name in self.layers)
        self.body = nn.Sequential(*list(trunk.children())[: deepest + 1])
        self.body.requires_grad_(False)
        self.body.eval()
        self._taps: dict[int, str] = {self.spec.layer_names.index(n): n for n in self.layers}
        self._segments = _segments(list(self.body), sorted(self._taps))
        if self.channels_last:
            self.body.to(memory_format=torch.channels_last)
        self.preprocess = Preprocessor(normalization or implied, self.input_range,
                                       channel_mode, resize)
        self.normalization = self.preprocess.normalization
        with torch.device("meta"):
            meta_body = nn.Sequential(*list(self.spec.build_features().children())[: deepest + 1])
        meta_body.eval()  # batch norm in eval mode accepts 1x1 maps
        self.min_input_size = _min_input_size(meta_body)
        self.feature_info = _describe(meta_body, self._taps, self.min_input_size)
        if self.preprocess.resize is not None and min(self.preprocess.resize) < self.min_input_size:
            raise ValueError(
                f"resize={self.preprocess.resize} is too small for layer {self.deepest_layer!r} "
                f"of {backbone}: it needs at least {self.min_input_size}x{self.min_input_size}"
            )

    @property
    def deepest_layer(self) -> str:
        """The deepest requested layer, where the backbone is cut."""
        return self._taps[max(self._taps)]

    @property
    def channel_mode(self) -> ChannelMode:
        """How channels are adapted (see :func:`~perceptual_loss.preprocess.adapt_channels`)."""
        return self.preprocess.channel_mode

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Set the module's flag but keep the frozen backbone in eval mode."""
        super().train(mode)
        self.body.eval()
        return self

    def check_input(self, x: torch.Tensor, name: str = "input") -> torch.Tensor:
        """Validate ``x`` (type, shape, channels, size, dtype, device, values)."""
        check_image(x, name)
        channels = x.shape[1]
        if self.channel_mode == "repeat" and channels not in (1, 3):
            raise ValueError(
                f"{name} has {channels} channels; expected 1 (grayscale) or 3 (RGB). For RGBA "
                "drop alpha (x[:, :3]); for other multi-channel images pass "
                "channel_mode='per_channel'."
            )
        size = self.preprocess.resize or tuple(x.shape[-2:])
        if min(size) < self.min_input_size:
            raise ValueError(
                f"{name} of size {size[0]}x{size[1]} is too small for layer "
                f"{self.deepest_layer!r} of {self.spec.name}: it needs at least "
                f"{self.min_input_size}x{self.min_input_size} pixels. Use shallower layers, "
                "larger images, or resize=..."
            )
        param = next(self.body.parameters())
        if x.device != param.device:
            raise ValueError(
                f"{name} is on {x.device} but the backbone is on {param.device}; move the "
                f"module with .to({str(x.device)!r})"
            )
        if x.dtype != param.dtype and not torch.is_autocast_enabled(x.device.type):
            raise TypeError(
                f"{name} has dtype {x.dtype} but the backbone is {param.dtype}; convert the "
                f"module with .to({x.dtype}), or run under torch.autocast for mixed precision"
            )
        if self.check_values:
            check_values(x, name, self.input_range)
        return x

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps of ``x``; see the class docstring for shapes."""
        self.check_input(x)
        return self.forward_preprocessed(self.preprocess(x))

    def forward_preprocessed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the truncated backbone on already preprocessed ``(N, 3, H, W)`` input."""
        return dict(self.iter_features(x))

    def iter_features(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(layer, feature map)`` in depth order, one trunk segment at a time.

        A consumer that uses each map and drops it before asking for the next keeps at most
        one segment's maps alive; :class:`~perceptual_loss.PerceptualLoss` computes each
        layer's distance this way. ``x`` is preprocessed ``(N, 3, H, W)`` input.
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        trunk = list(self.body)  # read at call time: replicas (DataParallel) hold their own
        for start, plan, keep in self._segments:
            modules = trunk[start: start + keep[-1] + 1]
            if self.memory == "lean":
                outputs = lean_forward(modules, x, plan)
                for local in keep:
                    yield self._taps[start + local], outputs[local]
                x = outputs[keep[-1]]
                del outputs
                continue
            for local, module in enumerate(modules):
                if isinstance(module, nn.ReLU) and (local - 1) in keep:
                    x = F.relu(x)  # never overwrite the tapped pre-activation in place
                else:
                    x = module(x)
                if local in keep:
                    yield self._taps[start + local], x

    def extra_repr(self) -> str:
        return (f"backbone={self.spec.name!r}, layers={self.layers}, "
                f"weights={self.weights_source!r}, normalization={self.normalization.name!r}, "
                f"input_range={self.input_range}, channel_mode={self.channel_mode!r}, "
                f"resize={self.preprocess.resize}")


def _segments(modules: list[nn.Module], taps: list[int]
              ) -> list[tuple[int, LeanPlan, list[int]]]:
    """Cut the trunk after every tap; consecutive taps (``conv5_4``, ``relu5_4``) share one.

    Returns:
        ``(first index, lean plan, tapped positions within the segment)`` per segment.
    """
    segments = []
    start, i = 0, 0
    while i < len(taps):
        keep = [taps[i]]
        while i + 1 < len(taps) and taps[i + 1] == keep[-1] + 1:
            i += 1
            keep.append(taps[i])
        part = modules[start: keep[-1] + 1]
        local = [k - start for k in keep]
        segments.append((start, build_plan(part, local), local))
        start, i = keep[-1] + 1, i + 1
    return segments


def _fits(meta_body: nn.Sequential, size: int) -> bool:
    """Whether a ``size`` x ``size`` image passes through ``meta_body`` (shapes only)."""
    x = torch.empty(1, 3, size, size, device="meta")
    try:
        for module in meta_body:
            x = module(x)
            if min(x.shape[-2:]) < 1:
                return False
    except RuntimeError:
        return False
    return True


def _min_input_size(meta_body: nn.Sequential) -> int:
    """Smallest square input size that every module of ``meta_body`` accepts."""
    low, high = 1, 8
    while not _fits(meta_body, high):
        low, high = high + 1, high * 2
        if high > _MAX_PROBE_SIZE:
            raise ValueError(f"no input size up to {_MAX_PROBE_SIZE} fits this backbone")
    while low < high:
        mid = (low + high) // 2
        if _fits(meta_body, mid):
            high = mid
        else:
            low = mid + 1
    return high


def _describe(meta_body: nn.Sequential, taps: dict[int, str], min_size: int
              ) -> dict[str, dict[str, int]]:
    """Channels and stride (input pixels per feature pixel) of each tap.

    The stride is measured as the growth of the feature map between two probe sizes 1024
    pixels apart, so the rounding of strided layers does not bias it.
    """
    base = max(min_size, 64) * 4
    shapes: list[dict[int, tuple[int, int]]] = []
    for size in (base, base + 1024):
        x = torch.empty(1, 3, size, size, device="meta")
        seen: dict[int, tuple[int, int]] = {}
        for index, module in enumerate(meta_body):
            x = module(x)
            if index in taps:
                seen[index] = (int(x.shape[1]), int(x.shape[-1]))
        shapes.append(seen)
    return {taps[i]: {"channels": shapes[0][i][0],
                      "stride": max(1, round(1024 / (shapes[1][i][1] - shapes[0][i][1])))}
            for i in sorted(taps)}
