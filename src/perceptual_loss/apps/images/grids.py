"""Pictures side by side: one PNG grid of images with column and row titles and a note."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from perceptual_loss.apps.images.io import image_array

__all__ = ["grid_shape", "save_grid"]


def _cell_image(image: torch.Tensor, where: str) -> np.ndarray:
    """One grid cell as uint8 RGB ``(H, W, 3)``; values are clipped to [0, 1]."""
    array = image_array(image, where, clamp=True)
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
