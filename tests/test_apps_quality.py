"""PSNR and SSIM of the apps, on images in [0, 1]."""

import pytest
import torch

from perceptual_loss.apps.images.quality import psnr, psnr_from_mse, ssim


def test_psnr_and_ssim():
    target = torch.rand(2, 3, 16, 16)
    noisy = (target + 0.05).clamp(0, 1)
    mse = ((noisy - target) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(psnr(noisy, target), 10 * torch.log10(1 / mse))
    torch.testing.assert_close(ssim(target, target), torch.ones(2))
    assert float(ssim(noisy, target).max()) < 1
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_psnr_from_mse_is_infinite_for_identical_images():
    assert float(psnr_from_mse(torch.tensor(0.0))) == float("inf")
    assert float(psnr_from_mse(0.01)) == pytest.approx(20.0)
    assert float(psnr_from_mse(0.01 * 255**2, data_range=255.0)) == pytest.approx(20.0)
