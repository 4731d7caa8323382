"""Property-based: every draw of options and inputs ends in a finite value or a clear error.

For ``PerceptualLoss``, ``LPIPS`` and the functional form, hypothesis draws options (valid and
not: negative, NaN and infinite weights, reversed ranges, unknown names, odd sizes) and inputs
(shapes, channels, dtypes, values out of range, NaN). The property: either a finite value with
a finite gradient, or a ``ValueError``/``TypeError`` whose message names the problem; never
NaN, never another exception type.
"""

from __future__ import annotations

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from perceptual_loss import LPIPS, PerceptualLoss, perceptual_loss  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

# Valid options, with at most one broken on purpose per draw, so that most draws reach the
# computation and every kind of bad option is still tried.
BROKEN = {
    "feature_weight": [-1.0, float("nan"), float("inf")],
    "pixel_mse": [-0.5, float("nan")],
    "tv_weight": [float("inf")],
    "input_range": [(1, 0), (0, float("inf")), (3, 3)],
    "layers": [("relu9_9",), "relu1_1,relu2_1"],
    "criterion": ["l3"],
    "reduction": ["avg"],
    "chunk_size": [0, -2],
}
ranges = st.sampled_from([(0, 1), (0, 1), (-1, 1), (0, 255)])
layer_names = st.lists(st.sampled_from(["relu1_1", "conv1_1", "pool1", "relu2_1",
                                        "block1_conv1"]), max_size=3)


@st.composite
def loss_options(draw):
    """PerceptualLoss options: valid ones, then at most one replaced by a broken value."""
    options = {
        "layers": draw(layer_names), "style_layers": draw(layer_names),
        "feature_weight": draw(st.floats(0, 10)), "pixel_mse": draw(st.floats(0, 10)),
        "tv_weight": draw(st.floats(0, 1)), "input_range": draw(ranges),
        "criterion": draw(st.sampled_from(["l1", "mse", "charbonnier"])),
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "chunk_size": draw(st.sampled_from([None, 1])),
    }
    broken = draw(st.sampled_from([None] * len(BROKEN) + list(BROKEN)))
    if broken is not None:
        options[broken] = draw(st.sampled_from(BROKEN[broken]))
    return options


@st.composite
def images(draw):
    """An input pair: valid shapes and values, with at most one thing broken on purpose."""
    n, c = draw(st.integers(1, 2)), draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(16, 40)), draw(st.integers(16, 40))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 1000)))
    x = torch.rand(n, c, h, w, generator=generator, dtype=torch.float64)
    y = torch.rand(n, c, h, w, generator=generator, dtype=torch.float64)
    broken = draw(st.sampled_from([None] * 8 + ["nan", "inf", "range", "channels", "integer",
                                                 "size", "tiny", "shape"]))
    if broken == "nan":
        x[0, 0, 0, 0] = float("nan")
    elif broken == "inf":
        y[-1, -1, -1, -1] = float("inf")
    elif broken == "range":
        x = x * 255
    elif broken == "channels":
        x, y = x.repeat(1, 4, 1, 1)[:, :4], y.repeat(1, 4, 1, 1)[:, :4]
    elif broken == "size":
        y = y[..., 1:, :]
    elif broken == "tiny":
        x, y = x[..., :1, :3], y[..., :1, :3]
    elif broken == "shape":
        x, y = x[0], y[0]
    if broken == "integer":
        return (x * 255).long(), (y * 255).long()
    return x.to(dtype), y.to(dtype)


def _check(compute, x, y):
    """The property: a finite value and gradient, or ValueError/TypeError with a message."""
    try:
        if torch.is_floating_point(x):
            x = x.clone().requires_grad_()
            if x.dtype == torch.float64 and hasattr(compute, "double"):
                compute = compute.double()
        value = compute(x, y)
        total = value.sum()
        total.backward()
    except (ValueError, TypeError) as error:
        assert str(error).strip(), "an error must say what is wrong"
        event("refused on call")
        return
    event("finite value and gradient")
    assert torch.isfinite(value).all(), f"non-finite value {value}"
    assert x.grad is not None and torch.isfinite(x.grad).all(), "non-finite gradient"


def _build(factory):
    try:
        return factory(), None
    except (ValueError, TypeError) as error:
        assert str(error).strip()
        event("refused on construction")
        return None, error


@SETTINGS
@given(options=loss_options(), pair=images())
def test_perceptual_loss_is_finite_or_refuses(options, pair):
    torch.manual_seed(0)
    loss_fn, _ = _build(lambda: PerceptualLoss("vgg11", weights=None, **options))
    if loss_fn is None:
        return
    low, high = loss_fn.recipe.input_range
    assert math.isfinite(low) and math.isfinite(high) and high > low
    _check(loss_fn, *pair)


@SETTINGS
@given(layers=layer_names, broken=st.sampled_from([None, None, None, "pixel_l1", "range"]),
       pair=images())
def test_functional_form_is_finite_or_refuses(layers, broken, pair):
    torch.manual_seed(0)
    options = {"pixel_l1": -1.0 if broken == "pixel_l1" else 0.5,
               "input_range": (0, float("inf")) if broken == "range" else (0, 1)}
    _check(lambda x, y: perceptual_loss(x, y, backbone="vgg11", layers=layers, weights=None,
                                        **options), *pair)


LPIPS_BROKEN = {"net": ["vgg16x"], "reduction": ["max"], "tile_size": [8, -1],
                "input_range": [(1, 0), (0, float("inf"))], "version": ["0.0"]}


@SETTINGS
@given(net=st.sampled_from(["squeeze", "alex"]), lpips=st.booleans(),
       reduction=st.sampled_from(["none", "mean", "sum"]), tile=st.sampled_from([None, 64]),
       broken=st.sampled_from([None] * len(LPIPS_BROKEN) + list(LPIPS_BROKEN)), data=st.data())
def test_lpips_is_finite_or_refuses(net, lpips, reduction, tile, broken, data):
    torch.manual_seed(0)
    options = {"net": net, "lpips": lpips, "reduction": reduction, "tile_size": tile,
               "input_range": (0, 1), "version": "0.1"}
    if broken is not None:
        options[broken] = data.draw(st.sampled_from(LPIPS_BROKEN[broken]))
    metric, _ = _build(lambda: LPIPS(weights=None, **options))
    if metric is None:
        return
    _check(metric, *data.draw(images()))
