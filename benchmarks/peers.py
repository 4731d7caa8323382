"""Peer libraries, built with random weights (no downloads), for ``worker.py``.

Run under ``benchmarks/.venv`` only (see ``benchmarks/README.md``): lpips, piq and
DISTS_pytorch import torchvision. The registry build of torchvision 0.28.0 imports on this
CPU-only torch only when ``torchvision._meta_registrations`` is stubbed first, which is done
here and nowhere else. Every ``torchvision.models.vgg16`` call is redirected to random weights:
the peers would otherwise download ImageNet weights, which changes values but not the time.
"""

from __future__ import annotations

import sys
import types

import torch

sys.modules.setdefault("torchvision._meta_registrations",
                       types.ModuleType("torchvision._meta_registrations"))

import torchvision  # noqa: E402
import torchvision.models as tv_models  # noqa: E402

_vgg16 = tv_models.vgg16


def _vgg16_random(*args: object, **kwargs: object) -> torch.nn.Module:
    return _vgg16(weights=None)


tv_models.vgg16 = _vgg16_random

CONTENT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torchvision", "lpips", "piq", "DISTS_pytorch")}


class _Sum(torch.nn.Module):
    def __init__(self, *terms: torch.nn.Module) -> None:
        super().__init__()
        self.terms = torch.nn.ModuleList(terms)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sum(term(x, y) for term in self.terms)


def build(impl: str, style: bool) -> torch.nn.Module:
    """One peer loss, called as ``loss(prediction, target)`` on ``[0, 1]`` images."""
    if impl == "piq":
        import piq
        import piq.perceptual

        piq.perceptual.vgg16 = _vgg16_random
        weights = [1.0] * len(CONTENT_LAYERS)
        content = piq.ContentLoss("vgg16", layers=CONTENT_LAYERS, weights=weights,
                                  distance="mae")
        if not style:
            return content
        style_term = piq.StyleLoss("vgg16", layers=CONTENT_LAYERS, weights=weights,
                                   distance="mae")
        return _Sum(content, style_term)
    if impl == "lpips":
        import lpips

        inner = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)

        class ZeroOne(torch.nn.Module):
            """lpips takes [-1, 1]; map [0, 1] as its ``normalize=True`` does."""

            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return self.inner(x, y, normalize=True).mean()

        return ZeroOne()
    if impl == "dists":
        from DISTS_pytorch import DISTS

        inner = DISTS(load_weights=False)

        class Mean(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return self.inner(x, y, require_grad=torch.is_grad_enabled(), batch_average=True)

        return Mean()
    if impl in ("piq-lpips", "piq-dists"):
        return _piq_learned(impl)
    raise ValueError(f"unknown implementation {impl!r}; peers are piq, lpips, dists, "
                     "piq-lpips, piq-dists")


def _piq_learned(impl: str) -> torch.nn.Module:
    """piq's LPIPS or DISTS, their learned weights replaced by stand-ins of the same shapes.

    Both download their weights when built; the stand-ins change values, not the time.
    """
    import piq
    import piq.perceptual

    piq.perceptual.vgg16 = _vgg16_random
    if impl == "piq-lpips":
        stand_in: object = [torch.rand(1, c, 1, 1) for c in (64, 128, 256, 512, 512)]
    else:
        total = 3 + 64 + 128 + 256 + 512 + 512
        stand_in = {"alpha": torch.rand(1, total, 1, 1) / total,
                    "beta": torch.rand(1, total, 1, 1) / total}
    download = torch.hub.load_state_dict_from_url
    torch.hub.load_state_dict_from_url = lambda *args, **kwargs: stand_in
    try:
        return piq.LPIPS(reduction="mean") if impl == "piq-lpips" else piq.DISTS(reduction="mean")
    finally:
        torch.hub.load_state_dict_from_url = download


__all__ = ["build", "torchvision", "versions"]
