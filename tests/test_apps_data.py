from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from perceptual_loss.apps.images.degradations import (
    BicubicDownscale,
    GaussianNoise,
    PoissonNoise,
    parse_noise,
)
from perceptual_loss.apps.images.slices import (
    apply_window,
    load_slices,
    parse_window,
    read_raw_grayscale,
)
from perceptual_loss.apps.train.data import (
    RestorationDataset,
    center_crop,
    load_folder,
    load_sample_images,
    make_eval_pairs,
    modcrop,
    random_crop,
    split_holdout,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED_MEDICAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "medical"


def test_sample_images_load_offline_in_both_modes():
    rgb = load_sample_images(["astronaut", "camera"])
    assert [tuple(image.shape) for image in rgb] == [(3, 512, 512), (3, 512, 512)]
    assert all(image.dtype == torch.float32 for image in rgb)
    assert 0 <= rgb[0].min() and rgb[0].max() <= 1
    # camera is grayscale: repeated to RGB, so all channels are equal
    assert torch.equal(rgb[1][0], rgb[1][2])
    gray = load_sample_images(["astronaut"], mode="gray")[0]
    expected = 0.299 * rgb[0][0] + 0.587 * rgb[0][1] + 0.114 * rgb[0][2]
    torch.testing.assert_close(gray[0], expected)
    with pytest.raises(ValueError, match="unknown scikit-image sample 'nope'"):
        load_sample_images(["nope"])
    with pytest.raises(ValueError, match="mode must be"):
        load_sample_images(["astronaut"], mode="cmyk")


def test_random_crop_is_seeded_and_checks_size():
    image = torch.arange(100.0).view(1, 10, 10)
    first = random_crop(image, 4, torch.Generator().manual_seed(3))
    again = random_crop(image, 4, torch.Generator().manual_seed(3))
    assert first.shape == (1, 4, 4) and torch.equal(first, again)
    # a crop is a contiguous window of the image
    top, left = divmod(int(first[0, 0, 0]), 10)
    assert torch.equal(first, image[:, top : top + 4, left : left + 4])
    with pytest.raises(ValueError, match="smaller than the crop size 11"):
        random_crop(image, 11, torch.Generator())


def test_center_crop_and_modcrop():
    image = torch.rand(3, 10, 7)
    assert center_crop(image, 4).shape == (3, 4, 4)
    assert torch.equal(center_crop(image, 4), image[:, 3:7, 1:5])
    assert center_crop(image, 100).shape == (3, 10, 7)
    assert modcrop(image, 4).shape == (3, 8, 4)


def test_gaussian_noise_statistics_and_range():
    flat = torch.full((1, 200, 200), 0.5)
    noisy = GaussianNoise(0.05)(flat, torch.Generator().manual_seed(0))
    assert abs(float((noisy - flat).std()) - 0.05) < 0.003
    assert abs(float((noisy - flat).mean())) < 0.003
    clipped = GaussianNoise(0.5)(torch.ones(1, 50, 50), torch.Generator().manual_seed(0))
    assert clipped.max() <= 1 and clipped.min() >= 0
    with pytest.raises(ValueError, match="25/255"):
        GaussianNoise(25)
    with pytest.raises(ValueError, match="non-negative"):
        GaussianNoise(-0.1)


def test_poisson_noise_variance_follows_the_signal():
    peak = 50.0
    image = torch.full((1, 300, 300), 0.4)
    noisy = PoissonNoise(peak)(image, torch.Generator().manual_seed(0))
    # Poisson(peak * x) / peak has mean x and variance x / peak
    assert abs(float(noisy.mean()) - 0.4) < 0.01
    assert abs(float(noisy.var()) - 0.4 / peak) < 0.001
    with pytest.raises(ValueError, match="positive number of photons"):
        PoissonNoise(0)


def test_bicubic_downscale_matches_torch_and_checks_multiple():
    image = torch.rand(3, 16, 12)
    small = BicubicDownscale(4)(image)
    expected = F.interpolate(image[None], size=(4, 3), mode="bicubic", antialias=True,
                             align_corners=False)[0].clamp(0, 1)
    torch.testing.assert_close(small, expected)
    with pytest.raises(ValueError, match="not a multiple of the scale 4"):
        BicubicDownscale(4)(torch.rand(3, 10, 12))
    with pytest.raises(ValueError, match="integer >= 2"):
        BicubicDownscale(1)


def test_parse_noise_forms_and_errors():
    assert repr(parse_noise("gaussian:0.1")) == "GaussianNoise(sigma=0.1)"
    assert repr(parse_noise("Gaussian:0.02-0.2")) == "GaussianNoise(sigma=0.02..0.2)"
    assert repr(parse_noise("poisson:30")) == "PoissonNoise(peak=30)"
    with pytest.raises(ValueError, match="unknown noise 'salt'"):
        parse_noise("salt:0.1")
    with pytest.raises(ValueError, match="gaussian:SIGMA"):
        parse_noise("gaussian")
    with pytest.raises(ValueError, match="noise 'poisson:x'"):
        parse_noise("poisson:x")


def test_dataset_items_are_reproducible_per_epoch_and_degraded():
    images = [torch.rand(3, 40, 40), torch.rand(3, 50, 30)]
    data = RestorationDataset(images, 16, GaussianNoise(0.1), length=6, seed=1)
    noisy, clean = data[1]
    assert noisy.shape == clean.shape == (3, 16, 16)
    assert not torch.equal(noisy, clean)
    again = RestorationDataset(images, 16, GaussianNoise(0.1), length=6, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(data[1], again[1], strict=True))
    data.set_epoch(1)
    assert not torch.equal(data[1][1], again[1][1])  # a new epoch, new crops
    with pytest.raises(IndexError):
        data[6]


def test_dataset_sr_pairs_and_validation():
    images = [torch.rand(3, 40, 40)]
    low, high = RestorationDataset(images, 16, BicubicDownscale(2), length=2)[0]
    assert low.shape == (3, 8, 8) and high.shape == (3, 16, 16)
    torch.testing.assert_close(low, BicubicDownscale(2)(high))
    with pytest.raises(ValueError, match="multiple of the scale 4"):
        RestorationDataset(images, 18, BicubicDownscale(4), length=2)
    with pytest.raises(ValueError, match="larger than the smallest image side"):
        RestorationDataset(images, 64, None, length=2)
    with pytest.raises(ValueError, match="same number of channels"):
        RestorationDataset([torch.rand(3, 20, 20), torch.rand(1, 20, 20)], 8, None, length=2)
    same_a, same_b = RestorationDataset(images, 8, None, length=1)[0]
    assert torch.equal(same_a, same_b)


def test_eval_pairs_are_fixed_and_modcropped():
    images = [torch.rand(3, 300, 299)]
    first = make_eval_pairs(images, BicubicDownscale(4), max_size=101)
    low, high = first[0]
    assert high.shape == (3, 100, 100) and low.shape == (3, 25, 25)
    noisy_a = make_eval_pairs(images, GaussianNoise(0.1), seed=5)[0][0]
    noisy_b = make_eval_pairs(images, GaussianNoise(0.1), seed=5)[0][0]
    assert torch.equal(noisy_a, noisy_b)


def test_split_holdout():
    images = [torch.zeros(1, 2, 2) + i for i in range(3)]
    train, held, names = split_holdout(images, ["a", "b", "c"], 1)
    assert len(train) == 2 and names == ["c"] and torch.equal(held[0], images[2])
    with pytest.raises(ValueError, match="cannot hold out 3 of 3"):
        split_holdout(images, ["a", "b", "c"], 3)


def test_window_maps_stored_values_to_unit_range():
    raw = np.array([[0.0, 984.0, 1044.0, 1104.0, 3000.0]])
    windowed = apply_window(raw, 984, 1104)
    torch.testing.assert_close(windowed, torch.tensor([[[0.0, 0.0, 0.5, 1.0, 1.0]]]))
    assert parse_window("984, 1104") == (984.0, 1104.0)
    with pytest.raises(ValueError, match="LOW must be below HIGH"):
        parse_window("10,5")
    with pytest.raises(ValueError, match="LOW,HIGH"):
        parse_window("soft tissue")


def test_16bit_slices_keep_their_stored_values(tmp_path):
    values = np.array([[0, 1000, 4095], [2000, 3000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    Image.fromarray((values // 2).astype(np.uint16)).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_raw_grayscale(tmp_path / "a.png"), values)
    images, window = load_slices([tmp_path / "a.png", tmp_path / "b.png"])
    assert window == (0.0, 65535.0)  # one window for the whole set
    torch.testing.assert_close(images[1][0, 0, 1], torch.tensor(500 / 65535))
    images, window = load_slices([tmp_path / "a.png"], window=(1000, 3000))
    torch.testing.assert_close(images[0][0, 1], torch.tensor([0.5, 1.0, 1.0]))
    Image.new("RGB", (4, 4)).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="single-channel"):
        read_raw_grayscale(tmp_path / "colour.png")


@pytest.mark.skipif(not SHARED_MEDICAL.is_dir(), reason="shared/data/medical not present")
def test_real_ct_slice_windowing():
    raw = read_raw_grayscale(SHARED_MEDICAL / "ct_small_128.png")
    assert raw.shape == (128, 128) and raw.min() == 128 and raw.max() == 2191
    # soft-tissue window -160..240 HU; the file stores HU + 1024
    images, window = load_slices([SHARED_MEDICAL / "ct_small_128.png"], (864, 1264))
    fraction_inside = float(((images[0] > 0) & (images[0] < 1)).float().mean())
    assert 0.05 < fraction_inside < 0.95


def test_load_folder(tmp_path):
    Image.fromarray(np.full((6, 5, 3), 255, dtype=np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "a.png")
    images, names = load_folder(tmp_path, mode="rgb")
    assert names == ["a.png", "b.png"]
    assert images[0].shape == (3, 4, 4) and float(images[1].min()) == 1.0
    with pytest.raises(ValueError, match="does not exist"):
        load_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_folder(tmp_path / "empty")
