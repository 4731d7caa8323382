"""MONAI's tests/losses/test_perceptual_loss.py, ported to MedicalPerceptualLoss.

MONAI's cases for its own networks (RadImageNet 2D, fake 3D with a 2D network, MedicalNet 3D,
channel-wise) keep their expectations: shape, zero for identical inputs, errors for shape
mismatches and for a 3D network on 2D data. Its LPIPS-network cases (``squeeze``, ``alex``,
``vgg``) belong to the LPIPS metric (tests/test_metrics.py). Sizes are smaller than MONAI's
(32 instead of 64 per side) to stay fast; random weights, no download. Where we differ on
purpose the test says so.
"""

from __future__ import annotations

import pytest
import torch

from perceptual_loss.medical import MedicalPerceptualLoss

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    # (MONAI's options, our loss options, input shape, expected output shape)
    ({"spatial_dims": 2, "network_type": "radimagenet_resnet50"},
     {"network": "radimagenet_resnet50"}, (2, 1, 32, 32), ()),
    ({"spatial_dims": 3, "network_type": "radimagenet_resnet50", "is_fake_3d": True,
      "fake_3d_ratio": 0.1}, {"network": "radimagenet_resnet50", "fake_3d_ratio": 0.1},
     (2, 1, 32, 32, 32), ()),
    ({"spatial_dims": 3, "network_type": "medicalnet_resnet10_23datasets", "is_fake_3d": False},
     {"network": "medicalnet_resnet10_23datasets"}, (2, 1, 16, 16, 16), ()),
    ({"spatial_dims": 3, "network_type": "medicalnet_resnet10_23datasets", "is_fake_3d": False,
      "channel_wise": True},
     {"network": "medicalnet_resnet10_23datasets", "channel_wise": True}, (2, 6, 16, 16, 16),
     (6,)),
]


def _rand(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("monai_options,options,shape,expected", CASES)
def test_shape(monai_options, options, shape, expected):
    loss = MedicalPerceptualLoss(weights=None, **options)
    # MONAI feeds torch.randn to both images. A target outside the declared [0, 1] is refused
    # here (the value rule: data must lie in its range), so the port uses [0, 1] data.
    assert loss(_rand(shape, 0), _rand(shape, 1)).shape == expected
    with pytest.raises(ValueError, match=r"target has values in \[.*input_range"):
        loss(_rand(shape, 0), torch.randn(shape, generator=torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("monai_options,options,shape,expected", CASES)
def test_identical_input(monai_options, options, shape, expected):
    loss = MedicalPerceptualLoss(weights=None, **options)
    x = _rand(shape, 3)
    torch.testing.assert_close(loss(x, x), torch.zeros(expected), rtol=0, atol=1e-6)


def test_different_shape():
    loss = MedicalPerceptualLoss("radimagenet_resnet50", weights=None)
    with pytest.raises(ValueError, match="same shape"):
        loss(_rand((1, 1, 32, 32), 0), _rand((1, 1, 48, 48), 1))


def test_1d():
    # MONAI: spatial_dims=1 is NotImplementedError at construction. Ours has no spatial_dims
    # (the network decides); a 1D input is a ValueError naming the accepted layouts.
    loss = MedicalPerceptualLoss("radimagenet_resnet50", weights=None)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, C, D, H, W\)"):
        loss(_rand((1, 1, 32), 0), _rand((1, 1, 32), 1))


def test_medicalnet_on_2d_data():
    # MONAI: ValueError when a MedicalNet is asked for 2D or fake 3D; ours refuses 2D inputs
    # to a 3D network, and fake_3d_ratio (which only slices for 2D networks).
    loss = MedicalPerceptualLoss("medicalnet_resnet10_23datasets", weights=None)
    with pytest.raises(ValueError, match=r"\(N, C, D, H, W\).*For 2D slices"):
        loss(_rand((1, 1, 32, 32), 0), _rand((1, 1, 32, 32), 1))
    with pytest.raises(ValueError, match="is 3D and sees the whole volume"):
        MedicalPerceptualLoss("medicalnet_resnet10_23datasets", weights=None, fake_3d_ratio=0.5)
