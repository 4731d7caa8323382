"""The value rule: data must lie in the declared range, a network's output may overshoot.

A network whose last layer is linear (EDSR, ESRGAN, RED-CNN, most U-Nets) overshoots [0, 1]
while it learns; a training step must never die of it. Data in another convention (0..255,
[-1, 1] declared as (0, 1)) is still refused, and so is NaN/Inf anywhere.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perceptual_loss import (
    DISTS,
    LPIPS,
    MedicalPerceptualLoss,
    OutOfRangeWarning,
    PerceptualLoss,
    VolumePerceptualLoss,
    perceptual_loss,
)
from perceptual_loss._checks import RANGE_MARGIN, range_verdict, value_role

TINY = {"backbone": "vgg11", "layers": ("relu1_1", "relu2_1"), "weights": None}


def _images(n: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def lpips_alex() -> LPIPS:
    return LPIPS("alex", weights=None)


@pytest.fixture(scope="module")
def dists() -> DISTS:
    return DISTS(weights=None)


# ---------------------------------------------------------------------- the rule itself
@pytest.mark.parametrize(("role", "low", "high", "refused", "warned"), [
    ("data", -0.3, 1.3, False, False),               # bicubic overshoot of real photos
    ("data", -0.01, 1.002, False, False),
    ("data", -1.0, 1.0, True, False),                # [-1, 1] data declared as (0, 1)
    ("data", 0.0, 255.0, True, False),               # 0..255 data
    ("output", -0.01, 1.002, False, False),          # a metric scores an overshooting output
    ("output", -0.45, 1.45, False, False),
    ("output", -1.0, 1.0, True, False),              # another convention: refused in a metric
    ("training output", -0.45, 1.45, False, False),  # a training step: never refused
    ("training output", 0.0, 255.0, False, True),    # ... only warned about
    ("training output", -1.0, 1.0, False, True),
])
def test_the_rule_refuses_data_mistakes_and_lets_outputs_overshoot(role, low, high, refused,
                                                                   warned):
    error, warning = range_verdict("x", role, low, high, (0.0, 1.0))
    assert (error is not None) == refused
    assert (warning is not None) == warned


@pytest.mark.parametrize("role", ["data", "output", "training output"])
def test_nan_and_inf_are_refused_in_every_role(role):
    assert "NaN" in range_verdict("x", role, float("nan"), 1.0, (0.0, 1.0))[0]
    assert "Inf" in range_verdict("x", role, 0.0, float("inf"), (0.0, 1.0))[0]


def test_the_margin_scales_with_the_declared_span():
    edge = 255 * (1 + RANGE_MARGIN) - 1
    assert range_verdict("t", "data", 0.0, edge, (0.0, 255.0)) == (None, None)
    assert range_verdict("t", "data", 0.0, edge + 2, (0.0, 255.0))[0] is not None
    far = 1 + 2 * RANGE_MARGIN + 0.01  # (-1, 1) has a span of 2
    assert range_verdict("p", "output", -1.0, far, (-1.0, 1.0))[0] is not None
    assert range_verdict("p", "output", -1.0, far - 0.02, (-1.0, 1.0))[0] is None


def test_the_role_follows_autograd():
    x = torch.zeros(1, 3, 4, 4)
    assert value_role(x) == "data"
    assert value_role(x, prediction=True) == "output"
    recorded = x.clone().requires_grad_()
    assert value_role(recorded, prediction=True) == "training output"
    with torch.no_grad():
        assert value_role(recorded, prediction=True) == "output"


def test_bicubic_resampled_data_is_accepted():
    """A hard square, bicubic down and up again (torch's kernel), overshoots [0, 1] by 0.44."""
    edge = torch.zeros(1, 3, 32, 32)
    edge[..., 8:24, 8:24] = 1.0
    down = F.interpolate(edge, scale_factor=0.5, mode="bicubic")
    up = F.interpolate(down, scale_factor=2, mode="bicubic")
    assert up.min() < -0.2 and up.max() > 1.4  # it really overshoots
    loss_fn = PerceptualLoss(**TINY)
    assert torch.isfinite(loss_fn(_images(1, 32), up))


# ---------------------------------------------------------------------- training steps
class LinearHead(nn.Module):
    """A tiny restoration network whose last layer is linear and starts past 1."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 3, 3, padding=1))
        with torch.no_grad():
            self.body[2].weight.mul_(0.1)
            self.body[2].bias.fill_(0.12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.9 * x + self.body(x)  # about [0.1, 1.03] at the start


def _train(loss_fn, steps: int = 30, size: int = 32) -> tuple[list[float], float, float]:
    """Train LinearHead for ``steps``; return the losses and the outputs' min and max."""
    torch.manual_seed(0)
    model = LinearHead()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    target = _images(2, size, seed=1)
    losses, low, high = [], float("inf"), -float("inf")
    for _ in range(steps):
        prediction = model(target)
        low, high = min(low, prediction.min().item()), max(high, prediction.max().item())
        loss = loss_fn(prediction, target)
        loss = loss.mean() if loss.ndim else loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, low, high


@pytest.mark.parametrize("make_loss", [
    pytest.param(lambda: PerceptualLoss(weights=None), id="default-loss"),
    pytest.param(lambda: PerceptualLoss(**TINY, pixel_mse=1.0, style_layers=("relu1_1",),
                                        tv_weight=0.1), id="pixel-style-tv"),
    pytest.param(lambda: PerceptualLoss(layers=(), weights=None, pixel_l1=1.0),
                 id="pixel-only"),
    pytest.param(lambda: LPIPS("alex", weights=None, reduction="mean"), id="lpips"),
    pytest.param(lambda: DISTS(weights=None, reduction="mean"), id="dists"),
])
def test_a_linear_output_network_trains_while_its_outputs_leave_the_range(make_loss):
    losses, low, high = _train(make_loss())
    assert low < 0.0 or high > 1.0  # the outputs really left [0, 1]
    assert high > 1.0
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


def test_the_functional_form_trains_on_an_overshooting_prediction():
    prediction = (_images() * 1.2 - 0.1).requires_grad_()
    loss = perceptual_loss(prediction, _images(seed=1), **TINY)
    loss.backward()
    assert torch.isfinite(prediction.grad).all()


def test_an_overshooting_prediction_keeps_its_gradient():
    """Unlike a clamp, the loss still pulls pixels past 1 back towards the target."""
    target = _images(1, 16)
    prediction = (target + 0.2).requires_grad_()
    PerceptualLoss(layers=(), weights=None, pixel_mse=1.0)(prediction, target).backward()
    above = prediction.detach() > 1.0
    assert above.any() and (prediction.grad[above] > 0).all()


# ---------------------------------------------------------------------- data mistakes
@pytest.mark.parametrize("convention", ["0..255", "-1..1"])
@pytest.mark.parametrize("front_end", ["loss", "pixel-only", "functional", "lpips", "dists",
                                       "medical"])
def test_targets_in_another_convention_are_refused_naming_the_fix(front_end, convention,
                                                                  lpips_alex, dists):
    clean = _images(2, 32)
    clean[0, 0, 0, 0], clean[0, 0, 0, 1] = 0.0, 1.0
    target = clean * 255 if convention == "0..255" else clean * 2 - 1
    prediction = _images(2, 32, seed=3).requires_grad_()
    call = {
        "loss": lambda: PerceptualLoss(**TINY)(prediction, target),
        "pixel-only": lambda: PerceptualLoss(layers=(), weights=None, pixel_mse=1.0)(
            prediction, target),
        "functional": lambda: perceptual_loss(prediction, target, **TINY),
        "lpips": lambda: lpips_alex(prediction, target),
        "dists": lambda: dists(prediction, target),
        "medical": lambda: MedicalPerceptualLoss("resnet50", weights=None)(prediction,
                                                                             target),
    }[front_end]
    shown = "255" if convention == "0..255" else "-1, 1"
    with pytest.raises(ValueError, match=(
            rf"^target has values in \[.*{shown}\] but input_range=\(0, 1\) was declared, more "
            r"than 0\.5 of its span outside it: the data look like another convention\. "
            r"Declare the range your data use \(e\.g\. input_range=\(-1, 1\) or \(0, 255\)\)")):
        call()


def test_a_volume_loss_trains_on_overshooting_predictions_and_refuses_bad_targets():
    loss_3d = VolumePerceptualLoss(PerceptualLoss(**TINY, reduction="none"))
    target = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    prediction = (target * 1.3 - 0.15).requires_grad_()
    loss_3d(prediction, target).backward()
    assert torch.isfinite(prediction.grad).all()
    with pytest.raises(ValueError, match=r"target has values in \[0.*, 255\]"):
        loss_3d(prediction, target * 255)


# ---------------------------------------------------------------------- metric use
def test_a_metric_scores_an_output_that_overshoots_slightly(lpips_alex, dists):
    target = _images(2, 32)
    output = (target * 1.004 - 0.002)  # [-0.002, 1.002]
    with torch.no_grad():
        assert torch.isfinite(lpips_alex(output, target)).all()
        assert torch.isfinite(dists(output, target)).all()
        assert torch.isfinite(PerceptualLoss(**TINY)(output, target))


def test_a_metric_refuses_an_output_in_another_convention(lpips_alex):
    target = _images(2, 32)
    target[0, 0, 0, 0], target[0, 0, 0, 1] = 0.0, 1.0
    with torch.no_grad(), pytest.raises(ValueError, match=(
            r"prediction has values in \[-1, 1\] but input_range=\(0, 1\) was declared, more "
            r"than 0\.5 of its span outside it: the images look like another convention.*"
            r"input_range=\(-1, 1\)")):
        lpips_alex(target * 2 - 1, target)


# ---------------------------------------------------------------------- the warning
def test_a_training_output_in_another_convention_warns_once():
    loss_fn = PerceptualLoss(**TINY)
    target = _images()
    prediction = (target * 255).requires_grad_()
    with pytest.warns(OutOfRangeWarning, match=r"prediction has values in \[.*255\].*given once"):
        loss_fn(prediction, target).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        loss_fn(prediction, target)
        loss_fn.set_target(target)
        loss_fn(prediction)


def test_no_warning_for_an_ordinary_overshoot():
    prediction = (_images() * 1.4 - 0.2).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        PerceptualLoss(**TINY)(prediction, _images(seed=1)).backward()


def test_nan_in_a_training_prediction_is_still_refused():
    prediction = _images().requires_grad_()
    broken = prediction * torch.tensor(float("nan"))
    with pytest.raises(ValueError, match="prediction contains NaN"):
        PerceptualLoss(**TINY)(broken, _images(seed=1))
