import json

import pytest
import torch
from click.testing import CliRunner

from perceptual_loss.apps.demo import (
    DISTORTIONS,
    DemoConfig,
    distort,
    gaussian_blur,
    resolve_demo_weights,
    run_demo,
)
from perceptual_loss.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gaussian_blur_matches_a_direct_2d_convolution():
    images = torch.rand(1, 2, 12, 12)
    sigma = 1.0
    radius = 3
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(offsets**2) / 2)
    kernel2d = torch.outer(g, g) / torch.outer(g, g).sum()
    padded = torch.nn.functional.pad(images, (radius,) * 4, mode="reflect")
    expected = torch.nn.functional.conv2d(
        padded, kernel2d.expand(2, 1, -1, -1).contiguous(), groups=2
    )
    torch.testing.assert_close(gaussian_blur(images, sigma), expected)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_blur(images, 0)


def test_shift_is_a_displaced_crop_without_wraparound():
    picture = torch.arange(3 * 10 * 12, dtype=torch.float32).view(3, 10, 12) / 360
    generator = torch.Generator()
    shifted = distort(picture, 2, 3, 5, "shift", 2, generator)
    assert torch.equal(shifted, picture[:, 2:7, 5:10])
    blurred = distort(picture, 2, 3, 5, "blur", 1.0, generator)
    assert blurred.shape == (3, 5, 5)
    with pytest.raises(ValueError, match="unknown distortion"):
        distort(picture, 0, 0, 5, "rotate", 1, generator)
    assert [kind for _, kind, _ in DISTORTIONS].count("shift") == 2


def test_missing_imagenet_weights_fall_back_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", str(tmp_path / "none"))
    weights, note = resolve_demo_weights("vgg16", "imagenet")
    assert weights is None
    assert "vgg16" in note and ".pth" in note  # names the file to put in place
    assert resolve_demo_weights("vgg16", None) == (None, "random weights were asked for "
                                                   "(--weights random)")


def test_quick_demo_end_to_end(monkeypatch, tmp_path):
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", str(tmp_path / "none"))
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        cli, ["demo", "--out", str(out), "--quick", "--no-progress", "--device", "cpu"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "RANDOM VGG WEIGHTS" in result.stderr  # loud in the terminal ...
    report = (out / "report.md").read_text()
    assert "RANDOM VGG WEIGHTS" in report  # ... and in the report
    for name in ("shift_vs_blur.png", "denoise_comparison.png", "demo.json",
                 "denoise_mse/report.md", "denoise_mse_perceptual/report.md"):
        assert (out / name).is_file(), name
    data = json.loads((out / "demo.json").read_text())
    assert data["weights"] is None and data["quick"] is True
    table = data["shift_table"]
    assert set(table) == {label for label, _, _ in DISTORTIONS}
    # the table holds what was measured: MSE of the shift is the mean of the rows
    rows = [row for row in data["shift_rows"] if row["distortion"] == "shift 1px"]
    assert table["shift 1px"]["mse"] == pytest.approx(sum(r["mse"] for r in rows) / len(rows))
    assert table["blur sigma 1"]["mse / blur 1"] == pytest.approx(1.0)
    # the verdict in the report follows the numbers
    verdict = "**support**" if data["claim_holds"] else "**do not fully support**"
    assert verdict in report
    assert set(data["denoise"]) == {"mse", "mse+perceptual"}


def test_demo_with_explicit_random_weights_says_why(tmp_path):
    result = run_demo(DemoConfig(tmp_path, quick=True, weights=None, progress=False),
                      echo=lambda _: None)
    assert result.weights_used is None
    assert "asked for" in result.weights_note
    assert result.report.read_text().count("RANDOM VGG WEIGHTS") == 1
