"""Image-to-image networks that the training commands fit with the perceptual loss.

Three networks, each a plain ``nn.Module`` taking and returning images in ``[0, 1]``:

- :class:`UNet`: encoder/decoder with skip connections, the kind of network the Keras
  article trains with a VGG-16 perceptual loss; used here for denoising.
- :class:`TransformerNet`: the image transformation network of Johnson et al. (2016) for
  fast style transfer, with instance normalisation and upsample-then-convolve decoding
  (no transposed convolutions, so no checkerboard artefacts).
- :class:`SuperResolutionNet`: residual trunk and sub-pixel (pixel-shuffle) upsampling by
  x2 or x4, predicting a correction to the bicubic upscale.

Every network records the keyword arguments it was built with in ``.config`` so that a
checkpoint can rebuild it with :func:`build_model`.

References:
    Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image
    Segmentation. MICCAI 2015.
    Johnson, Alahi, Fei-Fei. Perceptual Losses for Real-Time Style Transfer and
    Super-Resolution. ECCV 2016.
    Shi et al. Real-Time Single Image and Video Super-Resolution Using an Efficient
    Sub-Pixel Convolutional Neural Network. CVPR 2016.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MODEL_NAMES",
    "SuperResolutionNet",
    "TransformerNet",
    "UNet",
    "build_model",
]


def _check_image_batch(x: torch.Tensor, channels: int, network: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{network} expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"{network} expected a batch of shape (N, {channels}, H, W), got shape "
            f"{tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{network} was built for {channels} input channel(s), got a batch with "
            f"{x.shape[1]} (shape {tuple(x.shape)}); build it with in_channels={x.shape[1]}"
        )


def _check_positive_int(value: int, name: str, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _checked_config(name: str, **sizes: int) -> dict[str, Any]:
    """Check every size (``num_residual`` may be 0) and return the model's ``config``."""
    for key, value in sizes.items():
        _check_positive_int(value, key, minimum=0 if key == "num_residual" else 1)
    return {"name": name, **sizes}


class _DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm and ReLU (the U-Net block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net for image restoration (denoising), output in ``[0, 1]``.

    ``depth`` times: two 3x3 conv + BN + ReLU, then 2x2 max pooling; a bottleneck block;
    then ``depth`` times: bilinear x2 upsampling, concatenation with the encoder map of the
    same size, two 3x3 conv + BN + ReLU. Channels double at each level from
    ``base_channels``. Inputs of any size work: they are padded (replicate) to a multiple
    of ``2**depth`` and the output is cropped back.

    With ``residual=True`` (the default, good for denoising) the network predicts a
    correction that is added to the input, and the sum is clamped to ``[0, 1]``; otherwise
    the output goes through a sigmoid.

    Args:
        in_channels: Channels of the input image (1 for grayscale/CT, 3 for RGB).
        out_channels: Channels of the output; ``None`` means ``in_channels``. Must equal
            ``in_channels`` when ``residual=True``.
        base_channels: Channels of the first level (doubled at every level below).
        depth: Number of pooling steps (1 to 6).
        residual: Add the prediction to the input instead of predicting the image.

    Shape:
        - Input: ``(N, in_channels, H, W)`` in ``[0, 1]``.
        - Output: ``(N, out_channels, H, W)`` in ``[0, 1]``.

    Example:
        >>> net = UNet(in_channels=1, base_channels=8, depth=2)
        >>> net(torch.rand(2, 1, 30, 45)).shape
        torch.Size([2, 1, 30, 45])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        base_channels: int = 32,
        depth: int = 3,
        residual: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        _check_positive_int(base_channels, "base_channels")
        _check_positive_int(depth, "depth")
        if depth > 6:
            raise ValueError(f"depth must be between 1 and 6, got {depth}")
        out_channels = in_channels if out_channels is None else out_channels
        _check_positive_int(out_channels, "out_channels")
        if residual and out_channels != in_channels:
            raise ValueError(
                f"residual=True adds the prediction to the input, so out_channels "
                f"({out_channels}) must equal in_channels ({in_channels}); "
                "pass residual=False to map between channel counts"
            )
        self.config: dict[str, Any] = {
            "name": "unet",
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_channels": base_channels,
            "depth": depth,
            "residual": residual,
        }
        self.in_channels = in_channels
        self.depth = depth
        self.residual = residual
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoders.append(_DoubleConv(channels, width))
            channels = width
        self.bottleneck = _DoubleConv(widths[-2], widths[-1])
        self.decoders = nn.ModuleList(
            _DoubleConv(widths[level + 1] + widths[level], widths[level])
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)
        if residual:
            # Start as the identity map: the first steps refine instead of undoing noise.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore a batch of images.

        Args:
            x: ``(N, in_channels, H, W)`` images in ``[0, 1]``.

        Returns:
            ``(N, out_channels, H, W)`` images in ``[0, 1]``.
        """
        _check_image_batch(x, self.in_channels, "UNet")
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_bottom = (-height) % multiple
        pad_right = (-width) % multiple
        padded = F.pad(x, (0, pad_right, 0, pad_bottom), mode="replicate") if (
            pad_bottom or pad_right
        ) else x
        skips = []
        features = padded
        for encoder in self.encoders:
            features = encoder(features)
            skips.append(features)
            features = F.max_pool2d(features, 2)
        features = self.bottleneck(features)
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            features = F.interpolate(
                features, size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            features = decoder(torch.cat([features, skip], dim=1))
        out = self.head(features)[..., :height, :width]
        if self.residual:
            return (x + out).clamp(0.0, 1.0)
        return torch.sigmoid(out)


class _ConvLayer(nn.Sequential):
    """Reflection-padded convolution (Johnson et al. use reflection padding throughout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(
            nn.ReflectionPad2d(kernel_size // 2),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride),
        )


class _ResidualBlock(nn.Module):
    """Two 3x3 conv + instance norm layers with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _ConvLayer(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(inplace=True),
            _ConvLayer(channels, channels, 3),
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _UpsampleConv(nn.Module):
    """Nearest-neighbour resize to a given size, then a convolution, norm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = _ConvLayer(in_channels, out_channels, kernel_size)
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class TransformerNet(nn.Module):
    """Johnson et al. (2016) image transformation network for fast style transfer.

    9x9 conv (``base_channels``), two stride-2 3x3 convs (x2, x4 channels), ``num_residual``
    residual blocks, two upsample-then-3x3-conv stages back to the input size, and a 9x9
    conv to ``channels`` outputs through a sigmoid. Instance normalisation with learned
    affine parameters after every convolution but the last; reflection padding throughout.
    The upsampling goes to the exact size each encoder stage had, so odd sizes come back
    unchanged.

    Args:
        channels: Image channels in and out (3 for RGB).
        base_channels: Width of the first layer (32 in the paper).
        num_residual: Number of residual blocks (5 in the paper).

    Shape:
        - Input: ``(N, channels, H, W)`` in ``[0, 1]``, ``H, W >= 5``.
        - Output: ``(N, channels, H, W)`` in ``[0, 1]``.

    Example:
        >>> net = TransformerNet(base_channels=8, num_residual=1)
        >>> net(torch.rand(1, 3, 33, 21)).shape
        torch.Size([1, 3, 33, 21])
    """

    def __init__(self, channels: int = 3, base_channels: int = 32, num_residual: int = 5):
        super().__init__()
        self.config = _checked_config("transformer", channels=channels,
                                      base_channels=base_channels, num_residual=num_residual)
        self.channels = channels
        c1, c2, c3 = base_channels, base_channels * 2, base_channels * 4
        self.stem = nn.Sequential(
            _ConvLayer(channels, c1, 9), nn.InstanceNorm2d(c1, affine=True), nn.ReLU(True)
        )
        self.down1 = nn.Sequential(
            _ConvLayer(c1, c2, 3, stride=2), nn.InstanceNorm2d(c2, affine=True), nn.ReLU(True)
        )
        self.down2 = nn.Sequential(
            _ConvLayer(c2, c3, 3, stride=2), nn.InstanceNorm2d(c3, affine=True), nn.ReLU(True)
        )
        self.residuals = nn.Sequential(*(_ResidualBlock(c3) for _ in range(num_residual)))
        self.up1 = _UpsampleConv(c3, c2)
        self.up2 = _UpsampleConv(c2, c1)
        self.head = _ConvLayer(c1, channels, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise a batch of images.

        Args:
            x: ``(N, channels, H, W)`` images in ``[0, 1]``.

        Returns:
            ``(N, channels, H, W)`` stylised images in ``[0, 1]``.
        """
        _check_image_batch(x, self.channels, "TransformerNet")
        if min(x.shape[-2:]) < 5:
            raise ValueError(
                f"TransformerNet needs images of at least 5x5 pixels (9x9 reflection-padded "
                f"convolutions), got {tuple(x.shape[-2:])}"
            )
        full = self.stem(x)
        half = self.down1(full)
        quarter = self.down2(half)
        features = self.residuals(quarter)
        features = self.up1(features, size=tuple(half.shape[-2:]))
        features = self.up2(features, size=tuple(full.shape[-2:]))
        return torch.sigmoid(self.head(features))


class SuperResolutionNet(nn.Module):
    """Super-resolution by x2 or x4 with sub-pixel convolution (pixel shuffle).

    A 3x3 head conv, ``num_residual`` residual blocks (conv-ReLU-conv, no normalisation),
    then one (x2) or two (x4) stages of conv to ``4 * channels`` + ``PixelShuffle(2)`` +
    ReLU, and a 3x3 conv back to image channels. The network predicts a correction that is
    added to the bicubic upscale of the input; the sum is clamped to ``[0, 1]``. The last
    conv starts at zero, so an untrained network already returns the bicubic upscale.

    Args:
        scale: Upscaling factor, 2 or 4.
        channels: Image channels in and out.
        features: Width of the trunk.
        num_residual: Number of residual blocks in the trunk.

    Shape:
        - Input: ``(N, channels, h, w)`` low-resolution images in ``[0, 1]``.
        - Output: ``(N, channels, scale * h, scale * w)`` in ``[0, 1]``.

    Example:
        >>> net = SuperResolutionNet(scale=4, features=8, num_residual=1)
        >>> net(torch.rand(1, 3, 10, 7)).shape
        torch.Size([1, 3, 40, 28])
    """

    def __init__(
        self, scale: int = 2, channels: int = 3, features: int = 64, num_residual: int = 8
    ) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {scale!r}")
        self.config = _checked_config("sr", scale=scale, channels=channels, features=features,
                                      num_residual=num_residual)
        self.scale = scale
        self.channels = channels
        self.head = nn.Conv2d(channels, features, 3, padding=1)
        self.trunk = nn.Sequential(
            *(
                _PlainResidual(features)
                for _ in range(num_residual)
            )
        )
        stages: list[nn.Module] = []
        for _ in range({2: 1, 4: 2}[scale]):
            stages += [
                nn.Conv2d(features, features * 4, 3, padding=1),
                nn.PixelShuffle(2),
                nn.ReLU(inplace=True),
            ]
        self.upsample = nn.Sequential(*stages)
        self.tail = nn.Conv2d(features, channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale a batch of images.

        Args:
            x: ``(N, channels, h, w)`` low-resolution images in ``[0, 1]``.

        Returns:
            ``(N, channels, scale * h, scale * w)`` images in ``[0, 1]``.
        """
        _check_image_batch(x, self.channels, "SuperResolutionNet")
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        features = self.head(x)
        features = features + self.trunk(features)
        correction = self.tail(self.upsample(features))
        return (base + correction).clamp(0.0, 1.0)


class _PlainResidual(nn.Module):
    """conv-ReLU-conv with an identity shortcut (EDSR style, no normalisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


_MODELS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "transformer": TransformerNet,
    "sr": SuperResolutionNet,
}
MODEL_NAMES: tuple[str, ...] = tuple(sorted(_MODELS))


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a network from the ``.config`` dict of another one (as stored in checkpoints).

    Args:
        config: ``{"name": "unet" | "transformer" | "sr", **constructor keyword arguments}``.

    Returns:
        A freshly initialised network with that configuration.

    Raises:
        ValueError: If the name is unknown or an argument does not fit the network.

    Example:
        >>> net = build_model({"name": "sr", "scale": 2, "features": 8, "num_residual": 0})
        >>> type(net).__name__
        'SuperResolutionNet'
    """
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(
            f"a model config must be a dict with a 'name' key (one of {MODEL_NAMES}), "
            f"got {config!r}"
        )
    kwargs = dict(config)
    name = kwargs.pop("name")
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    try:
        return _MODELS[name](**kwargs)
    except TypeError as error:
        raise ValueError(f"model config {config!r} does not fit {name!r}: {error}") from error
