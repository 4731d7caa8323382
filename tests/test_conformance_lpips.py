"""The lpips package (v0.1.4) and its published scripts, as a reference for LPIPS.

The package's own usage (``lpips.LPIPS(net=...)`` on images in ``[-1, 1]``, ``normalize=True``
for ``[0, 1]``, ``spatial=True`` for maps) is checked against ours on identical random trunks
and the published v0.1 heads; the scripts (``lpips_2imgs.py``) score images at their own size,
as ours does. The package is imported with a torchvision stand-in that returns this package's
AlexNet, VGG16 and SqueezeNet 1.1.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from peer_standins import imported_with_torchvision_standin
from perceptual_loss import LPIPS
from perceptual_loss.backbones import get_backbone
from perceptual_loss.frozen import frozen_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

BACKBONES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


@pytest.fixture(scope="module")
def lpips_package():
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("lpips is not installed (pip install --no-deps lpips==0.1.4)")
    models = {name: (lambda pretrained=False, _name=name, **_: get_backbone(_name).build())
              for name in BACKBONES.values()}
    with imported_with_torchvision_standin("lpips", models) as package:
        yield package


def _reference(lpips_package, net: str, ours: LPIPS, **options):
    """The package's LPIPS with our trunk's weights, its own shipped v0.1 heads."""
    reference = lpips_package.LPIPS(net=net, verbose=False, **options)
    trunk = [t for t in frozen_state_dict(ours).values()
             if t.is_floating_point() and t.ndim > 0]
    theirs = [p for p in reference.net.parameters()]
    assert [tuple(t.shape) for t in trunk] == [tuple(p.shape) for p in theirs]
    with torch.no_grad():
        for mine, their in zip(trunk, theirs, strict=True):
            their.copy_(mine)
    return reference.eval()


def _images(n, size, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen), torch.rand(n, 3, size, size, generator=gen)


@pytest.mark.parametrize("net", ["alex", "vgg", "squeeze"])
def test_values_equal_the_package_in_both_conventions(lpips_package, net):
    ours = LPIPS(net, weights=None)
    reference = _reference(lpips_package, net, ours)
    x, y = _images(2, 64, seed=1)
    expected = reference(x, y, normalize=True).reshape(2)  # [0, 1] inputs
    torch.testing.assert_close(ours(x, y), expected, rtol=1e-4, atol=1e-6)
    minus_one = LPIPS(net, weights=None, input_range=(-1, 1))
    torch.testing.assert_close(minus_one(2 * x - 1, 2 * y - 1),
                               reference(2 * x - 1, 2 * y - 1).reshape(2), rtol=1e-4, atol=1e-6)


def test_spatial_maps_equal_the_package(lpips_package):
    ours = LPIPS("alex", weights=None, spatial=True)
    reference = _reference(lpips_package, "alex", ours, spatial=True)
    x, y = _images(1, 64, seed=2)
    torch.testing.assert_close(ours(x, y), reference(x, y, normalize=True), rtol=1e-4,
                               atol=1e-6)


def test_the_scripts_score_images_at_their_own_size(lpips_package):
    # lpips_2imgs.py: im2tensor(load_image(path)) at the file's size, no resize; ours likewise
    # scores a 300x200 pair at 300x200 (a resize would change the value).
    ours = LPIPS("alex", weights=None)
    reference = _reference(lpips_package, "alex", ours)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 1, 3, 300, 200, generator=gen)
    expected = reference(lpips_package.im2tensor(
        (x[0].permute(1, 2, 0).numpy() * 255).round()),
        lpips_package.im2tensor((y[0].permute(1, 2, 0).numpy() * 255).round()))
    x8, y8 = ((t * 255).round() / 255 for t in (x, y))
    torch.testing.assert_close(ours(x8, y8), expected.reshape(1), rtol=1e-4, atol=1e-6)
