"""Reading and writing images as tensors (pillow, plus an exact 16-bit colour PNG reader).

Images become ``(C, H, W)`` float32 tensors with values in ``[0, 1]``: 8-bit files are divided
by 255, 16-bit files (medical PNG slices) by 65535, so a 16-bit CT slice keeps its precision.
EXIF orientation (phone photos) is applied, so the tensor looks the way viewers show the file.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from perceptual_loss.apps.images.png16 import png_bit_depth_and_color, read_16bit_color_png

__all__ = [
    "IMAGE_SUFFIXES",
    "TransparencyWarning",
    "image_array",
    "list_images",
    "load_image",
    "save_image",
    "to_pil",
    "warnings_as_lines",
]

ImageMode = Literal["auto", "rgb", "gray"]

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
)
_SAVE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_TRANSPARENT_MODES = frozenset({"LA", "RGBA", "PA", "La", "RGBa"})
#: Pixels whose alpha is below this fraction of opaque count as hidden by transparency.
HIDDEN_ALPHA = 0.5


class TransparencyWarning(UserWarning):
    """An image's alpha channel hides part of it, and the alpha channel is dropped."""


def _warn_if_transparent(path: Path, alpha: np.ndarray, opaque: float) -> None:
    """Warn when some pixels are mostly or fully transparent (their colour is used as is)."""
    hidden = float(np.mean(alpha < HIDDEN_ALPHA * opaque)) if alpha.size else 0.0
    if hidden == 0.0:
        return
    share = "all" if hidden == 1.0 else (f"{hidden:.0%}" if hidden >= 0.01 else "under 1%")
    warnings.warn(
        f"{path}: {share} of its pixels are mostly or fully transparent; the alpha channel "
        "is dropped and the colour stored under them is used as it is (often black). "
        "Flatten the image onto the background you mean first to choose what they show",
        TransparencyWarning,
        stacklevel=3,
    )


@contextlib.contextmanager
def warnings_as_lines(
    echo: Callable[[str], None], categories: tuple[type[Warning], ...] = (TransparencyWarning,)
) -> Iterator[None]:
    """Show warnings of ``categories`` as one ``"Warning: ..."`` line each (for the CLI).

    Args:
        echo: Prints one line (e.g. ``lambda text: click.echo(text, err=True)``).
        categories: The warning classes to show this way; others keep Python's format.

    Yields:
        Nothing; the change lasts for the ``with`` block (also in DataLoader workers
        forked inside it).
    """
    original = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        if issubclass(category, categories):
            echo(f"Warning: {message}")
        else:
            original(message, category, filename, lineno, file, line)  # type: ignore[arg-type]

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original



def _as_float_array(image: Image.Image, path: Path) -> np.ndarray:
    """Pixel values of a pillow image as float32 in [0, 1], shape (H, W) or (H, W, C)."""
    mode = image.mode
    if mode in {"I;16", "I;16B", "I;16L", "I;16N"}:
        return np.asarray(image, dtype=np.float32) / 65535.0
    if mode == "I":
        array = np.asarray(image, dtype=np.int64)
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ValueError(
                f"{path}: 32-bit integer image with values in [{low}, {high}]; expected 16-bit "
                "values in [0, 65535]. Convert it to 8- or 16-bit PNG first"
            )
        return (array / 65535.0).astype(np.float32)
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0 or not np.isfinite(array).all():
            raise ValueError(
                f"{path}: floating-point image with values in [{low:.4g}, {high:.4g}]; "
                "expected values in [0, 1]. Rescale it, or save it as 8- or 16-bit PNG"
            )
        return array
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if mode in {"L", "RGB"}:
        return np.asarray(image, dtype=np.float32) / 255.0
    raise ValueError(f"{path}: unsupported pixel mode {mode!r}")  # pragma: no cover


def load_image(path: str | Path, mode: ImageMode = "auto") -> torch.Tensor:
    """Read an image file into a float tensor.

    Args:
        path: An image file (PNG 8/16 bit, JPEG, BMP, TIFF, WebP, ...).
        mode: ``"auto"`` keeps grayscale files 1-channel and makes everything else RGB;
            ``"rgb"`` always gives 3 channels (a gray image is repeated); ``"gray"`` always
            gives 1 channel (colour is converted with the ITU-R 601 luma weights
            0.299 R + 0.587 G + 0.114 B). An alpha channel is dropped: the colour stored
            under transparent pixels is used as it is, with a :class:`TransparencyWarning`
            when some pixels are mostly (alpha below 50%) or fully transparent.

    Returns:
        Tensor ``(C, H, W)``, float32, values in ``[0, 1]``, ``C`` = 1 or 3. EXIF orientation
        is applied.

    Raises:
        FileNotFoundError: When ``path`` does not exist.
        IsADirectoryError: When ``path`` is a folder.
        ValueError: For an unknown ``mode``, a file that is not a readable image, or float
            data outside ``[0, 1]``.
    """
    if mode not in ("auto", "rgb", "gray"):
        raise ValueError(f"mode must be 'auto', 'rgb' or 'gray', got {mode!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"expected an image file, got the folder {path}")
    png_info = png_bit_depth_and_color(path)
    if png_info is not None and png_info[0] == 16 and png_info[1] in (2, 6):
        pixels = read_16bit_color_png(path)
        if pixels.shape[-1] == 4:
            _warn_if_transparent(path, pixels[..., 3], 65535.0)
        array = pixels[..., :3].astype(np.float32) / 65535.0
        if mode == "gray":
            array = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return _to_tensor(array)
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    except Image.UnidentifiedImageError as error:
        raise ValueError(f"not a readable image file: {path}") from error
    except OSError as error:
        raise ValueError(f"cannot read image {path}: {error}") from error

    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _TRANSPARENT_MODES:
        _warn_if_transparent(path, np.asarray(image.getchannel("A")), 255.0)
    if image.mode in {"LA", "La"}:
        image = image.getchannel("L")
    elif image.mode not in _GRAY_MODES and image.mode != "RGB":
        image = image.convert("RGB")  # RGBA, CMYK, YCbCr, LAB, ...
    is_gray = image.mode in _GRAY_MODES

    array = _as_float_array(image, path)
    if mode == "gray" and not is_gray:
        array = array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    elif mode == "rgb" and is_gray:
        array = np.repeat(array[..., None], 3, axis=-1)
    return _to_tensor(array)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) float array -> (C, H, W) float32 tensor, clipped to [0, 1]."""
    if array.ndim == 2:
        array = array[..., None]
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))
    return tensor.clamp_(0.0, 1.0)  # only rounding noise of the luma weights can leave [0, 1]


def image_array(tensor: torch.Tensor, what: str, clamp: bool) -> np.ndarray:
    """Validate an image tensor and return it as float64 ``(H, W)`` or ``(H, W, C)``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    image = tensor.detach()
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"{what} must have shape (C, H, W) with C = 1 or 3 (or (H, W), or (1, C, H, W)), "
            f"got {tuple(tensor.shape)}"
        )
    if not image.is_floating_point():
        raise TypeError(f"{what} must be a float tensor with values in [0, 1], got {image.dtype}")
    image = image.to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(image).all():
        raise ValueError(f"{what} contains NaN or Inf values")
    if clamp:
        image = image.clamp(0.0, 1.0)
    else:
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{what} has values in [{low:.4g}, {high:.4g}], expected [0, 1]; "
                "clamp it first or pass clamp=True"
            )
    array = image.numpy().transpose(1, 2, 0)
    return array[..., 0] if array.shape[-1] == 1 else array


def to_pil(tensor: torch.Tensor, clamp: bool = False) -> Image.Image:
    """Convert a ``(C, H, W)`` tensor in ``[0, 1]`` into an 8-bit pillow image.

    Args:
        tensor: ``(C, H, W)``, ``(H, W)`` or ``(1, C, H, W)``, ``C`` = 1 or 3, float.
        clamp: Clip values to ``[0, 1]`` instead of raising when they leave it.

    Returns:
        A pillow image in mode ``"L"`` (1 channel) or ``"RGB"``.

    Raises:
        ValueError: For a wrong shape, NaN/Inf, or values outside ``[0, 1]`` without ``clamp``.
    """
    array = image_array(tensor, "image", clamp)
    return Image.fromarray(np.round(array * 255.0).astype(np.uint8))


def save_image(
    tensor: torch.Tensor,
    path: str | Path,
    *,
    clamp: bool = False,
    bit_depth: Literal[8, 16] = 8,
) -> Path:
    """Write a tensor as an image file; the format follows the file suffix.

    Args:
        tensor: ``(C, H, W)`` (``C`` = 1 or 3), ``(H, W)`` or ``(1, C, H, W)``, float, values in
            ``[0, 1]``.
        path: Output file (``.png``, ``.jpg``, ``.bmp``, ``.tif``, ``.webp``, ...). Missing
            parent folders are created.
        clamp: Clip values to ``[0, 1]`` (network outputs overshoot) instead of raising.
        bit_depth: 8, or 16 for a 1-channel PNG/TIFF (keeps medical precision).

    Returns:
        The written path.

    Raises:
        ValueError: For an unknown suffix, a wrong shape, NaN/Inf, values outside ``[0, 1]``
            without ``clamp``, or 16 bits asked for a colour image or a format without them.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in _SAVE_SUFFIXES:
        raise ValueError(
            f"cannot tell the image format of {path}: use one of "
            f"{', '.join(sorted(_SAVE_SUFFIXES))}"
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    array = image_array(tensor, "image", clamp)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bit_depth == 16:
        if array.ndim != 2:
            raise ValueError(
                "16-bit output is supported for 1-channel images only; got 3 channels "
                "(save at bit_depth=8, or convert to grayscale)"
            )
        if suffix not in {".png", ".tif", ".tiff"}:
            raise ValueError(f"16-bit output needs .png or .tif, got {suffix!r}")
        Image.fromarray(np.round(array * 65535.0).astype(np.uint16)).save(path)
        return path
    image = Image.fromarray(np.round(array * 255.0).astype(np.uint8))
    if suffix in {".jpg", ".jpeg"}:
        image.save(path, quality=95)
    else:
        image.save(path)
    return path


def list_images(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in a folder, sorted by their path relative to it.

    Args:
        folder: The folder to search.
        recursive: Also search subfolders.

    Returns:
        Paths of files whose suffix is a known image suffix (``.png``, ``.jpg``, ``.jpeg``,
        ``.bmp``, ``.tif``, ``.tiff``, ``.webp``, ``.ppm``, ``.pgm``, ``.gif``; any case).
        Hidden files (starting with ``.``) are skipped. May be empty.

    Raises:
        FileNotFoundError: When ``folder`` does not exist.
        NotADirectoryError: When ``folder`` is a file.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"expected a folder of images, got the file {folder}")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    found = [
        path
        for path in candidates
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


