"""SqueezeNet 1.1 with torchvision's state-dict keys, the trunk of LPIPS-squeeze.

The modules are laid out exactly as ``torchvision.models.squeezenet1_1`` (``features``,
``classifier``), so torchvision's ``squeezenet1_1-b8a52dc0.pth``, or its ``features`` part
alone, loads strictly. The 13 modules of ``features`` are named after the paper's blocks:
``conv1``, ``relu1``, ``pool1``, ``fire2``, ``fire3``, ``pool3``, ``fire4``, ``fire5``,
``pool5``, ``fire6``, ``fire7``, ``fire8``, ``fire9`` (a Fire module's output is already
rectified: the concatenation of two ReLU branches). LPIPS taps ``relu1``, ``fire3``,
``fire5``, ``fire6``, ``fire7``, ``fire8`` and ``fire9``.

References:
    Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
    <0.5MB model size", arXiv:1602.07360, 2016 (version 1.1 from the authors' repository).
"""

from __future__ import annotations

from typing import Final

import torch
from torch import nn

__all__ = [
    "LPIPS_SQUEEZENET_TAPS",
    "SQUEEZENET1_1_LAYER_NAMES",
    "Fire",
    "SqueezeNet1_1",
    "make_squeezenet1_1_features",
]

SQUEEZENET1_1_LAYER_NAMES: Final[tuple[str, ...]] = (
    "conv1", "relu1", "pool1",
    "fire2", "fire3", "pool3",
    "fire4", "fire5", "pool5",
    "fire6", "fire7", "fire8", "fire9",
)
"""One name per module of :func:`make_squeezenet1_1_features`, in order."""

LPIPS_SQUEEZENET_TAPS: Final[tuple[str, ...]] = (
    "relu1", "fire3", "fire5", "fire6", "fire7", "fire8", "fire9",
)
"""The layers LPIPS compares (channels 64, 128, 256, 384, 384, 512, 512)."""


class Fire(nn.Module):
    """SqueezeNet's Fire module: a 1x1 squeeze, then parallel 1x1 and 3x3 expansions.

    Args:
        in_channels: Channels of the input.
        squeeze_channels: Channels after the 1x1 squeeze convolution.
        expand1x1_channels: Channels of the 1x1 expansion branch.
        expand3x3_channels: Channels of the 3x3 expansion branch.

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: ``(N, expand1x1_channels + expand3x3_channels, H, W)``, non-negative.
    """

    def __init__(self, in_channels: int, squeeze_channels: int,
                 expand1x1_channels: int, expand3x3_channels: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze_channels, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_channels, expand1x1_channels, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_channels, expand3x3_channels, kernel_size=3,
                                   padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Squeeze ``x``, expand it along two branches and concatenate them on channels."""
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)),
             self.expand3x3_activation(self.expand3x3(x))],
            dim=1,
        )


def make_squeezenet1_1_features() -> nn.Sequential:
    """The convolutional trunk, keyed ``"0.weight"``, ``"3.squeeze.weight"``, ... as torchvision's.

    Returns:
        ``nn.Sequential`` of 13 modules mapping ``(N, 3, H, W)`` to ``(N, 512, H', W')`` with
        ``H' ~ H/16`` (pooling rounds up, so any input of at least 3x3 pixels passes).
    """
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=3, stride=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(64, 16, 64, 64),
        Fire(128, 16, 64, 64),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(128, 32, 128, 128),
        Fire(256, 32, 128, 128),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(256, 48, 192, 192),
        Fire(384, 48, 192, 192),
        Fire(384, 64, 256, 256),
        Fire(512, 64, 256, 256),
    )
    _init_like_torchvision(features)
    return features


class SqueezeNet1_1(nn.Module):  # noqa: N801 - the model's published name
    """SqueezeNet 1.1 classifier with torchvision's module layout and state-dict keys.

    Args:
        num_classes: Output classes of the classifier.
        dropout: Dropout probability before the final convolution.

    Shape:
        - Input: ``(N, 3, H, W)``, ImageNet-normalised.
        - Output: ``(N, num_classes)`` logits.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = make_squeezenet1_1_features()
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            final_conv,
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        nn.init.normal_(final_conv.weight, mean=0.0, std=0.01)
        nn.init.zeros_(final_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``x`` of shape ``(N, 3, H, W)`` into ``(N, num_classes)`` logits."""
        x = self.features(x)
        x = self.classifier(x)
        return torch.flatten(x, 1)


def _init_like_torchvision(module: nn.Module) -> None:
    """The initialisation torchvision uses for SqueezeNet, so random weights behave alike."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
