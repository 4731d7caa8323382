"""2D ResNet50s: torchvision's ImageNet layout and RadImageNet's (Keras-converted) layout.

Both networks are built here (no torchvision) with the exact state-dict keys of their
published files, so those files load strictly:

- :func:`resnet50` has torchvision's layout: ``conv1``, ``bn1``, ``relu``, ``maxpool``,
  ``layer1`` ... ``layer4`` of :class:`Bottleneck` blocks (``conv1/bn1/conv2/bn2/conv3/bn3``,
  ``downsample.0`` / ``downsample.1`` on the first block of a stage), ``avgpool`` and ``fc``.
  Convolutions have no bias; the stride of a stage sits on the 3x3 convolution ("ResNet
  v1.5"). 25,557,032 parameters with the 1000-class head, as ``resnet50-0676ba61.pth``.
- :func:`radimagenet_resnet50` has the layout of the RadImageNet ResNet50 converted from
  Keras (``RadImageNet-ResNet50_notop.pth``): the same module names without ``avgpool`` and
  ``fc``, but every convolution has a bias, the stride of a stage sits on the first 1x1
  convolution (Keras' ResNet, "v1"), and batch norm uses Keras' ``eps=1.001e-5``.

Called without ``num_classes``, both return the trunk: ``forward`` maps ``(N, 3, H, W)`` to
the output of ``layer4``, ``(N, 2048, ceil(H / 32), ceil(W / 32))`` (for ``H, W >= 1``), the
feature map that MONAI's perceptual loss compares.

References:
    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    Mei et al., "RadImageNet: An Open Radiologic Deep Learning Research Dataset for Effective
    Transfer Learning", Radiology: Artificial Intelligence, 2022.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, Literal

import torch
from torch import nn

from perceptual_loss.backbones.vgg import he_normal_init

__all__ = [
    "BottleneckForward",
    "RESNET50_BLOCKS",
    "RESNET50_PARAMETERS",
    "RESNET_LAYER_NAMES",
    "Bottleneck",
    "ResNet2d",
    "radimagenet_resnet50",
    "resnet50",
    "resnet_trunk",
]

RESNET50_BLOCKS: Final[tuple[int, int, int, int]] = (3, 4, 6, 3)
"""Bottleneck blocks per stage (``layer1`` ... ``layer4``) of a ResNet50."""

RESNET50_PARAMETERS: Final[int] = 25_557_032
"""Parameters of torchvision's ResNet50 with its 1000-class head (weights and biases)."""

RESNET_LAYER_NAMES: Final[tuple[str, ...]] = (
    "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
"""The trunk's modules in order, by their own names (2D and MedicalNet's 3D ResNets alike)."""

Layout = Literal["torchvision", "keras"]


def resnet_trunk(network: nn.Module) -> nn.Sequential:
    """The trunk of a ResNet (``conv1`` ... ``layer4``) as a sequence of its own modules.

    The modules are shared, not copied, and keep their names, so the sequence's state-dict keys
    are the network's (``layer1.0.conv1.weight``): a published file loads into it strictly.
    Running it in order is the network's ``forward`` up to ``layer4``.
    """
    return nn.Sequential(OrderedDict((name, getattr(network, name))
                                     for name in RESNET_LAYER_NAMES))


class BottleneckForward(nn.Module):
    """The forward of a bottleneck block (2D or 3D): three conv-BN stages and a shortcut.

    Subclasses build ``conv1``..``conv3``, ``bn1``..``bn3``, ``relu`` and ``downsample``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn3(conv3(...)) + shortcut(x))``."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class Bottleneck(BottleneckForward):
    """A 1x1 -> 3x3 -> 1x1 residual block with 4x channel expansion.

    Args:
        in_channels: Channels of the block's input.
        width: Channels of the inner 1x1 and 3x3 convolutions; the output has ``4 * width``.
        stride: Spatial stride of the block (1 or 2).
        downsample: Projection of the input for the residual sum (``Sequential(conv, bn)``)
            when its shape changes, else ``None``.
        layout: ``"torchvision"`` (no conv bias, stride on the 3x3 conv, BN eps 1e-5) or
            ``"keras"`` (conv bias, stride on the first 1x1 conv, BN eps 1.001e-5).

    Shape:
        ``(N, in_channels, H, W) -> (N, 4 * width, ceil(H / stride), ceil(W / stride))``.
    """

    expansion: Final[int] = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1,
                 downsample: nn.Module | None = None, *, layout: Layout = "torchvision") -> None:
        super().__init__()
        keras = layout == "keras"
        eps = 1.001e-5 if keras else 1e-5
        stride_1x1, stride_3x3 = (stride, 1) if keras else (1, stride)
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=stride_1x1, bias=keras)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride_3x3, padding=1, bias=keras)
        self.bn2 = nn.BatchNorm2d(width, eps=eps)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=keras)
        self.bn3 = nn.BatchNorm2d(out_channels, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample



class ResNet2d(nn.Module):
    """A bottleneck ResNet for 3-channel images, trunk or classifier.

    Args:
        blocks: Bottleneck blocks per stage; ``(3, 4, 6, 3)`` is ResNet50.
        layout: ``"torchvision"`` or ``"keras"``; see :class:`Bottleneck`.
        num_classes: Build ``avgpool`` and a linear ``fc`` head with this many outputs;
            ``None`` builds the trunk only.

    Shape:
        - Input: ``(N, 3, H, W)``, normalised as the weights were trained.
        - Output: the ``layer4`` map ``(N, 2048, ceil(H / 32), ceil(W / 32))`` for a trunk,
          logits ``(N, num_classes)`` with a head.
    """

    def __init__(self, blocks: Sequence[int] = RESNET50_BLOCKS, *,
                 layout: Layout = "torchvision", num_classes: int | None = None) -> None:
        super().__init__()
        if layout not in ("torchvision", "keras"):
            raise ValueError(f"layout must be 'torchvision' or 'keras'; got {layout!r}")
        if len(blocks) != 4 or any(int(b) < 1 for b in blocks):
            raise ValueError(f"blocks must be four counts >= 1, e.g. (3, 4, 6, 3); got {blocks!r}")
        keras = layout == "keras"
        self.layout: Layout = layout
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=keras)
        self.bn1 = nn.BatchNorm2d(64, eps=1.001e-5 if keras else 1e-5)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        stages = []
        for index, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
            stage, channels = _stage(channels, width, int(count), 1 if index == 0 else 2, layout)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = channels
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(channels, num_classes)
        self.num_classes = num_classes
        he_normal_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The ``layer4`` map, ``(N, 2048, ceil(H / 32), ceil(W / 32))``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x)
        if self.num_classes is None:
            return features
        return self.fc(torch.flatten(self.avgpool(features), 1))


def _stage(in_channels: int, width: int, count: int, stride: int, layout: Layout
           ) -> tuple[nn.Sequential, int]:
    """``count`` bottlenecks; the first projects the shortcut where the shape changes."""
    out_channels = width * Bottleneck.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        keras = layout == "keras"
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=keras),
            nn.BatchNorm2d(out_channels, eps=1.001e-5 if keras else 1e-5),
        )
    blocks = [Bottleneck(in_channels, width, stride, downsample, layout=layout)]
    blocks += [Bottleneck(out_channels, width, layout=layout) for _ in range(count - 1)]
    return nn.Sequential(*blocks), out_channels


def resnet50(num_classes: int | None = None) -> ResNet2d:
    """ResNet50 with torchvision's layout and state-dict keys (``resnet50-0676ba61.pth``).

    Args:
        num_classes: ``1000`` for the full ImageNet classifier (the file's keys, with
            ``fc``); ``None`` (default) for the trunk alone.

    Returns:
        A randomly initialised :class:`ResNet2d`; load weights with ``load_state_dict``.

    Example:
        >>> net = resnet50(num_classes=1000)
        >>> sum(p.numel() for p in net.parameters())
        25557032
    """
    return ResNet2d(RESNET50_BLOCKS, layout="torchvision", num_classes=num_classes)


def radimagenet_resnet50() -> ResNet2d:
    """RadImageNet's ResNet50 trunk with the keys of ``RadImageNet-ResNet50_notop.pth``.

    Returns:
        A randomly initialised trunk, ``(N, 3, H, W) -> (N, 2048, H / 32, W / 32)``; the
        published weights expect BGR inputs in ``[0, 1]`` minus the ImageNet mean.
    """
    return ResNet2d(RESNET50_BLOCKS, layout="keras", num_classes=None)
