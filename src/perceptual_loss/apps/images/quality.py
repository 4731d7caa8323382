"""Image-quality numbers the apps report: PSNR and SSIM on images in ``[0, 1]``.

Thin wrappers over :func:`perceptual_loss.functional.psnr` and ``ssim`` (pytorch-msssim, one
install hint), so training reports, the comparison command and the demo compute them alike.
"""

from __future__ import annotations

import torch

from perceptual_loss.functional import psnr as _psnr
from perceptual_loss.functional import ssim as _ssim

__all__ = ["SSIM_WINDOW", "psnr", "psnr_from_mse", "ssim"]

SSIM_WINDOW = 11


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for images in ``[0, 1]``, one float32 value per sample.

    Example:
        >>> round(float(psnr(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.1))), 2)
        20.0
    """
    return _psnr(prediction, target).float()


def psnr_from_mse(mse: torch.Tensor | float, data_range: float = 1.0) -> torch.Tensor:
    """``10 * log10(data_range**2 / mse)`` in float64; ``inf`` where ``mse == 0``."""
    mse = torch.as_tensor(mse, dtype=torch.float64)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian window 11, sigma 1.5, ``data_range=1``) per sample, in ``[-1, 1]``.

    Raises:
        ImportError: pytorch-msssim is missing (the message says how to install it).
        ValueError: Images smaller than the 11x11 window.
    """
    return _ssim(prediction.float(), target.float(), win_size=SSIM_WINDOW)
