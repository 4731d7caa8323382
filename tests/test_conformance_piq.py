"""piq v0.8.0's tests/test_perceptual.py (ContentLoss, StyleLoss), ported to PerceptualLoss.

Each piq test is kept with its inputs and expectation where our loss does the same thing;
where we differ on purpose, the test asserts our documented behaviour and says why. The values
are compared with piq itself on one random VGG16 trunk: ours equals piq divided by the exact
factors docs/backbones.md states (content: C per layer; style: (C*H*W)^2 with MSE).
piq is imported with a torchvision stand-in whose ``vgg16`` is this package's VGG16.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from peer_standins import imported_with_torchvision_standin
from perceptual_loss import PerceptualLoss
from perceptual_loss.backbones import get_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    """One random VGG16 trunk as a file, and its state."""
    torch.manual_seed(0)
    state = get_backbone("vgg16").build_features().state_dict()
    path = tmp_path_factory.mktemp("piq") / "vgg16.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def piq(trunk):
    if importlib.util.find_spec("piq") is None:
        pytest.skip("piq is not installed (pip install --no-deps piq==0.8.0)")
    _, state = trunk

    def vgg16(pretrained=False, progress=False, **_):
        model = get_backbone("vgg16").build()
        model.features.load_state_dict(state)
        return model

    with imported_with_torchvision_standin("piq", {"vgg16": vgg16}) as package:
        yield package


def _inputs(seed: int = 0, size: int = 48):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=gen), torch.rand(2, 3, size, size, generator=gen)


# --------------------------------------------------------------------- values against piq
@pytest.mark.parametrize("distance,criterion", [("mse", "mse"), ("mae", "l1")])
def test_content_loss_is_piqs_divided_by_the_channels(piq, trunk, distance, criterion):
    path, _ = trunk
    layers = ("relu1_2", "relu2_2", "relu3_3")
    x, y = _inputs(1)
    theirs = piq.ContentLoss(layers=layers, weights=[1.0, 1.0, 1.0], distance=distance,
                             reduction="none")(x, y)
    ours = PerceptualLoss("vgg16", layers=layers, weights=path, criterion=criterion,
                          reduction="none", layer_weights=(64, 128, 256))(x, y)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=0)


@pytest.mark.parametrize("distance,criterion,power", [("mse", "mse", 2), ("mae", "l1", 1)])
def test_style_loss_is_piqs_divided_by_c_h_w_squared(piq, trunk, distance, criterion, power):
    path, _ = trunk
    x, y = _inputs(2, size=32)
    theirs = piq.StyleLoss(layers=("relu2_2",), weights=[1.0], distance=distance,
                           reduction="none")(x, y)
    c, h, w = 128, 16, 16  # relu2_2 of a 32x32 image
    ours = PerceptualLoss("vgg16", layers=("relu2_2",), weights=path, feature_weight=0.0,
                          style_layers=("relu2_2",), style_criterion=criterion,
                          reduction="none")(x, y)
    torch.testing.assert_close(ours * (c * h * w) ** power, theirs, rtol=1e-4, atol=0)


# ------------------------------------------------------------------- piq's tests, ported
def test_content_loss_forward_and_computes_grad(trunk):
    x, y = _inputs(3)
    x.requires_grad_()
    PerceptualLoss("vgg16", layers=("relu3_3",), weights=trunk[0])(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_style_loss_forward_and_computes_grad(trunk):
    x, y = _inputs(4)
    x.requires_grad_()
    loss = PerceptualLoss("vgg16", layers=("relu3_3",), weights=trunk[0], feature_weight=0.0,
                          style_layers=("relu3_3",))
    loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("style", [False, True])
def test_reductions_and_wrong_reductions(trunk, style):
    x, y = _inputs(5, size=32)
    options = {"style_layers": ("relu3_3",), "feature_weight": 0.0} if style else {}
    for mode, shape in (("mean", ()), ("sum", ()), ("none", (2,))):
        loss = PerceptualLoss("vgg16", layers=("relu3_3",), weights=trunk[0], reduction=mode,
                              **options)
        assert loss(x, y).shape == shape
    for mode in (None, "n", 2):
        # piq raises ValueError at the call; ours refuses the option when the loss is built.
        with pytest.raises(ValueError, match="reduction must be"):
            PerceptualLoss("vgg16", layers=("relu3_3",), weights=None, reduction=mode)


def test_unknown_extractor_and_replaced_pooling():
    # piq: ContentLoss(feature_extractor="random_encoder") raises ValueError; so does ours.
    with pytest.raises(ValueError, match="random_encoder"):
        PerceptualLoss("random_encoder", weights=None)
    # piq's replace_pooling=True: max pooling to average pooling; ours is pooling="avg".
    x, y = _inputs(6, size=32)
    loss = PerceptualLoss("vgg16", layers=("relu3_3",), weights=None, pooling="avg")
    assert torch.isfinite(loss(x, y))


@pytest.mark.parametrize("fill", [torch.zeros, torch.ones])
def test_identical_constant_images_give_zero(fill):
    x = fill(2, 3, 96, 96)
    for options in ({}, {"style_layers": ("relu3_3",)}):
        value = PerceptualLoss("vgg16", layers=("relu3_3",), weights=None, **options)(x, x)
        assert float(value) == 0.0


def test_special_inputs_are_refused_with_our_messages():
    loss = PerceptualLoss("vgg16", layers=("relu3_3",), weights=None)
    # piq: a 5D tensor is an AssertionError; ours a ValueError naming the layout.
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        loss(torch.rand(2, 3, 96, 96, 2), torch.rand(2, 3, 96, 96, 2))
    # piq accepts randn (no range check); ours refuses data outside the declared [0, 1]
    # (the value rule: a target is data; a prediction is judged only while it records a
    # gradient), and says which input_range would fit.
    with pytest.raises(ValueError, match=r"has values in \[.*input_range=\(0, 1\)"):
        loss(torch.randn(2, 3, 96, 96), torch.randn(2, 3, 96, 96))
    # piq: a 28x28 image fails inside the network (RuntimeError); ours accepts any size the
    # layers reach (relu3_3 needs 4x4) and refuses smaller ones before running the trunk.
    assert torch.isfinite(loss(torch.rand(2, 3, 28, 28), torch.rand(2, 3, 28, 28)))
    with pytest.raises(ValueError, match="too small for layer 'relu3_3'"):
        loss(torch.rand(2, 3, 3, 3), torch.rand(2, 3, 3, 3))


def test_layers_and_weights_of_different_lengths_are_refused():
    # piq: AssertionError unless allow_layers_weights_mismatch; ours: a ValueError always
    # (a silently dropped or padded weight is the bug piq's flag lets through).
    for layers, weights in ((("relu1_2",), (0.5, 0.5)), (("relu1_2", "relu2_2"), (0.5,)),
                            (("relu1_2",), ())):
        with pytest.raises(ValueError, match="layer_weights"):
            PerceptualLoss("vgg16", layers=layers, layer_weights=weights, weights=None)
