import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from perceptual_loss.apps.images.io import load_image, save_image
from perceptual_loss.apps.train.checkpoints import load_checkpoint
from perceptual_loss.cli import cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def folder(tmp_path):
    generator = torch.Generator().manual_seed(0)
    data = tmp_path / "data"
    small = torch.rand(3, 3, 5, 5, generator=generator)
    for index, image in enumerate(F.interpolate(small, size=(40, 40), mode="bilinear")):
        save_image(image.clamp(0, 1), data / f"img{index}.png")
    return data


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


FAST = ("--steps", 3, "--batch-size", 2, "--weights", "random", "--device", "cpu",
        "--no-progress", "--sample-every", 2, "--checkpoint-every", 2)


def test_train_denoise_writes_everything_and_resumes(folder, tmp_path):
    out = tmp_path / "dn"
    result = run("train", "denoise", "--data", folder, "--out", out, "--crop-size", 16,
                 "--width", 4, "--depth", 1, "--loss", "mse=1,perceptual=0.1",
                 "--layers", "relu1_1", "--backbone", "vgg11", "--noise", "poisson:20", *FAST)
    assert result.exit_code == 0, result.output
    assert "Warning: the loss network has random weights" in result.stderr
    assert "2 training / 1 held-out" in result.stdout
    checkpoint = load_checkpoint(out)
    assert checkpoint["step"] == 3
    assert checkpoint["task"]["noise"] == "PoissonNoise(peak=20)"
    assert (out / "samples" / "step_000002.png").is_file()
    assert "random weights" in (out / "report.md").read_text()
    # a second run refuses to overwrite, --resume continues to --steps
    again = run("train", "denoise", "--data", folder, "--out", out, "--crop-size", 16,
                "--width", 4, "--depth", 1, "--loss", "mse=1", *FAST)
    assert again.exit_code == 1
    assert "already exists; pass --resume" in again.stderr and "Traceback" not in again.stderr
    resumed = run("train", "denoise", "--data", folder, "--out", out, "--crop-size", 16,
                  "--width", 4, "--depth", 1, "--loss", "mse=1", "--resume",
                  *FAST[:1], 5, *FAST[2:])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from step 3" in resumed.stdout
    assert load_checkpoint(out)["step"] == 5


def _ct_slices(folder, side, seed):
    """Three 16-bit slices with stored values in [1000, 1200): a CT window's worth."""
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for index in range(3):
        values = (1000 + 200 * rng.random((side, side))).astype(np.uint16)
        Image.fromarray(values).save(folder / f"s{index}.png")
    return folder


def test_train_denoise_medical_slices(tmp_path):
    data = _ct_slices(tmp_path / "slices", 24, seed=0)
    out = tmp_path / "ct"
    result = run("train", "denoise", "--mode", "medical", "--window", "1000,1200",
                 "--data", data, "--out", out, "--crop-size", 16, "--width", 4, "--depth",
                 1, "--loss", "mse=1", *FAST)
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(out)
    assert checkpoint["model_config"]["in_channels"] == 1
    assert tuple(checkpoint["task"]["window (stored values)"]) == (1000.0, 1200.0)


def test_train_denoise_medical_slices_with_a_medical_network(tmp_path):
    data = _ct_slices(tmp_path / "slices", 40, seed=1)
    out = tmp_path / "ct"
    result = run("train", "denoise", "--mode", "medical", "--window", "1000,1200",
                 "--data", data, "--out", out, "--crop-size", 32, "--width", 4, "--depth", 1,
                 "--loss", "mse=1,perceptual=0.1", "--backbone", "radimagenet_resnet50",
                 "--weights", "random", *FAST)
    assert result.exit_code == 0, result.output
    history = load_checkpoint(out)["history"]
    assert {"mse", "perceptual"} <= set(history[-1])
    report = json.loads((out / "report.json").read_text())
    assert "perceptual_output" in report["metrics"]["images"][0]
    bad = run("train", "denoise", "--mode", "medical", "--window", "1000,1200", "--data", data,
              "--out", tmp_path / "bad", "--crop-size", 32, "--loss", "mse=1,perceptual=1",
              "--backbone",
              "medicalnet_resnet10", "--weights", "random", *FAST)
    assert bad.exit_code == 1 and "3D network" in bad.output


def test_train_sr_x2(folder, tmp_path):
    out = tmp_path / "sr"
    result = run("train", "sr", "--scale", 2, "--data", folder, "--out", out, "--crop-size",
                 16, "--width", 4, "--blocks", 1, "--loss", "l1=1", *FAST)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    row = report["metrics"]["images"][0]
    # the untrained SR net starts at the bicubic upscale: output ~ input baseline
    assert row["psnr_output"] == pytest.approx(row["psnr_input"], abs=1.0)
    assert load_checkpoint(out)["model_config"]["scale"] == 2


def test_train_style_then_stylize(folder, tmp_path):
    style = tmp_path / "style.png"
    save_image(torch.rand(3, 32, 32), style)
    out = tmp_path / "style_run"
    result = run("train", "style", "--style", style, "--data", folder, "--out", out,
                 "--crop-size", 16, "--style-size", 32, "--width", 4, "--blocks", 1,
                 "--backbone", "vgg11", "--layers", "relu2_1", "--style-layers",
                 "relu1_1,relu2_1", *FAST)
    assert result.exit_code == 0, result.output
    stylized = tmp_path / "stylized"
    applied = run("stylize", out / "checkpoint.pt", folder / "img0.png", "--out", stylized,
                  "--device", "cpu")
    assert applied.exit_code == 0, applied.output
    picture = load_image(stylized / "img0.png")
    assert picture.shape == (3, 40, 40)


def test_stylize_refuses_other_checkpoints(folder, tmp_path):
    out = tmp_path / "dn"
    assert run("train", "denoise", "--data", folder, "--out", out, "--crop-size", 16,
               "--width", 4, "--depth", 1, "--loss", "mse=1", *FAST).exit_code == 0
    result = run("stylize", out, folder / "img0.png", "--out", tmp_path / "x")
    assert result.exit_code == 1
    assert "not 'train style'" in result.stderr


def test_style_optimize(folder, tmp_path):
    out = tmp_path / "gatys.png"
    result = run("style-optimize", folder / "img0.png", folder / "img1.png", "--out", out,
                 "--steps", 4, "--size", 32, "--backbone", "vgg11", "--layers", "relu2_1",
                 "--style-layers", "relu1_1,relu2_1", "--weights", "random", "--device",
                 "cpu", "--no-progress", "--optimizer", "adam")
    assert result.exit_code == 0, result.output
    assert load_image(out).shape == (3, 32, 32)
    assert (tmp_path / "gatys_loss.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train", "denoise", "--loss", "mse=1,lpips=1"), "unknown loss term 'lpips'"),
        (("train", "denoise", "--noise", "speckle:3"), "unknown noise 'speckle'"),
        (("train", "denoise", "--window", "0,10"), "--window only applies to --mode medical"),
        (("train", "denoise", "--mode", "medical"), "--mode medical needs --data"),
        (("train", "denoise", "--data", "/no/such/folder"), "does not exist"),
        (("train", "sr", "--crop-size", "15"), "not a multiple of --scale 2"),
        (("train", "style", "--style", "/no/such.png"), "file not found"),
        (("train", "style", "--style", "x.png", "--loss", "mse=1"), "remove mse"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(tmp_path, args, message):
    result = run(*args, "--out", tmp_path / "o", "--weights", "random", "--device", "cpu")
    assert result.exit_code == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # a warning line at most, then the error


def test_help_everywhere():
    for args in (["train", "--help"], ["train", "denoise", "--help"], ["train", "sr", "--help"],
                 ["train", "style", "--help"], ["stylize", "--help"],
                 ["style-optimize", "--help"]):
        result = run(*args)
        assert result.exit_code == 0, args
        assert "--device" in result.output or "denoise" in result.output


def test_train_without_imagenet_weights_warns_with_command_line_advice(folder, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    monkeypatch.delenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", raising=False)
    result = run("train", "denoise", "--data", folder, "--out", tmp_path / "dn", "--crop-size",
                 16, "--width", 4, "--depth", 1, "--loss", "mse=1", "--steps", 1,
                 "--batch-size", 2, "--device", "cpu", "--no-progress")
    # an MSE-only run trains; only the report's perceptual column is missing, and it says how
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if "not computed" in line]
    assert len(warning) == 1
    assert warning[0].startswith("Warning: perceptual distance of the report not computed")
    assert "`perceptual weights fetch vgg16/imagenet`" in warning[0]
    assert "--weights random" in warning[0]
    assert "weights=None explicitly" not in result.output
