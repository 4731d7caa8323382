"""2.5D perceptual loss over 3D volumes, and CT windowing."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perceptual_loss import PerceptualLoss
from perceptual_loss.metrics.lpips import LPIPS
from perceptual_loss.volumes import (
    CT_WINDOWS,
    VolumePerceptualLoss,
    rescale_to_hu,
    volume_perceptual_loss,
    window_ct,
)

MEDICAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "medical"


@pytest.fixture(scope="module")
def loss_2d():
    torch.manual_seed(0)
    return PerceptualLoss("vgg11", layers=("relu1_1", "relu2_1"), weights=None,
                          reduction="none")


@pytest.fixture(scope="module")
def deep_loss_2d():
    """A 2D loss down to relu3_1 of VGG11: planes need at least 4x4 pixels."""
    torch.manual_seed(1)
    return PerceptualLoss("vgg11", layers=("relu1_1", "relu3_1"), weights=None,
                          reduction="none")


def volumes(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    y = (x + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1)
    return x, y


def by_hand(loss_2d, x, y, axes=(2, 3, 4)):
    """Mean over axes of the mean over every slice of the 2D loss, with explicit indexing."""
    per_axis = []
    for axis in axes:
        values = []
        for i in range(x.shape[axis]):
            a, b = x.select(axis, i), y.select(axis, i)  # (N, C, h, w)
            values.append(loss_2d(a, b))
        per_axis.append(torch.stack(values, dim=1).mean(1))
    return torch.stack(per_axis).mean(0)


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------

def test_cubic_volume_equals_slice_by_slice_computation(loss_2d):
    x, y = volumes((2, 1, 8, 8, 8), seed=0)
    loss = VolumePerceptualLoss(loss_2d, reduction="none")
    expected = by_hand(loss_2d, x, y)
    torch.testing.assert_close(loss(x, y), expected)
    value, parts = VolumePerceptualLoss(loss_2d)(x, y, return_parts=True)
    torch.testing.assert_close(value, expected.mean())
    assert list(parts) == ["axis/D", "axis/H", "axis/W"]
    torch.testing.assert_close(torch.stack(list(parts.values())).mean(), value)


def test_anisotropic_volume_and_chosen_axes(loss_2d):
    x, y = volumes((1, 1, 4, 6, 10), seed=1)
    for axes, dims in ((("D",), (2,)), ((-1, "h"), (4, 3)), ((2, 4), (2, 4))):
        loss = VolumePerceptualLoss(loss_2d, axes, reduction="none")
        torch.testing.assert_close(loss(x, y), by_hand(loss_2d, x, y, dims))


def test_identical_volumes_zero_loss_and_finite_gradients(loss_2d):
    x, _ = volumes((1, 1, 6, 6, 6), seed=2)
    x.requires_grad_()
    value = VolumePerceptualLoss(loss_2d)(x, x.detach())
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(x.grad).all()


def test_gradients_reach_every_voxel_of_the_scored_slices(loss_2d):
    x, y = volumes((1, 1, 6, 6, 6), seed=3)
    x.requires_grad_()
    VolumePerceptualLoss(loss_2d, axes=("D",), slice_ratio=0.5, seed=0)(x, y).backward()
    touched = x.grad.abs().sum(dim=(0, 1, 3, 4)) > 0
    assert int(touched.sum()) == 3  # ceil(0.5 * 6) slices along D, the others untouched


def test_max_batch_chunks_give_the_same_value(loss_2d):
    x, y = volumes((2, 1, 5, 6, 7), seed=4)
    whole = VolumePerceptualLoss(loss_2d, reduction="none")(x, y)
    chunked = VolumePerceptualLoss(loss_2d, reduction="none", max_batch=3)(x, y)
    torch.testing.assert_close(chunked, whole)


def test_functional_equals_module(loss_2d):
    x, y = volumes((2, 1, 5, 5, 5), seed=5)
    torch.testing.assert_close(
        volume_perceptual_loss(x, y, loss_2d, slice_ratio=0.4, seed=3, reduction="sum"),
        VolumePerceptualLoss(loss_2d, slice_ratio=0.4, seed=3, reduction="sum")(x, y),
    )


def test_works_with_lpips_as_the_2d_loss():
    metric = LPIPS("squeeze", weights=None)
    x, y = volumes((1, 1, 17, 20, 18), seed=6)
    loss = VolumePerceptualLoss(metric, reduction="none", slice_ratio=0.25, seed=0)
    assert loss.min_slice_size == metric.min_input_size == 17
    value = loss(x, y)
    assert value.shape == (1,) and float(value) > 0


# ---------------------------------------------------------------------------------------------
# Slice ratio and determinism
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("ratio", "count", "keep"),
                         [(1.0, 7, 7), (0.5, 7, 4), (0.25, 8, 2), (0.01, 5, 1), (0.3, 1, 1)])
def test_slice_ratio_rule(loss_2d, ratio, count, keep):
    loss = VolumePerceptualLoss(loss_2d, slice_ratio=ratio, seed=0)
    chosen = loss.select_slices(count)
    assert chosen.numel() == keep == max(1, math.ceil(ratio * count))
    assert torch.equal(chosen, chosen.unique())  # sorted, no repeats
    assert 0 <= int(chosen.min()) and int(chosen.max()) < count


def test_seed_repeats_and_generator_reproduces(loss_2d):
    seeded = VolumePerceptualLoss(loss_2d, slice_ratio=0.3, seed=11)
    assert all(torch.equal(seeded.select_slices(20), seeded.select_slices(20))
               for _ in range(3))
    draws = []
    for _ in range(2):
        loss = VolumePerceptualLoss(loss_2d, slice_ratio=0.3,
                                    generator=torch.Generator().manual_seed(5))
        draws.append([loss.select_slices(20) for _ in range(4)])
    assert all(torch.equal(a, b) for a, b in zip(*draws, strict=True))
    assert not all(torch.equal(draws[0][0], d) for d in draws[0][1:])  # a sequence, not fixed
    x, y = volumes((1, 1, 8, 8, 8), seed=7)
    torch.testing.assert_close(seeded(x, y), seeded(x, y))
    with pytest.raises(ValueError, match="not both"):
        VolumePerceptualLoss(loss_2d, seed=1, generator=torch.Generator())


def test_full_ratio_draws_nothing(loss_2d):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    x, y = volumes((1, 1, 4, 4, 4), seed=8)
    VolumePerceptualLoss(loss_2d)(x, y)
    assert torch.equal(torch.get_rng_state(), before)


# ---------------------------------------------------------------------------------------------
# Thin axes
# ---------------------------------------------------------------------------------------------

def test_thin_axes_are_skipped_with_a_warning(deep_loss_2d):
    assert deep_loss_2d.extractor.min_input_size == 4
    x, y = volumes((2, 1, 3, 12, 10), seed=9)  # D x W and D x H planes are 3 pixels high
    loss = VolumePerceptualLoss(deep_loss_2d, reduction="none")
    with pytest.warns(UserWarning) as record:
        value, parts = loss(x, y, return_parts=True)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert messages[0].startswith("slicing along H gives 3x10 planes, smaller than the 4x4")
    assert messages[1].startswith("slicing along W gives 3x12 planes")
    assert all("skipped" in m for m in messages)
    assert list(parts) == ["axis/D"]
    torch.testing.assert_close(value, by_hand(deep_loss_2d, x, y, (2,)))


def test_single_slice_volume_is_a_2d_loss(deep_loss_2d):
    x, y = volumes((2, 1, 1, 16, 16), seed=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value = VolumePerceptualLoss(deep_loss_2d, reduction="none", slice_ratio=0.5)(x, y)
    torch.testing.assert_close(value, deep_loss_2d(x[:, :, 0], y[:, :, 0]))


def test_thin_axes_error_mode_and_all_thin(deep_loss_2d):
    x, y = volumes((1, 1, 3, 12, 10), seed=11)
    with pytest.raises(ValueError, match="along H gives 3x10 planes"):
        VolumePerceptualLoss(deep_loss_2d, thin_axes="error")(x, y)
    x, y = volumes((1, 1, 3, 3, 3), seed=12)
    with pytest.raises(ValueError, match="no axis of a volume"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        VolumePerceptualLoss(deep_loss_2d)(x, y)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

def test_bad_inputs_and_options(loss_2d):
    x, y = volumes((1, 1, 4, 4, 4), seed=13)
    loss = VolumePerceptualLoss(loss_2d)
    with pytest.raises(ValueError, match=r"\(N, C, D, H, W\)"):
        loss(x[:, :, 0], y[:, :, 0])
    with pytest.raises(ValueError, match="same shape"):
        loss(x, y[..., :3])
    with pytest.raises(TypeError, match="window_ct"):
        loss(x.to(torch.int16), y.to(torch.int16))
    with pytest.raises(ValueError, match="input_range"):  # the 2D loss checks the range
        loss(x * 1000, y)
    with pytest.raises(ValueError, match="unknown axis"):
        VolumePerceptualLoss(loss_2d, axes=("T",))
    with pytest.raises(ValueError, match="twice"):
        VolumePerceptualLoss(loss_2d, axes=("D", 2))
    with pytest.raises(ValueError, match="slice_ratio"):
        VolumePerceptualLoss(loss_2d, slice_ratio=0)
    with pytest.raises(ValueError, match="thin_axes"):
        VolumePerceptualLoss(loss_2d, thin_axes="pad")
    scalar_loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=None)
    with pytest.raises(ValueError, match="reduction='none'"):
        VolumePerceptualLoss(scalar_loss)(x, y)


# ---------------------------------------------------------------------------------------------
# CT windowing
# ---------------------------------------------------------------------------------------------

def test_window_ct_maps_the_window_linearly_and_clips():
    hu = torch.tensor([-2000.0, -160.0, 40.0, 140.0, 240.0, 3000.0])
    torch.testing.assert_close(window_ct(hu, "soft_tissue"),
                               torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))
    torch.testing.assert_close(window_ct(hu, (40, 400), output_range=(-1, 1)),
                               torch.tensor([-1.0, -1.0, 0.0, 0.5, 1.0, 1.0]))
    level, width = CT_WINDOWS["lung"]
    assert float(window_ct(torch.tensor([level]), "lung")) == pytest.approx(0.5)
    assert window_ct(torch.tensor([0, 100], dtype=torch.int16), "brain").dtype == torch.float32
    with pytest.raises(ValueError, match="unknown CT window"):
        window_ct(hu, "abdomen-ish")
    with pytest.raises(ValueError, match="width must be positive"):
        window_ct(hu, (40, 0))
    with pytest.raises(TypeError, match="torch.from_numpy"):
        window_ct(hu.numpy(), "brain")


def test_rescale_to_hu():
    stored = torch.tensor([0, 1024, 2048], dtype=torch.int32)
    torch.testing.assert_close(rescale_to_hu(stored), torch.tensor([-1024.0, 0.0, 1024.0]))
    torch.testing.assert_close(rescale_to_hu(stored, slope=0.5, intercept=-10),
                               torch.tensor([-10.0, 502.0, 1014.0]))


# ---------------------------------------------------------------------------------------------
# Real CT and MR slices, stacked into small volumes
# ---------------------------------------------------------------------------------------------

def _read_png16(name):
    path = MEDICAL / name
    if not path.is_file():
        pytest.skip(f"shared medical data not found at {path}")
    from PIL import Image

    with Image.open(path) as image:
        array = np.asarray(image, dtype=np.int32)
    return torch.from_numpy(array.astype(np.float32))


def _stack(image, depth, size):
    """A small volume from one slice: ``depth`` crops shifted by one pixel each, resized."""
    crops = [image[d:image.shape[0] - depth + d, d:image.shape[1] - depth + d]
             for d in range(depth)]
    volume = torch.stack(crops)[None, None]  # (1, 1, D, h, w)
    return F.interpolate(volume, size=(depth, size, size), mode="trilinear",
                         align_corners=False)


def test_ct_volume_in_hounsfield_units(loss_2d):
    stored = _read_png16("ct_small_128.png")
    hu = rescale_to_hu(stored)  # the PNG stores HU + 1024
    assert float(hu.min()) == -896.0 and float(hu.max()) == 1167.0
    volume = window_ct(_stack(hu, depth=6, size=32), "soft_tissue")
    assert volume.shape == (1, 1, 6, 32, 32)
    assert 0.0 <= float(volume.min()) and float(volume.max()) <= 1.0
    gen = torch.Generator().manual_seed(14)
    noise = torch.randn(volume.shape, generator=gen)
    slightly = window_ct(_stack(hu, 6, 32) + 10 * noise, "soft_tissue")
    heavily = window_ct(_stack(hu, 6, 32) + 80 * noise, "soft_tissue").requires_grad_()
    loss = VolumePerceptualLoss(loss_2d)
    low, high = loss(slightly, volume), loss(heavily, volume)
    assert 0 < low.item() < high.detach().item()
    high.backward()
    assert torch.isfinite(heavily.grad).all()


def test_mr_volume_thin_and_cubic(deep_loss_2d):
    stored = _read_png16("mr_small_64.png")
    image = stored / stored.max()  # MR has no physical unit: scale to [0, 1]
    cubic = _stack(image, depth=16, size=16)
    thin = _stack(image, depth=2, size=24)
    gen = torch.Generator().manual_seed(15)
    for volume in (cubic, thin):
        blurred = F.avg_pool3d(volume, (1, 3, 3), stride=1, padding=(0, 1, 1),
                               count_include_pad=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value, parts = VolumePerceptualLoss(deep_loss_2d, slice_ratio=0.5,
                                                generator=gen)(blurred, volume,
                                                               return_parts=True)
        assert torch.isfinite(value) and float(value) > 0
        if volume is thin:
            assert list(parts) == ["axis/D"] and len(caught) == 2
        else:
            assert list(parts) == ["axis/D", "axis/H", "axis/W"] and not caught


def test_bfloat16_autocast_with_lpips_planes():
    torch.manual_seed(2)
    loss = VolumePerceptualLoss(LPIPS("squeeze", weights=None), axes=("D", "W"), seed=0,
                                slice_ratio=0.5)
    x, y = volumes((1, 1, 18, 18, 17), seed=16)
    reference = loss(x, y)
    x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(x, y)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, reference, rtol=5e-2, atol=1e-4)
    value.backward()
    assert torch.isfinite(x.grad).all()
