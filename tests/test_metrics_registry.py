"""The metric registry: a metric is one module plus one registration; compare picks it up."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from perceptual_loss import metrics as metrics_module
from perceptual_loss.apps.compare.page import higher_is_better, sort_metric
from perceptual_loss.apps.compare.scorer import all_metrics, parse_metrics
from perceptual_loss.cli import cli
from perceptual_loss.metrics import MetricSettings, MetricSpec, get_metric, register_metric
from perceptual_loss.metrics.dists import DISTS, dists_distance


class MeanAbsolute(nn.Module):
    """A toy metric: the mean absolute difference of each pair, doubled."""

    def forward(self, judged: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return 2 * (judged - reference).abs().flatten(1).mean(1)


def _factory(settings: MetricSettings) -> tuple[nn.Module, str]:
    settings.notes.append("toy metric: no trunk")
    return MeanAbsolute(), "none"


@pytest.fixture
def toy_metric(monkeypatch):
    """``toy`` registered for one test, its factory in a module of its own."""
    module = types.ModuleType("toy_metric_module")
    module.make = _factory
    monkeypatch.setitem(sys.modules, "toy_metric_module", module)
    monkeypatch.setattr(metrics_module._REGISTRY, "_items", dict(metrics_module._REGISTRY._items))
    return register_metric(MetricSpec("toy", "twice the mean absolute difference",
                                      "toy_metric_module:make", higher_is_better=False,
                                      random_trunk=False))


def _png(path, seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return torch.from_numpy(pixels).permute(2, 0, 1).double() / 255


def test_a_registered_metric_shows_up_in_compare(toy_metric, tmp_path):
    a, b = _png(tmp_path / "a.png", 0), _png(tmp_path / "b.png", 1)
    assert all_metrics()[-1] == "toy" and parse_metrics(["toy", "mse"]) == ("mse", "toy")
    help_text = CliRunner().invoke(cli, ["compare", "--help"]).output
    assert "toy" in " ".join(help_text.split())
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                      "--metric", "mse,toy", "--json", "-"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = 2 * float((b - a).abs().mean())
    assert report["pairs"][0]["toy"] == pytest.approx(expected, rel=1e-6)
    assert report["config"]["toy_weights"] == "none"
    assert report["config"]["notes"] == ["toy metric: no trunk"]
    html = tmp_path / "page.html"
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                      "--metric", "toy", "--html", str(html)])
    assert result.exit_code == 0, result.output
    assert 'data-col="toy"' in html.read_text()
    assert sort_metric(["toy", "mse"]) == "toy" and not higher_is_better("toy")


def test_unknown_metric_lists_the_registered_ones(toy_metric):
    with pytest.raises(ValueError, match="unknown metric 'nope': choose from .*dists, toy or all"):
        parse_metrics(["nope"])
    with pytest.raises(ValueError, match="metric 'toy' is already registered"):
        register_metric(MetricSpec("toy", "again", "toy_metric_module:make"))
    with pytest.raises(ValueError, match="must not be one of mse"):
        register_metric(MetricSpec("mse", "shadowing", "toy_metric_module:make"))


def test_the_shipped_metrics_are_registered_with_their_factories():
    lpips_module, label = get_metric("lpips").build(MetricSettings(weights=None))
    assert label == "random" and lpips_module.net.name == "alex"
    assert [spec.name for spec in metrics_module.list_metrics()][:2] == ["lpips", "dists"]


def test_dists_distance_equals_the_module(one_thread):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 40, 36, generator=gen), torch.rand(2, 3, 40, 36, generator=gen)
    module = DISTS(weights=None)
    expected = module(x, y)
    torch.testing.assert_close(dists_distance(x, y, weights=None), expected)
    torch.testing.assert_close(dists_distance(x, y, metric=module, reduction="mean"),
                               expected.mean())
    # cached: the second call reuses the first call's module
    assert dists_distance(x, y, weights=None).shape == (2,)
    with pytest.raises(ValueError, match="reduction='none'"):
        dists_distance(x, y, metric=DISTS(weights=None, reduction="mean"))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        dists_distance(x[0], y[0], weights=None)
