"""3D ResNets of MedicalNet (Med3D), with the state-dict keys of the published files.

MedicalNet trained 3D ResNets on 23 CT/MRI segmentation datasets. Its encoders are built here
(no torchvision, no hub code) with the module names of the published checkpoints once their
``"module."`` prefixes (from ``DataParallel``) are removed: ``conv1``, ``bn1``, ``relu``,
``maxpool``, ``layer1`` ... ``layer4``, blocks with ``conv1/bn1/conv2/bn2`` (and
``conv3/bn3`` for bottlenecks), ``downsample.0`` / ``downsample.1`` projections. There is no
head: the files hold the encoder only.

Layout (MedicalNet's "shortcut B" ResNets):

- ``conv1``: 7x7x7, stride 2, one input channel, no bias; ``maxpool`` 3x3x3, stride 2;
- ``layer1`` stride 1, ``layer2`` stride 2, ``layer3`` stride 1 with dilation 2, ``layer4``
  stride 1 with dilation 4 (dilated instead of strided, for dense segmentation);
- ResNet10: one :class:`BasicBlock3d` per stage (64, 128, 256, 512 channels);
  ResNet50: (3, 4, 6, 3) :class:`Bottleneck3d` blocks (256, 512, 1024, 2048 channels), the
  stride on the 3x3x3 convolution.

``forward`` maps a single-channel volume ``(N, 1, D, H, W)`` to the output of ``layer4``,
``(N, 512 or 2048, ceil(D / 8), ceil(H / 8), ceil(W / 8))``: the map MONAI's perceptual loss
compares.

References:
    Chen, Ma and Zheng, "Med3D: Transfer Learning for 3D Medical Image Analysis",
    arXiv:1904.00625, 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import torch
from torch import nn

from perceptual_loss.backbones.resnet import BottleneckForward
from perceptual_loss.backbones.vgg import he_normal_init

__all__ = [
    "MEDICALNET_DEPTHS",
    "BasicBlock3d",
    "Bottleneck3d",
    "MedicalNetResNet",
    "medicalnet_resnet",
    "medicalnet_resnet10",
    "medicalnet_resnet50",
]

MEDICALNET_DEPTHS: Final[dict[int, tuple[str, tuple[int, int, int, int]]]] = {
    10: ("basic", (1, 1, 1, 1)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
"""Block type and blocks per stage of each depth built here."""


def _conv3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1
           ) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=dilation,
                     dilation=dilation, bias=False)


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions with a residual sum (ResNet10/18/34 of MedicalNet).

    Args:
        in_channels: Channels of the block's input.
        width: Output channels.
        stride: Stride of the first convolution.
        dilation: Dilation (and padding) of both convolutions.
        downsample: Projection of the input for the sum when its shape changes, else ``None``.
    """

    expansion: Final[int] = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3(in_channels, width, stride, dilation)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3(width, width, 1, dilation)
        self.bn2 = nn.BatchNorm3d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck3d(BottleneckForward):
    """1x1x1 -> 3x3x3 -> 1x1x1 convolutions with 4x expansion (ResNet50+ of MedicalNet).

    Args:
        in_channels: Channels of the block's input.
        width: Channels of the inner convolutions; the output has ``4 * width``.
        stride: Stride of the 3x3x3 convolution.
        dilation: Dilation (and padding) of the 3x3x3 convolution.
        downsample: Projection of the input for the sum when its shape changes, else ``None``.
    """

    expansion: Final[int] = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = _conv3(width, width, stride, dilation)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample



class MedicalNetResNet(nn.Module):
    """MedicalNet's 3D ResNet encoder.

    Args:
        block: ``"basic"`` (:class:`BasicBlock3d`) or ``"bottleneck"`` (:class:`Bottleneck3d`).
        blocks: Blocks per stage, e.g. ``(1, 1, 1, 1)`` for ResNet10.

    Shape:
        - Input: ``(N, 1, D, H, W)``, z-scored intensities.
        - Output: ``(N, 512 * expansion, ceil(D / 8), ceil(H / 8), ceil(W / 8))``.
    """

    def __init__(self, block: str, blocks: Sequence[int]) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck'; got {block!r}")
        if len(blocks) != 4 or any(int(b) < 1 for b in blocks):
            raise ValueError(f"blocks must be four counts >= 1, e.g. (1, 1, 1, 1); got {blocks!r}")
        kind = BasicBlock3d if block == "basic" else Bottleneck3d
        self.conv1 = nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        channels = 64
        stages = []
        plan = ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))  # width, stride, dilation
        for count, (width, stride, dilation) in zip(blocks, plan, strict=True):
            stage, channels = _stage(kind, channels, width, int(count), stride, dilation)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = channels
        he_normal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _stage(kind: type[BasicBlock3d] | type[Bottleneck3d], in_channels: int, width: int,
           count: int, stride: int, dilation: int) -> tuple[nn.Sequential, int]:
    """``count`` blocks; the first projects the shortcut (1x1x1 conv + BN) if needed."""
    out_channels = width * kind.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm3d(out_channels),
        )
    layers = [kind(in_channels, width, stride, dilation, downsample)]
    layers += [kind(out_channels, width, 1, dilation) for _ in range(count - 1)]
    return nn.Sequential(*layers), out_channels


def medicalnet_resnet(depth: int) -> MedicalNetResNet:
    """MedicalNet's 3D ResNet encoder of the given ``depth`` (10 or 50), randomly initialised.

    Raises:
        ValueError: ``depth`` is not one built here.
    """
    if depth not in MEDICALNET_DEPTHS:
        raise ValueError(f"depth must be one of {sorted(MEDICALNET_DEPTHS)}; got {depth!r}")
    block, blocks = MEDICALNET_DEPTHS[depth]
    return MedicalNetResNet(block, blocks)


def medicalnet_resnet10() -> MedicalNetResNet:
    """ResNet10 encoder (``resnet_10.pth``, ``resnet_10_23dataset.pth``): 512 output channels.

    Example:
        >>> net = medicalnet_resnet10().eval()
        >>> net(torch.zeros(1, 1, 16, 16, 16)).shape
        torch.Size([1, 512, 2, 2, 2])
    """
    return medicalnet_resnet(10)


def medicalnet_resnet50() -> MedicalNetResNet:
    """ResNet50 encoder (``resnet_50.pth``, ``resnet_50_23dataset.pth``): 2048 output channels."""
    return medicalnet_resnet(50)
