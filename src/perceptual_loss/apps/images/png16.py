"""16-bit colour PNG files read exactly (pillow reduces them to 8 bits).

Medical and scientific pictures are often stored as 16-bit RGB PNG; pillow (and imageio or
scikit-image through it) give 8 bits of them, so their stream is decoded here: the header, zlib,
then the five PNG row filters (PNG specification, section 9).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

__all__ = ["png_bit_depth_and_color", "read_16bit_color_png"]


def png_bit_depth_and_color(path: Path) -> tuple[int, int] | None:
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


def read_16bit_color_png(path: Path) -> np.ndarray:
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

