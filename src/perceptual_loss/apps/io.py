"""Reading and writing images as tensors, and picture grids (pillow only).

Images become ``(C, H, W)`` float32 tensors with values in ``[0, 1]``: 8-bit files are divided
by 255, 16-bit files (medical PNG slices) by 65535, so a 16-bit CT slice keeps its precision.
EXIF orientation (phone photos) is applied, so the tensor looks the way viewers show the file.
"""

from __future__ import annotations

import contextlib
import math
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = [
    "IMAGE_SUFFIXES",
    "TransparencyWarning",
    "grid_shape",
    "list_images",
    "load_image",
    "save_grid",
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


def _png_bit_depth_and_color(path: Path) -> tuple[int, int] | None:
    """Bit depth and colour type from a PNG header, or None for other files."""
    with path.open("rb") as handle:
        header = handle.read(26)
    if len(header) < 26 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        return None
    bit_depth, color_type = struct.unpack(">BB", header[24:26])
    return bit_depth, color_type


def _paeth(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    estimate = left + up - up_left
    distance_left = np.abs(estimate - left)
    distance_up = np.abs(estimate - up)
    distance_up_left = np.abs(estimate - up_left)
    return np.where(
        (distance_left <= distance_up) & (distance_left <= distance_up_left),
        left,
        np.where(distance_up <= distance_up_left, up, up_left),
    )


def _read_16bit_color_png(path: Path) -> np.ndarray:
    """Decode a 16-bit RGB(A) PNG into a uint16 ``(H, W, C)`` array.

    Pillow (and imageio/scikit-image through it) reduce such files to 8 bits, so the PNG
    stream is decoded here: zlib, then the five PNG row filters (PNG spec, section 9).
    """
    import zlib

    data = path.read_bytes()
    position, idat, header = 8, bytearray(), None
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        position += 12 + length
    if header is None:
        raise ValueError(f"not a readable image file: {path} (PNG without IHDR)")
    width, height, _, color_type, _, _, interlace = header
    if interlace:
        raise ValueError(
            f"{path}: interlaced 16-bit colour PNG is not supported; re-save it without "
            "interlacing"
        )
    channels = 3 if color_type == 2 else 4
    bytes_per_pixel = 2 * channels
    stride = width * bytes_per_pixel
    try:
        raw = np.frombuffer(zlib.decompress(bytes(idat)), dtype=np.uint8)
    except zlib.error as error:
        raise ValueError(f"not a readable image file: {path} ({error})") from error
    if raw.size != height * (stride + 1):
        raise ValueError(f"not a readable image file: {path} (truncated image data)")
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int64)
    previous = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int64)
        if kind == 0:
            current = line
        elif kind == 2:
            current = (line + previous) % 256
        elif kind == 1:
            pixels = line.reshape(width, bytes_per_pixel)
            current = (np.cumsum(pixels, axis=0) % 256).reshape(-1)
        elif kind in (3, 4):
            pixels = line.reshape(width, bytes_per_pixel)
            above = previous.reshape(width, bytes_per_pixel)
            result = np.zeros_like(pixels)
            left = np.zeros(bytes_per_pixel, dtype=np.int64)
            up_left = np.zeros(bytes_per_pixel, dtype=np.int64)
            for x in range(width):
                if kind == 3:
                    predicted = (left + above[x]) // 2
                else:
                    predicted = _paeth(left, above[x], up_left)
                result[x] = (pixels[x] + predicted) % 256
                left, up_left = result[x], above[x]
            current = result.reshape(-1)
        else:
            raise ValueError(f"not a readable image file: {path} (bad PNG filter {kind})")
        out[y], previous = current, current
    high, low = out[:, 0::2], out[:, 1::2]
    return (high * 256 + low).astype(np.uint16).reshape(height, width, channels)


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
    png_info = _png_bit_depth_and_color(path)
    if png_info is not None and png_info[0] == 16 and png_info[1] in (2, 6):
        pixels = _read_16bit_color_png(path)
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


def _image_array(tensor: torch.Tensor, what: str, clamp: bool) -> np.ndarray:
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
    array = _image_array(tensor, "image", clamp)
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
    array = _image_array(tensor, "image", clamp)
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


def _cell_image(image: torch.Tensor, where: str) -> np.ndarray:
    """One grid cell as uint8 RGB ``(H, W, 3)``; values are clipped to [0, 1]."""
    array = _image_array(image, where, clamp=True)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return np.round(array * 255.0).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def save_grid(
    rows: Sequence[Sequence[torch.Tensor] | torch.Tensor],
    path: str | Path,
    labels: Sequence[str] | None = None,
    *,
    row_labels: Sequence[str] | None = None,
    padding: int = 4,
    background: int = 255,
    note: str | None = None,
) -> Path:
    """Save images side by side as one PNG (e.g. input / output / target per row).

    Args:
        rows: One entry per row; each a sequence of images ``(C, H, W)`` (``C`` = 1 or 3,
            values in ``[0, 1]``; values outside are clipped, since a grid is a preview) or a
            batch tensor ``(N, C, H, W)``. Rows may have different lengths and images different
            sizes; each cell is as large as the largest image, images are centred.
        path: Output image file (PNG recommended). Parent folders are created.
        labels: Optional column titles, one per column, drawn above the first row (a
            newline in a title starts a second, centred line).
        row_labels: Optional row titles, one per row, drawn left of each row.
        padding: Pixels between cells, ``>= 0``.
        background: Gray level 0-255 of the background.
        note: Optional warning drawn in dark red on a pale red band across the top (e.g.
            that the pictures come from random weights); wrapped to the grid's width.

    Returns:
        The written path.

    Raises:
        ValueError: For no images, label counts that do not match, bad shapes, NaN/Inf.
    """
    if isinstance(rows, torch.Tensor):
        raise TypeError("rows must be a sequence of rows; wrap a single batch as [batch]")
    grid: list[list[torch.Tensor]] = []
    for index, row in enumerate(rows):
        if isinstance(row, torch.Tensor):
            if row.ndim != 4:
                raise ValueError(
                    f"row {index}: a tensor row must be a batch (N, C, H, W), "
                    f"got shape {tuple(row.shape)}"
                )
            grid.append(list(row.unbind(0)))
        else:
            grid.append(list(row))
    columns = max((len(row) for row in grid), default=0)
    if columns == 0:
        raise ValueError("save_grid needs at least one image")
    if labels is not None and len(labels) != columns:
        raise ValueError(f"got {len(labels)} column labels for {columns} columns")
    if row_labels is not None and len(row_labels) != len(grid):
        raise ValueError(f"got {len(row_labels)} row labels for {len(grid)} rows")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")

    cells = [
        [_cell_image(image, f"image at row {r}, column {c}") for c, image in enumerate(row)]
        for r, row in enumerate(grid)
    ]
    cell_h = max(cell.shape[0] for row in cells for cell in row)
    cell_w = max(cell.shape[1] for row in cells for cell in row)
    font_size = int(min(max(10, cell_h // 12), 24))
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_size(text: str, which: ImageFont.ImageFont | ImageFont.FreeTypeFont = font
                  ) -> tuple[int, int]:
        left, top, right, bottom = measure.textbbox((0, 0), text, font=which)
        return right - left, bottom - top

    note_font = _font(max(font_size, 14))

    def note_size(text: str) -> tuple[int, int]:
        return text_size(text, note_font)

    top_band = (max(text_size(t)[1] for t in labels) + 2 * padding + 2) if labels else 0
    left_band = (max(text_size(t)[0] for t in row_labels) + 2 * padding) if row_labels else 0
    width = left_band + columns * cell_w + (columns + 1) * padding
    note_lines = _wrap(note, note_size, max(width - 2 * padding - 8, 1)) if note else []
    if note_lines:
        width = max(width, max(note_size(line)[0] for line in note_lines) + 2 * padding + 8)
    line_h = note_size("Ag")[1] + 4
    note_band = len(note_lines) * line_h + 8 if note_lines else 0
    top_band += note_band
    height = top_band + len(cells) * cell_h + (len(cells) + 1) * padding
    canvas = Image.new("RGB", (width, height), (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    ink = (0, 0, 0) if background >= 128 else (255, 255, 255)
    if note_lines:
        draw.rectangle((0, 0, width - 1, note_band - 1), fill=(253, 226, 226),
                       outline=(198, 40, 40))
        for index, line in enumerate(note_lines):
            draw.text((padding + 4, 4 + index * line_h), line, fill=(150, 20, 20),
                      font=note_font)

    for c, title in enumerate(labels or ()):
        text_w, _ = text_size(title)
        x0 = left_band + padding + c * (cell_w + padding)
        draw.text((x0 + max(0, (cell_w - text_w) // 2), note_band + padding), title, fill=ink,
                  font=font, align="center")
    for r, row in enumerate(cells):
        y0 = top_band + padding + r * (cell_h + padding)
        if row_labels is not None:
            _, text_h = text_size(row_labels[r])
            draw.text((padding, y0 + max(0, (cell_h - text_h) // 2)), row_labels[r], fill=ink,
                      font=font)
        for c, cell in enumerate(row):
            x0 = left_band + padding + c * (cell_w + padding)
            offset_y = (cell_h - cell.shape[0]) // 2
            offset_x = (cell_w - cell.shape[1]) // 2
            canvas.paste(Image.fromarray(cell), (x0 + offset_x, y0 + offset_y))

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _wrap(text: str, text_size: Callable[[str], tuple[int, int]], width: int) -> list[str]:
    """Split ``text`` into lines of at most ``width`` pixels (a longer word gets its own)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if line and text_size(candidate)[0] > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def grid_shape(count: int, max_columns: int | None = None) -> tuple[int, int]:
    """Rows and columns of a near-square grid holding ``count`` cells.

    Args:
        count: Number of cells, ``>= 1``.
        max_columns: Optional upper bound on the number of columns.

    Returns:
        ``(rows, columns)`` with ``rows * columns >= count``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    columns = math.ceil(math.sqrt(count))
    if max_columns is not None:
        columns = max(1, min(columns, max_columns))
    return math.ceil(count / columns), columns
