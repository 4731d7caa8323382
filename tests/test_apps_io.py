import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceptual_loss.apps.images.grids import grid_shape, save_grid
from perceptual_loss.apps.images.io import (
    TransparencyWarning,
    list_images,
    load_image,
    save_image,
    warnings_as_lines,
)

SHARED_MEDICAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "medical"


def _rgb_array(height: int = 6, width: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def test_load_8bit_rgb_png_matches_pixels(tmp_path):
    pixels = _rgb_array()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.shape == (3, 6, 5)
    assert image.dtype == torch.float32
    np.testing.assert_allclose(image.numpy(), pixels.transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_load_16bit_gray_png_keeps_precision(tmp_path):
    pixels = np.array([[0, 1, 257], [40000, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "ct.png")
    image = load_image(tmp_path / "ct.png")
    assert image.shape == (1, 2, 3)
    np.testing.assert_allclose(image[0].numpy(), pixels / 65535.0, rtol=0, atol=1e-7)
    # 1/65535 is below 8-bit resolution: the two smallest values must stay distinct
    assert image[0, 0, 1] > image[0, 0, 0]


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _write_png16(path: Path, pixels: np.ndarray, filters: list[int]) -> None:
    """A 16-bit RGB(A) PNG written by hand, row y filtered with filters[y] (PNG spec 9.2)."""
    height, width, channels = pixels.shape
    bpp = 2 * channels
    raw_rows = [pixels[y].astype(">u2").tobytes() for y in range(height)]
    stream = bytearray()
    previous = bytes(width * bpp)
    for y, row in enumerate(raw_rows):
        kind = filters[y % len(filters)]
        stream.append(kind)
        for i, value in enumerate(row):
            left = row[i - bpp] if i >= bpp else 0
            up = previous[i]
            up_left = previous[i - bpp] if i >= bpp else 0
            predicted = [0, left, up, (left + up) // 2, _paeth(left, up, up_left)][kind]
            stream.append((value - predicted) % 256)
        previous = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    color_type = 2 if channels == 3 else 6
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(stream)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.filterwarnings("ignore::perceptual_loss.apps.images.io.TransparencyWarning")
def test_load_16bit_color_png_keeps_precision(tmp_path, channels):
    pixels = np.random.default_rng(1).integers(0, 65536, size=(5, 4, channels), dtype=np.uint16)
    _write_png16(tmp_path / "c16.png", pixels, filters=[0, 1, 2, 3, 4])
    image = load_image(tmp_path / "c16.png")
    assert image.shape == (3, 5, 4)
    expected = pixels[..., :3].transpose(2, 0, 1) / 65535.0
    np.testing.assert_allclose(image.numpy(), expected, rtol=0, atol=1e-7)
    gray = load_image(tmp_path / "c16.png", mode="gray")
    luma = pixels[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 65535.0
    np.testing.assert_allclose(gray[0].numpy(), luma, atol=1e-6)


def test_load_jpeg_is_close_to_source(tmp_path):
    pixels = np.full((16, 16, 3), (200, 100, 50), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=100)
    image = load_image(tmp_path / "a.jpg")
    np.testing.assert_allclose(
        image.mean(dim=(1, 2)).numpy(), np.array([200, 100, 50]) / 255.0, atol=3 / 255
    )


def test_modes_gray_and_rgb(tmp_path):
    pixels = _rgb_array()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    gray = load_image(tmp_path / "a.png", mode="gray")
    expected = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    assert gray.shape == (1, 6, 5)
    np.testing.assert_allclose(gray[0].numpy(), expected, atol=1e-6)

    Image.fromarray(pixels[..., 0]).save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == (1, 6, 5)
    rgb = load_image(tmp_path / "g.png", mode="rgb")
    assert rgb.shape == (3, 6, 5)
    assert torch.equal(rgb[0], rgb[2])
    np.testing.assert_allclose(rgb[1].numpy(), pixels[..., 0] / 255.0, atol=1e-7)


def test_rgba_and_palette_become_rgb(tmp_path):
    pixels = np.dstack([_rgb_array(), np.full((6, 5), 7, dtype=np.uint8)])
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "a.png")
    with pytest.warns(TransparencyWarning, match="all of its pixels are mostly or fully"):
        image = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(image.numpy(), pixels[..., :3].transpose(2, 0, 1) / 255.0)
    Image.fromarray(_rgb_array()).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (3, 6, 5)


def test_transparency_warns_only_when_alpha_hides_pixels(tmp_path):
    alpha = np.full((6, 5), 255, dtype=np.uint8)
    Image.fromarray(np.dstack([_rgb_array(), alpha]), mode="RGBA").save(tmp_path / "opaque.png")
    alpha[:3] = 200  # see-through but mostly visible: not hidden
    alpha[0, :3] = 0  # 3 of 30 pixels fully transparent
    Image.fromarray(np.dstack([_rgb_array(), alpha]), mode="RGBA").save(tmp_path / "holes.png")
    Image.fromarray(np.dstack([_rgb_array()[..., 0], alpha]), mode="LA").save(tmp_path / "la.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image(tmp_path / "opaque.png")
    for name in ("holes.png", "la.png"):
        with pytest.warns(TransparencyWarning) as caught:
            image = load_image(tmp_path / name)
        text = str(caught[0].message)
        assert name in text and "10% of its pixels" in text
        assert "alpha channel is dropped" in text and "\n" not in text
        assert image[:, 0, 0].max() > 0  # the colour underneath is kept, not blacked out
    # a 16-bit RGBA PNG (read by the package's own decoder)
    rgba16 = np.full((2, 3, 4), 40000, dtype=np.uint16)
    rgba16[0, 0, 3] = 0
    _write_png16(tmp_path / "deep.png", rgba16, filters=[0, 0])
    with pytest.warns(TransparencyWarning, match="17% of its pixels"):
        assert load_image(tmp_path / "deep.png").shape == (3, 2, 3)


def test_warnings_as_lines_prints_one_line_per_warning():
    lines = []
    with warnings_as_lines(lines.append):
        warnings.warn("hidden pixels", TransparencyWarning, stacklevel=1)
    assert lines == ["Warning: hidden pixels"]
    with warnings_as_lines(lines.append), pytest.warns(RuntimeWarning):
        warnings.warn("other", RuntimeWarning, stacklevel=1)  # left to Python's own format
    assert lines == ["Warning: hidden pixels"]


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)  # stored 4 high, 8 wide
    pixels[0, 0] = 255  # a white mark in the stored top-left corner
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    loaded = load_image(tmp_path / "phone.jpg")
    assert loaded.shape == (3, 8, 4)  # displayed 8 high, 4 wide
    # rotating 90 degrees clockwise moves the stored top-left corner to the top-right
    assert loaded[:, 0, -1].mean() > 0.5
    assert loaded[:, -1, 0].mean() < 0.2


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(IsADirectoryError, match="folder"):
        load_image(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(tmp_path / "bad.png")
    Image.fromarray(_rgb_array()).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="mode must be"):
        load_image(tmp_path / "a.png", mode="cmyk")


def test_save_and_load_roundtrip_8_and_16_bit(tmp_path):
    rgb = torch.rand(3, 7, 9, generator=torch.Generator().manual_seed(0))
    save_image(rgb, tmp_path / "sub" / "rgb.png")
    assert torch.allclose(load_image(tmp_path / "sub" / "rgb.png"), rgb, atol=0.5 / 255 + 1e-6)
    gray = torch.rand(1, 7, 9, generator=torch.Generator().manual_seed(1))
    save_image(gray, tmp_path / "gray16.png", bit_depth=16)
    with Image.open(tmp_path / "gray16.png") as stored:
        assert stored.mode.startswith("I")
    assert torch.allclose(load_image(tmp_path / "gray16.png"), gray, atol=0.5 / 65535 + 1e-7)


def test_save_errors_and_clamp(tmp_path):
    image = torch.full((3, 4, 4), 1.2)
    with pytest.raises(ValueError, match=r"values in \[1\.2, 1\.2\], expected \[0, 1\]"):
        save_image(image, tmp_path / "a.png")
    save_image(image, tmp_path / "a.png", clamp=True)
    assert load_image(tmp_path / "a.png").min() == 1.0
    with pytest.raises(ValueError, match="cannot tell the image format"):
        save_image(torch.rand(3, 4, 4), tmp_path / "a.xyz")
    with pytest.raises(ValueError, match="shape"):
        save_image(torch.rand(2, 4, 4), tmp_path / "a.png")
    with pytest.raises(ValueError, match="1-channel"):
        save_image(torch.rand(3, 4, 4), tmp_path / "a.png", bit_depth=16)
    with pytest.raises(ValueError, match="NaN"):
        save_image(torch.full((1, 2, 2), float("nan")), tmp_path / "a.png")
    with pytest.raises(TypeError, match="float"):
        save_image(torch.zeros(1, 2, 2, dtype=torch.uint8), tmp_path / "a.png")


def test_list_images_sorted_filtered(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path, recursive=True)] == [
        "a.jpg",
        "b.PNG",
        "sub/d.png",
    ]
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list_images(tmp_path / "nope")
    with pytest.raises(NotADirectoryError, match="expected a folder"):
        list_images(tmp_path / "a.jpg")


def test_save_grid_places_images(tmp_path):
    red = torch.zeros(3, 8, 8)
    red[0] = 1.0
    gray = torch.full((1, 8, 8), 0.5)
    out = save_grid([[red, gray], torch.stack([red])], tmp_path / "grid.png", padding=2)
    with Image.open(out) as grid:
        array = np.asarray(grid.convert("RGB"))
    assert array.shape == (2 * 8 + 3 * 2, 2 * 8 + 3 * 2, 3)
    np.testing.assert_array_equal(array[2 + 4, 2 + 4], [255, 0, 0])  # row 0, column 0
    np.testing.assert_array_equal(array[2 + 4, 12 + 4], [128, 128, 128])  # row 0, column 1
    np.testing.assert_array_equal(array[12 + 4, 12 + 4], [255, 255, 255])  # empty cell


def test_save_grid_labels_and_errors(tmp_path):
    images = [torch.rand(3, 16, 16), torch.rand(3, 16, 16)]
    out = save_grid([images], tmp_path / "g.png", labels=["input", "output"], row_labels=["x"])
    with Image.open(out) as grid:
        assert grid.height > 16 + 8 and grid.width > 2 * 16 + 12  # room for the titles
    with pytest.raises(ValueError, match="2 columns"):
        save_grid([images], tmp_path / "g.png", labels=["only one"])
    with pytest.raises(ValueError, match="at least one image"):
        save_grid([], tmp_path / "g.png")
    with pytest.raises(TypeError, match="sequence of rows"):
        save_grid(torch.rand(2, 3, 4, 4), tmp_path / "g.png")


def test_grid_shape():
    assert grid_shape(1) == (1, 1)
    assert grid_shape(64) == (8, 8)
    assert grid_shape(10) == (3, 4)
    assert grid_shape(10, max_columns=2) == (5, 2)
    with pytest.raises(ValueError, match=">= 1"):
        grid_shape(0)


@pytest.mark.skipif(not SHARED_MEDICAL.is_dir(), reason="shared medical samples not present")
def test_real_16bit_ct_slice():
    path = SHARED_MEDICAL / "ct_small_128.png"
    with Image.open(path) as raw:
        expected = np.asarray(raw, dtype=np.float64)
        scale = 65535.0 if raw.mode.startswith("I") else 255.0
    image = load_image(path)
    assert image.shape[0] == 1
    np.testing.assert_allclose(image[0].numpy(), expected / scale, atol=1e-7)


def test_save_grid_note_is_a_wrapped_band_on_top(tmp_path):
    image = torch.full((3, 20, 30), 0.5)
    plain = save_grid([[image, image]], tmp_path / "plain.png", labels=["a", "b\nsecond line"])
    noted = save_grid([[image, image]], tmp_path / "noted.png", labels=["a", "b\nsecond line"],
                      note="RANDOM WEIGHTS: an untrained network made these pictures")
    with Image.open(plain) as first, Image.open(noted) as second:
        assert first.getpixel((3, 3)) == (255, 255, 255)
        assert second.getpixel((3, 3)) == (253, 226, 226)  # pale red band
        assert second.height > first.height + 2 * 14  # wrapped onto several lines
        # the grid itself is drawn the same below the band
        band = second.height - first.height
        assert np.array_equal(np.asarray(second)[band:, : first.width], np.asarray(first))
