"""Backbone registry: every network the library runs, how to build it, what its layers are called.

A :class:`BackboneSpec` builds the model with the layout of its published file (so the file
loads strictly), builds its trunk alone as a sequence of named modules, and says what the trunk
takes: channels, 2D images or 3D volumes, and the preprocessing its weights were trained with.
Registered here: VGG11-19 (±BN), AlexNet and SqueezeNet 1.1 (with the layers LPIPS taps),
torchvision's ResNet50, RadImageNet's ResNet50 and MedicalNet's 3D ResNet10/50. A user's own
``nn.Module`` is tapped by hooks instead (:mod:`perceptual_loss.backbones.custom`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from torch import nn

from perceptual_loss._registry import Registry
from perceptual_loss.backbones.alexnet import (
    ALEXNET_LAYER_NAMES,
    LPIPS_ALEXNET_TAPS,
    AlexNet,
    make_alexnet_features,
)
from perceptual_loss.backbones.medicalnet import medicalnet_resnet10, medicalnet_resnet50
from perceptual_loss.backbones.resnet import (
    RESNET_LAYER_NAMES,
    radimagenet_resnet50,
    resnet50,
    resnet_trunk,
)
from perceptual_loss.backbones.squeezenet import (
    LPIPS_SQUEEZENET_TAPS,
    SQUEEZENET1_1_LAYER_NAMES,
    SqueezeNet1_1,
    make_squeezenet1_1_features,
)
from perceptual_loss.backbones.vgg import VGG, keras_aliases, make_vgg_features, vgg_layer_names

__all__ = [
    "BackboneSpec",
    "get_backbone",
    "list_backbones",
    "lpips_backbone",
    "nearest_layer",
    "register_backbone",
]


@dataclass(frozen=True)
class BackboneSpec:
    """What the library needs to know about one trunk.

    Attributes:
        name: Registry name, e.g. ``"vgg16"``.
        build: Builds the full model with torchvision's module layout and state-dict keys.
        build_features: Builds the trunk alone (``== build().features``), an ``nn.Sequential``.
        layer_names: One name per module of the trunk, in order.
        aliases: Other accepted names mapped to names in ``layer_names`` (Keras spellings).
        weights: Named weights for this trunk mapped to keys of the weight registry, e.g.
            ``{"imagenet": "vgg16/imagenet"}``.
        features_prefix: Prefix of the trunk's keys in the full model's state dict (``""``:
            the trunk's keys are the model's own, as a ResNet's ``layer1.0.conv1.weight``).
        in_channels: Channels the trunk takes (3 for RGB networks, 1 for MedicalNet).
        spatial_dims: 2 (images ``(N, C, H, W)``) or 3 (volumes ``(N, C, D, H, W)``).
        normalization: The preprocessing of its weights (a name in
            :data:`perceptual_loss.preprocess.NORMALIZATIONS`), also used for random weights
            and for files given by path.
        lpips_name: The name LPIPS gives this trunk (``"vgg"``, ``"alex"``, ``"squeeze"``), or
            ``None`` if LPIPS does not use it.
        lpips_layers: The layers LPIPS taps, in the order of its heads.
    """

    name: str
    build: Callable[[], nn.Module]
    build_features: Callable[[], nn.Sequential]
    layer_names: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    weights: Mapping[str, str] = field(default_factory=dict)
    features_prefix: str = "features."
    in_channels: int = 3
    spatial_dims: int = 2
    normalization: str = "imagenet"
    lpips_name: str | None = None
    lpips_layers: tuple[str, ...] = ()

    def canonical(self, layer: str) -> str:
        """Resolve ``layer`` (ours or an alias) to a name in :attr:`layer_names`.

        Raises:
            ValueError: If the name is unknown; the message lists the valid names and the
                nearest match.
        """
        if layer in self.layer_names:
            return layer
        if layer in self.aliases:
            return self.aliases[layer]
        valid = list(self.layer_names)
        close = nearest_layer(layer, valid + list(self.aliases))
        hint = f" Did you mean {close!r}?" if close else ""
        raise ValueError(
            f"unknown layer {layer!r} for backbone {self.name!r}.{hint} "
            f"Valid layers: {', '.join(valid)}"
            + (f" (Keras aliases such as {next(iter(self.aliases))!r} also work)."
               if self.aliases else ".")
        )

    def index(self, layer: str) -> int:
        """Position of ``layer`` (any accepted name) in the trunk."""
        return self.layer_names.index(self.canonical(layer))


_LAYER_PATTERNS = (
    re.compile(r"(?P<kind>block)(?P<block>\d+)_conv(?P<pos>\d+)"),   # Keras: block3_conv3
    re.compile(r"(?P<kind>block)(?P<block>\d+)_pool()"),             # Keras: block3_pool
    re.compile(r"(?P<kind>[a-z]+)(?P<block>\d+)_(?P<pos>\d+)"),      # relu3_3, conv3_3, bn3_3
    re.compile(r"(?P<kind>[a-z]+)(?P<block>\d+)()"),                  # pool3, relu1, fire2
)


def _layer_key(name: str) -> tuple[str, int, int] | None:
    """``(kind, block, position)`` of a structured layer name; ``None`` for other names."""
    for number, pattern in enumerate(_LAYER_PATTERNS):
        match = pattern.fullmatch(name.strip().lower())
        if match is not None:
            kind = f"{match['kind']}#{number}"  # block3_conv3 and block3_pool differ in kind
            return kind, int(match.group(2)), int(match.group(3) or 0)
    return None


def nearest_layer(layer: str, names: list[str]) -> str | None:
    """The name in ``names`` a user most likely meant by the unknown ``layer``.

    Structured names are matched by kind, then block, then position: for VGG11 (one
    convolution in block 1) ``relu1_2`` gives ``relu1_1``, and ``relu9_9`` on VGG16 gives
    ``relu5_3``, where spelling alone would pick ``relu5_2`` or nothing. Other names fall
    back to the closest spelling.

    Args:
        layer: The unknown name.
        names: Valid names (layer names and aliases).

    Returns:
        The nearest valid name, or ``None`` when nothing is close.
    """
    key = _layer_key(layer)
    if key is not None:
        kind, block, position = key
        same_kind = [(abs(k[1] - block), abs(k[2] - position), -k[2], name)
                     for name in names if (k := _layer_key(name)) is not None and k[0] == kind]
        if same_kind:
            return min(same_kind)[3]
    close = difflib.get_close_matches(layer, names, n=1)
    return close[0] if close else None


_REGISTRY: Registry[BackboneSpec] = Registry("backbone")


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (a second spec of the same name is a ValueError)."""
    return _REGISTRY.add(spec.name, spec)


def get_backbone(name: str) -> BackboneSpec:
    """The registered backbone called ``name`` (unknown names list the registered ones)."""
    return _REGISTRY.get(name)


def list_backbones() -> list[str]:
    """Names of the registered backbones, sorted."""
    return _REGISTRY.keys()


_LPIPS_VGG16_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")

for _depth in ("vgg11", "vgg13", "vgg16", "vgg19"):
    for _bn in (False, True):
        _name = f"{_depth}_bn" if _bn else _depth
        _weights = {"imagenet": f"{_name}/imagenet"}
        if _depth in ("vgg16", "vgg19") and not _bn:
            _weights["keras-imagenet"] = f"{_name}/keras-imagenet"
        _lpips = _name == "vgg16"
        register_backbone(BackboneSpec(
            name=_name,
            build=partial(VGG, _depth, _bn),
            build_features=partial(make_vgg_features, _depth, _bn),
            layer_names=vgg_layer_names(_depth, _bn),
            aliases=keras_aliases(_depth, _bn),
            weights=_weights,
            lpips_name="vgg" if _lpips else None,
            lpips_layers=_LPIPS_VGG16_TAPS if _lpips else (),
        ))

for _name, _build, _features, _names, _lpips_name, _taps in (
    ("alexnet", AlexNet, make_alexnet_features, ALEXNET_LAYER_NAMES, "alex", LPIPS_ALEXNET_TAPS),
    ("squeezenet1_1", SqueezeNet1_1, make_squeezenet1_1_features, SQUEEZENET1_1_LAYER_NAMES,
     "squeeze", LPIPS_SQUEEZENET_TAPS),
):
    register_backbone(BackboneSpec(name=_name, build=_build, build_features=_features,
                                   layer_names=_names, weights={"imagenet": f"{_name}/imagenet"},
                                   lpips_name=_lpips_name, lpips_layers=_taps))


def _trunk_of(build: Callable[[], nn.Module]) -> nn.Sequential:
    return resnet_trunk(build())


# ResNets: the trunk is conv1 ... layer4 by the network's own module names; the published files
# hold these keys (torchvision's with its fc head, which is checked and left out).
register_backbone(BackboneSpec(
    name="resnet50", build=partial(resnet50, 1000), build_features=partial(_trunk_of, resnet50),
    layer_names=RESNET_LAYER_NAMES, features_prefix="",
    weights={"imagenet": "resnet50/imagenet", "imagenet-v2": "resnet50/imagenet-v2"},
))
register_backbone(BackboneSpec(
    name="radimagenet_resnet50", build=radimagenet_resnet50,
    build_features=partial(_trunk_of, radimagenet_resnet50), layer_names=RESNET_LAYER_NAMES,
    features_prefix="", weights={"radimagenet": "radimagenet_resnet50/radimagenet"},
    normalization="radimagenet",
))
for _name, _build in (("medicalnet_resnet10", medicalnet_resnet10),
                      ("medicalnet_resnet50", medicalnet_resnet50)):
    register_backbone(BackboneSpec(
        name=_name, build=_build, build_features=partial(_trunk_of, _build),
        layer_names=RESNET_LAYER_NAMES, features_prefix="", in_channels=1, spatial_dims=3,
        normalization="zscore",
        weights={"medicalnet": f"{_name}/medicalnet",
                 "medicalnet-23datasets": f"{_name}/medicalnet-23datasets"},
    ))


def lpips_backbone(net: str) -> BackboneSpec:
    """The registered trunk LPIPS calls ``net`` (``"alex"``, ``"vgg"``, ``"squeeze"``).

    The registry name works too (``"alexnet"``, ``"vgg16"``, ``"squeezenet1_1"``).

    Raises:
        ValueError: No LPIPS trunk of that name; the message lists them.
    """
    trunks = {spec.lpips_name: spec for spec in map(get_backbone, list_backbones())
              if spec.lpips_name is not None}
    for spec in trunks.values():
        if net == spec.name:
            return spec
    if net not in trunks:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of: {', '.join(sorted(trunks))}")
    return trunks[net]
