"""A frozen, truncated backbone that returns named feature maps, one segment at a time."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss._checks import (
    check_choice,
    check_image,
    check_input_range,
    check_pair,
    check_values,
    check_values_of,
    value_role,
)
from perceptual_loss._lean import LeanPlan, build_plan, lean_forward
from perceptual_loss._weight_files import check_state, read_state_dict
from perceptual_loss.backbones import BackboneSpec, get_backbone
from perceptual_loss.backbones.custom import HookedTrunk, ModuleSpec
from perceptual_loss.backbones.geometry import TrunkGeometry
from perceptual_loss.backbones.pooling import POOLINGS, replace_pooling
from perceptual_loss.execution import (
    ChannelsLast,
    Convolution,
    check_channels_last,
    check_convolution,
    choose_channels_last,
    runs_lean,
    uses_winograd,
)
from perceptual_loss.frozen import keep_out_of_state_dict
from perceptual_loss.preprocess import ChannelMode, Normalization, Preprocessor
from perceptual_loss.recipe import DEFAULT_LAYERS, Recipe
from perceptual_loss.weights import build_trunk

__all__ = ["DEFAULT_LAYERS", "FeatureExtractor"]


class FeatureExtractor(nn.Module):
    """Frozen backbone, cut after the deepest requested layer, returning named feature maps.

    The backbone's parameters never require gradients and it stays in eval mode even when a
    parent module calls ``.train()``. Gradients flow to the input. A pre-activation tap such
    as ``conv5_4`` is never overwritten by the in-place ReLU that follows it.

    Args:
        backbone: Registered backbone name (``vgg11``..``vgg19``, ``*_bn``, ``alexnet``,
            ``squeezenet1_1``, ``resnet50``, ``radimagenet_resnet50``, and the 3D
            ``medicalnet_resnet10``/``medicalnet_resnet50``, which take volumes), or a
            network of your own (any ``nn.Module``): its ``named_modules()`` names are the
            layers, taps are taken by forward hooks and the forward stops after the last one;
            it is frozen and put in eval mode in place (pass a copy to keep yours trainable).
            ``weights`` then is ``None``/``"imagenet"`` (its own parameters) or a state-dict
            file to load into it strictly.
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
            ``"caffe"``, ``"lpips"``, ``"radimagenet"``, ``"zscore"``, ``"none"`` or a
            :class:`Normalization`). Each registered network implies its own, also with
            random weights (RadImageNet: BGR minus the mean; MedicalNet: z-score).
        check_values: Check inputs for NaN/Inf and for values outside ``input_range``. The
            check synchronises the device; turn it off for speed once inputs are trusted.
        progress: Show a progress bar if weights are downloaded.
        memory: ``"lean"`` (default) saves only what the input gradient needs: a 1-byte ReLU
            mask per element and a uint8 max-pool window position, instead of float
            activations and int64 indices (see :mod:`perceptual_loss._lean`). Values and
            gradients equal ``"plain"``'s up to float32 rounding (bit-identical with
            ``convolution="direct"``); ``"plain"`` is ordinary autograd, needed only for double
            backward (e.g. a gradient penalty through this loss).
        channels_last: Run the backbone in ``torch.channels_last`` memory format: ``"auto"``
            (default) decides per device (on CPU and for fp16/bf16 autocast on CUDA; see
            :mod:`perceptual_loss.execution`), ``True``/``False`` force it. Values differ
            from NCHW by float rounding only.
        convolution: ``"auto"`` (default): with ``memory="lean"`` on CPU in float32, the 3x3
            layers with at least 128 and 256 channels run by Winograd F(4x4, 3x3), 0.4-0.6x
            the time, within 3e-6 of a float64 convolution (see
            :mod:`perceptual_loss.execution`); ``"direct"``: the framework's kernels always.
        pooling: ``"max"`` (the trained network), ``"avg"``: 2x2 average pooling in place of
            every max pooling, same weights (Gatys et al. prefer it for style), or ``"l2"``:
            DISTS' Hanning-window L2 pooling
            (:class:`~perceptual_loss.backbones.pooling.L2Pool2d`).

    Shape:
        - Input: ``(N, C, H, W)``, ``C`` in {1, 3} (any ``C`` with ``"per_channel"``); for a
          3D network ``(N, C, D, H, W)`` volumes, ``C`` 1 (any with ``"per_channel"``).
        - Output: ``{layer: (N', C_l, H_l, W_l)}`` (``(N', C_l, D_l, H_l, W_l)`` in 3D) with
          ``N' = N`` (``N * C`` per channel).

    Example:
        >>> fx = FeatureExtractor("vgg11", layers=("relu1_1", "pool2"), weights=None)
        >>> feats = fx(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
        >>> {name: tuple(f.shape) for name, f in feats.items()}
        {'relu1_1': (2, 64, 32, 32), 'pool2': (2, 128, 8, 8)}
    """

    def __init__(
        self,
        backbone: str | nn.Module = "vgg16",
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
        channels_last: ChannelsLast = "auto",
        pooling: Literal["max", "avg", "l2"] = "max",
        convolution: Convolution = "auto",
    ) -> None:
        super().__init__()
        self.memory = check_choice("memory", memory, ("lean", "plain"))
        self.channels_last = check_channels_last(channels_last)
        self.convolution = check_convolution(convolution)
        self._layout_channels_last = False  # the body's current parameter layout
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        if isinstance(layers, str):
            layers = (layers,)
        self.spec: BackboneSpec | ModuleSpec = (ModuleSpec.of(backbone)
                                                if isinstance(backbone, nn.Module)
                                                else get_backbone(backbone))
        canonical = list(dict.fromkeys(self.spec.canonical(name) for name in layers))
        if not canonical:
            raise ValueError("layers must name at least one layer; got an empty sequence")
        self.layers: tuple[str, ...] = tuple(canonical)
        self.input_range = check_input_range(input_range)
        self.check_values = check_values
        #: Names of the images already warned about (a prediction far outside the range, once).
        self.value_warnings: set[str] = set()
        #: 2 for images, 3 for volumes (MedicalNet).
        self.spatial_dims: int = self.spec.spatial_dims
        if self.spatial_dims == 3 and resize is not None:
            raise ValueError(f"resize= resizes 2D images; {self.spec.name} takes volumes: "
                             "resample them before the loss and drop resize")
        if self.spatial_dims == 3 and self.pooling != "max":
            raise ValueError(f"pooling={self.pooling!r} replaces 2D max pooling; "
                             f"{self.spec.name} is 3D: drop pooling")
        if isinstance(backbone, nn.Module):
            implied = self._hook_module(backbone, weights)
        else:
            implied = self._cut_trunk(weights, progress)
        self.preprocess = Preprocessor(normalization or implied, self.input_range,
                                       channel_mode, resize, channels=self.spec.in_channels)
        self.normalization = self.preprocess.normalization
        if self.preprocess.resize is not None and min(self.preprocess.resize) < self.min_input_size:
            raise ValueError(
                f"resize={self.preprocess.resize} is too small for layer {self.deepest_layer!r} "
                f"of {self.spec.name}: it needs at least "
                f"{self.min_input_size}x{self.min_input_size}"
            )
        # The frozen trunk comes from its weights file, not from a user's checkpoint.
        keep_out_of_state_dict(self, "body")

    def _cut_trunk(self, weights: str | os.PathLike[str] | None, progress: bool) -> str:
        """Load a registered trunk, cut it after the deepest layer; return its normalisation."""
        assert isinstance(self.spec, BackboneSpec)
        trunk, self.weights_source, implied = build_trunk(self.spec, weights, progress=progress)
        deepest = max(self.spec.layer_names.index(name) for name in self.layers)
        names = [name for name, _ in trunk.named_children()][: deepest + 1]
        kept = replace_pooling(list(trunk.children())[: deepest + 1], self.pooling)
        # The modules keep the trunk's names (a ResNet's layer1 stays layer1).
        self.body = nn.Sequential(OrderedDict(zip(names, kept, strict=True)))
        self.body.requires_grad_(False)
        self.body.eval()
        self._taps: dict[int, str] = {self.spec.layer_names.index(n): n for n in self.layers}
        self._segments = _segments(list(self.body), sorted(self._taps))
        with torch.device("meta"):
            meta_body = nn.Sequential(*replace_pooling(
                list(self.spec.build_features().children())[: deepest + 1], self.pooling))
        meta_body.eval()  # batch norm in eval mode accepts 1x1 maps
        self.geometry: TrunkGeometry | None = TrunkGeometry(
            list(meta_body), self._taps, in_channels=self.spec.in_channels,
            spatial_dims=self.spec.spatial_dims)
        self.min_input_size = self.geometry.min_input_size
        self.feature_info = {name: {"channels": tap.channels, "stride": tap.stride}
                             for name, tap in self.geometry.taps.items()}
        return implied

    def _hook_module(self, module: nn.Module, weights: str | os.PathLike[str] | None) -> str:
        """Tap a user's module by hooks (see :mod:`perceptual_loss.backbones.custom`)."""
        if self.pooling != "max":
            raise ValueError("pooling= replaces the max pooling of the registered VGG trunks; "
                             "change your own module's pooling yourself")
        if weights not in (None, "imagenet"):
            state = read_state_dict(os.fspath(weights))
            check_state(module, state, weights, type(module).__name__)
            module.load_state_dict(state, strict=True)
            self.weights_source = os.fspath(weights)
        else:
            self.weights_source = f"the parameters of your {type(module).__name__}"
        self.body = HookedTrunk(module, self.layers)
        self._taps = dict(enumerate(self.layers))
        self._segments = []
        self.geometry = None
        self.min_input_size = self.body.min_input_size
        self.feature_info = self.body.feature_info
        return "imagenet"

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, memory: Literal["lean", "plain"] = "lean",
                    channels_last: ChannelsLast = "auto", convolution: Convolution = "auto",
                    progress: bool = True) -> FeatureExtractor:
        """The extractor a recipe needs: its backbone cut after its deepest layer.

        Args:
            recipe: Backbone, layers, weights, range, channels, resize, normalisation and
                pooling come from here.
            memory: See the class docstring.
            channels_last: See the class docstring.
            convolution: See the class docstring.
            progress: Show a progress bar if weights are downloaded.
        """
        return cls(recipe.backbone, recipe.feature_layers, recipe.weights,
                   input_range=recipe.input_range, channel_mode=recipe.channel_mode,
                   resize=recipe.resize, normalization=recipe.normalization,
                   check_values=recipe.check_values, progress=progress, memory=memory,
                   channels_last=channels_last, pooling=recipe.pooling,  # type: ignore[arg-type]
                   convolution=convolution)

    def use_channels_last(self, device: torch.device) -> bool:
        """Whether the trunk runs channels-last on ``device`` now; converts it once if so.

        Under ``torch.compile`` the layout is the compiler's (Inductor picks channels-last
        for convolutions itself): the module is not converted while it is being traced.
        """
        if torch.compiler.is_compiling() or self.spatial_dims != 2:
            return False  # channels_last is a 4D layout: volumes keep theirs
        wanted = choose_channels_last(self.channels_last, device, plain=self.memory == "plain")
        if wanted != self._layout_channels_last:
            self.body.to(memory_format=torch.channels_last if wanted
                         else torch.contiguous_format)
            self._layout_channels_last = wanted
        return wanted

    @property
    def backbone(self) -> str | nn.Module:
        """The registered backbone's name, or your own module."""
        return self.body.module if isinstance(self.body, HookedTrunk) else self.spec.name

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

    def check_input(self, x: object, name: str = "input", *, values: bool = True,
                    prediction: bool = False) -> torch.Tensor:
        """Validate ``x`` (type, shape, channels, size, dtype, device, values) and return it.

        Values are judged by the value rule (:func:`~perceptual_loss._checks.range_verdict`):
        an image autograd records is a network's output being trained; otherwise a
        ``prediction`` is a network's output in metric use and anything else is data.
        ``values=False`` leaves the NaN/Inf and range check (a device synchronisation) to the
        caller, which can check several images with one synchronisation.
        """
        x = check_image(x, name, self.spatial_dims)
        channels = x.shape[1]
        if self.channel_mode == "repeat" and self.spec.in_channels == 1 and channels != 1:
            raise ValueError(
                f"{name} has {channels} channels; {self.spec.name} takes 1 (each channel of a "
                "multi-channel volume goes through it on its own with "
                "channel_mode='per_channel')."
            )
        if self.channel_mode == "repeat" and channels not in (1, 3):
            raise ValueError(
                f"{name} has {channels} channels; expected 1 (grayscale) or 3 (RGB). For RGBA "
                "drop alpha (x[:, :3]); for other multi-channel images pass "
                "channel_mode='per_channel'."
            )
        size = self.preprocess.resize or tuple(x.shape[2:])
        if min(size) < self.min_input_size:
            sides = "x".join(str(side) for side in size)
            needed = "x".join([str(self.min_input_size)] * len(size))
            raise ValueError(
                f"{name} of size {sides} is too small for layer "
                f"{self.deepest_layer!r} of {self.spec.name}: it needs at least "
                f"{needed} pixels. Use shallower layers, larger images"
                + (", or resize=..." if self.spatial_dims == 2 else ", or pad them")
            )
        param = next(self.body.parameters(), x)
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
        if self.check_values and values:
            check_values(x, name, self.input_range, value_role(x, prediction=prediction),
                         self.value_warnings)
        return x

    def check_pair(self, prediction: object, target: object
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate an image pair: each image, their shapes together, values in one sync.

        The NaN/Inf and range check of both images costs one device synchronisation.
        """
        prediction = self.check_input(prediction, "prediction", values=False)
        target = self.check_input(target, "target", values=False)
        check_pair(prediction, target)
        if self.check_values:
            check_values_of(((prediction, "prediction", value_role(prediction, prediction=True)),
                             (target, "target", value_role(target))), self.input_range,
                            self.value_warnings)
        return prediction, target

    def stream(self, x: torch.Tensor, name: str = "input", *, check: bool = True
               ) -> Iterator[tuple[str, torch.Tensor]]:
        """Check, preprocess and run ``x``, yielding ``(layer, map)`` as each layer is reached.

        The one pipeline every consumer uses. A consumer that uses each map and drops it
        before asking for the next keeps at most one trunk segment's maps alive.

        Args:
            x: ``(N, C, H, W)`` in ``input_range``.
            name: What ``x`` is called in error messages.
            check: Validate ``x`` first; pass ``False`` only when the caller already did
                (inputs are validated once).
        """
        if check:
            self.check_input(x, name)
        return self.iter_features(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps of ``x``; see the class docstring for shapes."""
        return dict(self.stream(x))

    def forward_preprocessed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the truncated backbone on already preprocessed ``(N, 3, H, W)`` input."""
        return dict(self.iter_features(x))

    def iter_features(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(layer, feature map)`` in depth order, one trunk segment at a time.

        A consumer that uses each map and drops it before asking for the next keeps at most
        one segment's maps alive; :class:`~perceptual_loss.PerceptualLoss` computes each
        layer's distance this way. ``x`` is preprocessed ``(N, 3, H, W)`` input.
        """
        if self.use_channels_last(x.device):
            x = x.contiguous(memory_format=torch.channels_last)
        if isinstance(self.body, HookedTrunk):
            yield from self.body.iter_features(x)
            return
        trunk = list(self.body)  # read at call time: replicas (DataParallel) hold their own
        for start, plan, keep in self._segments:
            modules = trunk[start: start + keep[-1] + 1]
            if runs_lean(self.memory):
                outputs = lean_forward(modules, x, plan, protect_input=start > 0,
                                       winograd=uses_winograd(self.convolution))
                for local in keep:
                    yield self._taps[start + local], outputs[local]
                x = outputs[keep[-1]]
                del outputs
                continue
            for local, module in enumerate(modules):
                # x entering a segment after the first is a tap already handed out
                if isinstance(module, nn.ReLU) and ((local - 1) in keep
                                                    or (local == 0 and start > 0)):
                    x = F.relu(x)  # never overwrite a tapped output in place
                else:
                    x = module(x)
                if local in keep:
                    yield self._taps[start + local], x

    def extra_repr(self) -> str:
        return (f"backbone={self.spec.name!r}, layers={self.layers}, "
                f"weights={self.weights_source!r}, normalization={self.normalization.name!r}, "
                f"input_range={self.input_range}, channel_mode={self.channel_mode!r}, "
                f"resize={self.preprocess.resize}"
                + (f", pooling={self.pooling!r}" if self.pooling != "max" else ""))


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

