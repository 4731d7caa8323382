"""AlexNet with torchvision's state-dict keys, the trunk of LPIPS-alex.

The modules are laid out exactly as ``torchvision.models.alexnet`` (``features``, ``avgpool``,
``classifier``), so torchvision's ``alexnet-owt-7be5be79.pth``, or its ``features`` part alone,
loads strictly. The 13 modules of ``features`` are named ``conv1``, ``relu1``, ``pool1``,
``conv2``, ``relu2``, ``pool2``, ``conv3``, ``relu3``, ``conv4``, ``relu4``, ``conv5``,
``relu5``, ``pool5``; LPIPS taps the five ReLUs.

References:
    Krizhevsky, "One weird trick for parallelizing convolutional neural networks",
    arXiv:1404.5997, 2014 (the single-tower variant torchvision ships).
"""

from __future__ import annotations

from typing import Final

import torch
from torch import nn

__all__ = ["ALEXNET_LAYER_NAMES", "LPIPS_ALEXNET_TAPS", "AlexNet", "make_alexnet_features"]

ALEXNET_LAYER_NAMES: Final[tuple[str, ...]] = (
    "conv1", "relu1", "pool1",
    "conv2", "relu2", "pool2",
    "conv3", "relu3",
    "conv4", "relu4",
    "conv5", "relu5", "pool5",
)
"""One name per module of :func:`make_alexnet_features`, in order."""

LPIPS_ALEXNET_TAPS: Final[tuple[str, ...]] = ("relu1", "relu2", "relu3", "relu4", "relu5")
"""The layers LPIPS compares (channels 64, 192, 384, 256, 256)."""


def make_alexnet_features() -> nn.Sequential:
    """The convolutional trunk, keyed ``"0.weight"``, ``"0.bias"``, ... as torchvision's.

    Returns:
        ``nn.Sequential`` of 13 modules mapping ``(N, 3, H, W)`` to ``(N, 256, H', W')`` with
        ``H' ~ H/32`` (an input of at least 63x63 pixels is needed to reach ``pool5``, 31x31
        to reach ``relu5``).
    """
    features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    return features


class AlexNet(nn.Module):
    """AlexNet classifier with torchvision's module layout and state-dict keys.

    Random initialisation is PyTorch's default for ``Conv2d``/``Linear``, as in torchvision.

    Args:
        num_classes: Output classes of the classifier.
        dropout: Dropout probability in the classifier.

    Shape:
        - Input: ``(N, 3, H, W)``, ImageNet-normalised, ``H, W >= 63``.
        - Output: ``(N, num_classes)`` logits.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = make_alexnet_features()
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify ``x`` of shape ``(N, 3, H, W)`` into ``(N, num_classes)`` logits."""
        x = self.features(x)
        x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))
