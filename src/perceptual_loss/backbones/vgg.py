"""VGG11/13/16/19, with and without batch norm, with torchvision's state-dict keys.

The modules are laid out exactly as ``torchvision.models.vgg*`` (``features``, ``avgpool``,
``classifier``), so a torchvision checkpoint, or its ``features`` part alone, loads strictly.
Each module of ``features`` gets a name: ``conv{b}_{i}``, ``bn{b}_{i}``, ``relu{b}_{i}`` and
``pool{b}`` (block ``b``, convolution ``i``).

References:
    Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
    Recognition", ICLR 2015.
"""

from __future__ import annotations

from typing import Final

import torch
from torch import nn

# Channel counts per block; "M" is a 2x2 max-pool. Same configurations as the paper (A, B, D, E).
VGG_CONFIGS: Final[dict[str, tuple[int | str, ...]]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}


def vgg_layer_names(depth: str, batch_norm: bool) -> tuple[str, ...]:
    """Names of the modules of ``features``, in order.

    Args:
        depth: One of ``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``.
        batch_norm: Whether a ``BatchNorm2d`` follows every convolution.

    Returns:
        One name per module, e.g. ``("conv1_1", "relu1_1", "conv1_2", ..., "pool5")``.
    """
    names: list[str] = []
    block, conv = 1, 0
    for item in VGG_CONFIGS[depth]:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
            continue
        conv += 1
        names.append(f"conv{block}_{conv}")
        if batch_norm:
            names.append(f"bn{block}_{conv}")
        names.append(f"relu{block}_{conv}")
    return tuple(names)


def keras_aliases(depth: str, batch_norm: bool) -> dict[str, str]:
    """Keras layer names mapped to ours.

    A Keras ``Conv2D`` includes its ReLU, so ``block3_conv3`` is our ``relu3_3``;
    ``block3_pool`` is ``pool3``.
    """
    aliases: dict[str, str] = {}
    for name in vgg_layer_names(depth, batch_norm):
        if name.startswith("relu"):
            block, conv = name[4:].split("_")
            aliases[f"block{block}_conv{conv}"] = name
        elif name.startswith("pool"):
            aliases[f"block{name[4:]}_pool"] = name
    return aliases


def make_vgg_features(depth: str, batch_norm: bool) -> nn.Sequential:
    """The convolutional trunk, keyed ``"0.weight"``, ``"0.bias"``, ... as torchvision's.

    Args:
        depth: One of ``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``.
        batch_norm: Whether a ``BatchNorm2d`` follows every convolution.

    Returns:
        ``nn.Sequential`` mapping ``(N, 3, H, W)`` to ``(N, 512, H/32, W/32)``.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG_CONFIGS[depth]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_channels = int(item)
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    features = nn.Sequential(*layers)
    _init_like_torchvision(features)
    return features


class VGG(nn.Module):
    """VGG classifier with torchvision's module layout and state-dict keys.

    Args:
        depth: One of ``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``.
        batch_norm: Whether a ``BatchNorm2d`` follows every convolution.
        num_classes: Output classes of the classifier.
        dropout: Dropout probability in the classifier.

    Shape:
        - Input: ``(N, 3, H, W)``, ImageNet-normalised.
        - Output: ``(N, num_classes)`` logits.
    """

    def __init__(self, depth: str = "vgg16", batch_norm: bool = False,
                 num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = make_vgg_features(depth, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        _init_like_torchvision(self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``x`` of shape ``(N, 3, H, W)`` into ``(N, num_classes)`` logits."""
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


def _init_like_torchvision(module: nn.Module) -> None:
    """The initialisation torchvision uses, so random weights behave alike."""
    he_normal_init(module)
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def he_normal_init(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions, zero biases, unit batch norm.

    As torchvision initialises VGG and ResNet, and MedicalNet its 3D ResNets.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
