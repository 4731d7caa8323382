"""Training data: images in memory, random crops, and restoration pairs.

Images are tensors ``(C, H, W)`` of dtype float32 in ``[0, 1]`` held in memory (training
sets for these commands are folders of a few to a few thousand pictures). A
:class:`RestorationDataset` turns them into ``(degraded input, clean target)`` pairs of
random crops; every random draw comes from a generator seeded by ``(seed, epoch, index)``,
so an item is the same whichever process or worker loads it and a resumed run sees the
same data as an uninterrupted one.

Degradations (noise, bicubic downscaling) live in
:mod:`perceptual_loss.apps.images.degradations`; CT/MRI windowing in
:mod:`perceptual_loss.apps.images.slices`.

With no folder of its own a user trains on scikit-image's bundled sample pictures
(:func:`load_sample_images`), which load with no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from perceptual_loss.apps.images.degradations import Degradation
from perceptual_loss.apps.images.io import list_images, load_image

__all__ = [
    "SAMPLE_IMAGES_GRAY",
    "SAMPLE_IMAGES_RGB",
    "RestorationDataset",
    "center_crop",
    "load_folder",
    "load_sample_images",
    "make_eval_pairs",
    "modcrop",
    "random_crop",
    "split_holdout",
]

#: Colour pictures bundled with scikit-image (no network needed to load them).
SAMPLE_IMAGES_RGB: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
)
#: Grayscale pictures bundled with scikit-image.
SAMPLE_IMAGES_GRAY: tuple[str, ...] = ("camera", "brick", "grass", "gravel", "moon")


def _check_image(image: torch.Tensor, name: str = "image") -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (C, H, W), got {type(image).__name__}")
    if image.ndim != 3:
        raise ValueError(
            f"{name} must have shape (C, H, W), got {tuple(image.shape)}"
        )


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, C) array -> float32 (C, H, W) tensor in [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return tensor.to(torch.float32) / 255.0


def load_sample_images(
    names: Sequence[str] | None = None, mode: str = "rgb"
) -> list[torch.Tensor]:
    """Load scikit-image's bundled sample pictures (no network).

    Args:
        names: ``skimage.data`` loader names such as ``"astronaut"``, ``"coffee"``,
            ``"chelsea"``, ``"rocket"``, ``"camera"``; ``None`` loads
            :data:`SAMPLE_IMAGES_RGB` (``mode="rgb"``) or :data:`SAMPLE_IMAGES_GRAY`.
        mode: ``"rgb"`` gives ``(3, H, W)`` (grayscale pictures are repeated),
            ``"gray"`` gives ``(1, H, W)`` (colour pictures are converted with ITU-R 601
            luma weights).

    Returns:
        One float32 tensor in ``[0, 1]`` per name.

    Raises:
        ImportError: If scikit-image is not installed.
        ValueError: If a name is not a bundled sample or ``mode`` is unknown.
    """
    if mode not in ("rgb", "gray"):
        raise ValueError(f"mode must be 'rgb' or 'gray', got {mode!r}")
    try:
        from skimage import data as skimage_data
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the sample pictures come from scikit-image: pip install 'perceptual-loss[cli]'"
        ) from error
    if names is None:
        names = SAMPLE_IMAGES_RGB if mode == "rgb" else SAMPLE_IMAGES_GRAY
    images = []
    for name in names:
        loader = getattr(skimage_data, name, None)
        known = SAMPLE_IMAGES_RGB + SAMPLE_IMAGES_GRAY
        if loader is None or not callable(loader) or name.startswith("_"):
            raise ValueError(f"unknown scikit-image sample {name!r}; try one of {known}")
        array = np.asarray(loader())
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise ValueError(
                f"scikit-image sample {name!r} is not an 8-bit picture "
                f"(dtype {array.dtype}, shape {array.shape}); try one of {known}"
            )
        if array.ndim == 3 and array.shape[2] == 4:
            array = array[:, :, :3]
        image = _to_tensor(array)
        if mode == "rgb" and image.shape[0] == 1:
            image = image.expand(3, -1, -1).clone()
        elif mode == "gray" and image.shape[0] == 3:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
            image = (image * luma).sum(dim=0, keepdim=True)
        images.append(image)
    return images


def load_folder(folder: str | Path, mode: str = "rgb") -> tuple[list[torch.Tensor], list[str]]:
    """Load every picture of a folder (8- or 16-bit PNG, JPEG, ...), sorted by name.

    Args:
        folder: A directory of images.
        mode: ``"rgb"`` for ``(3, H, W)`` or ``"gray"`` for ``(1, H, W)``.

    Returns:
        ``(images, names)``: float32 tensors in ``[0, 1]`` and the file names.

    Raises:
        ValueError: If the folder does not exist or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {str(folder)!r} does not exist or is not a folder")
    paths = list(list_images(folder))
    if not paths:
        raise ValueError(f"no images (png, jpg, ...) in folder {str(folder)!r}")
    return [load_image(path, mode=mode) for path in paths], [Path(p).name for p in paths]


def random_crop(image: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A ``size x size`` crop at a random position.

    Args:
        image: ``(C, H, W)`` with ``H, W >= size``.
        size: Side of the square crop in pixels.
        generator: Source of the position.

    Returns:
        ``(C, size, size)`` view of ``image``.

    Raises:
        ValueError: If the image is smaller than the crop.
    """
    _check_image(image)
    height, width = image.shape[-2:]
    if height < size or width < size:
        raise ValueError(
            f"an image of {height}x{width} pixels is smaller than the crop size {size}; "
            "use a smaller crop size or larger images"
        )
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return image[:, top : top + size, left : left + size]


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` crop, or the whole side where the image is smaller.

    Args:
        image: ``(C, H, W)``.
        size: Largest side of the crop in pixels.

    Returns:
        ``(C, min(H, size), min(W, size))`` view of ``image``.
    """
    _check_image(image)
    height, width = image.shape[-2:]
    crop_h, crop_w = min(height, size), min(width, size)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return image[:, top : top + crop_h, left : left + crop_w]


def modcrop(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Crop bottom/right so that height and width are multiples of ``multiple``.

    Args:
        image: ``(C, H, W)`` with ``H, W >= multiple``.
        multiple: The scale factor of a super-resolution task.

    Returns:
        ``(C, H - H % multiple, W - W % multiple)`` view of ``image``.
    """
    _check_image(image)
    height, width = image.shape[-2:]
    if height < multiple or width < multiple:
        raise ValueError(f"an image of {height}x{width} is smaller than the scale {multiple}")
    return image[:, : height - height % multiple, : width - width % multiple]



def _item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    # Distinct, reproducible stream per (seed, epoch, index), independent of the process.
    mixed = (seed * 1_000_003 + epoch) * 10_000_019 + index
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


class RestorationDataset(Dataset):
    """Random crops of in-memory images as ``(degraded input, clean target)`` pairs.

    The dataset has a fixed virtual length (``length`` crops per epoch); item ``i`` of
    epoch ``e`` is a crop of image ``i % len(images)``, cut and degraded with a generator
    seeded from ``(seed, e, i)``. Call :meth:`set_epoch` at the start of each epoch (the
    training loop does, together with ``DistributedSampler.set_epoch``).

    Args:
        images: ``(C, H, W)`` float tensors in ``[0, 1]``, all with the same ``C``.
        crop_size: Side of the square target crops; a multiple of the scale for
            :class:`~perceptual_loss.apps.images.degradations.BicubicDownscale`.
        degradation: Makes the input from the target crop; ``None`` returns the crop as
            both input and target (style transfer).
        length: Crops per epoch.
        seed: Base seed.

    Example:
        >>> from perceptual_loss.apps.images.degradations import GaussianNoise
        >>> data = RestorationDataset([torch.rand(3, 40, 40)], 16, GaussianNoise(0.1), 4)
        >>> noisy, clean = data[0]
        >>> noisy.shape, clean.shape
        (torch.Size([3, 16, 16]), torch.Size([3, 16, 16]))
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        crop_size: int,
        degradation: Degradation | None,
        length: int,
        seed: int = 0,
    ) -> None:
        if not images:
            raise ValueError("RestorationDataset needs at least one image")
        channels = {int(image.shape[0]) for image in images}
        for image in images:
            _check_image(image)
        if len(channels) != 1:
            raise ValueError(
                f"all images need the same number of channels, got {sorted(channels)}; "
                "load them all as rgb or all as gray"
            )
        if not isinstance(crop_size, int) or crop_size < 1:
            raise ValueError(f"crop_size must be a positive integer, got {crop_size!r}")
        smallest = min(min(image.shape[-2:]) for image in images)
        if smallest < crop_size:
            raise ValueError(
                f"crop size {crop_size} is larger than the smallest image side ({smallest} "
                "pixels); use a smaller crop size"
            )
        scale = getattr(degradation, "scale", None)
        if scale is not None and crop_size % scale:
            raise ValueError(
                f"crop size {crop_size} must be a multiple of the scale {scale} "
                f"(e.g. {crop_size - crop_size % scale or scale})"
            )
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        self.images = list(images)
        self.crop_size = crop_size
        self.degradation = degradation
        self.length = length
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops the following items come from."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        generator = _item_generator(self.seed, self.epoch, index)
        image = self.images[index % len(self.images)]
        target = random_crop(image, self.crop_size, generator).clone()
        if self.degradation is None:
            return target, target.clone()
        return self.degradation(target, generator), target


def make_eval_pairs(
    images: Sequence[torch.Tensor],
    degradation: Degradation | None,
    max_size: int | None = 256,
    seed: int = 1234,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed ``(degraded input, clean target)`` pairs of held-out images for evaluation.

    Args:
        images: ``(C, H, W)`` float tensors in ``[0, 1]``.
        degradation: As for :class:`RestorationDataset`; ``None`` for identity.
        max_size: Central crop to at most this side to keep evaluation fast; ``None``
            keeps the full image.
        seed: Seed of the noise, so every evaluation sees the same inputs.

    Returns:
        One ``(input, target)`` pair per image; targets are cropped to a multiple of the
        degradation's scale where it has one.
    """
    pairs = []
    scale = getattr(degradation, "scale", None)
    for index, image in enumerate(images):
        target = center_crop(image, max_size) if max_size else image
        if scale is not None:
            target = modcrop(target, scale)
        target = target.clone()
        generator = torch.Generator().manual_seed(seed + index)
        degraded = target.clone() if degradation is None else degradation(target, generator)
        pairs.append((degraded, target))
    return pairs


def split_holdout(
    images: Sequence[torch.Tensor], names: Sequence[str], holdout: int
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    """Keep the last ``holdout`` images (in name order) out of training for evaluation.

    Args:
        images: Loaded images.
        names: Their names, same order.
        holdout: How many to hold out; at least one image must stay for training.

    Returns:
        ``(train_images, heldout_images, heldout_names)``.

    Raises:
        ValueError: If nothing would be left to train on.
    """
    if len(images) != len(names):
        raise ValueError(f"{len(images)} images but {len(names)} names")
    if holdout < 0:
        raise ValueError(f"holdout must be >= 0, got {holdout}")
    if holdout >= len(images):
        raise ValueError(
            f"cannot hold out {holdout} of {len(images)} images and still train; "
            "lower the hold-out count or give a separate validation folder"
        )
    cut = len(images) - holdout
    return list(images[:cut]), list(images[cut:]), list(names[cut:])
