import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from perceptual_loss.apps.images.degradations import GaussianNoise
from perceptual_loss.apps.train.checkpoints import CHECKPOINT_NAME, load_checkpoint
from perceptual_loss.apps.train.data import RestorationDataset, make_eval_pairs
from perceptual_loss.apps.train.loop import TrainConfig, fit
from perceptual_loss.apps.train.loss_mix import LossConfig, build_loss
from perceptual_loss.apps.train.models import UNet
from perceptual_loss.apps.train.restoration import train_restoration
from processes import run_group

pytestmark = pytest.mark.usefixtures("one_thread")

def _images(count=3, size=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # smooth random pictures: upsampled noise, so denoising has structure to learn
    small = torch.rand(count, 3, size // 8, size // 8, generator=generator)
    return list(F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False))


def _tiny_loss():
    torch.manual_seed(0)
    return build_loss(
        LossConfig({"mse": 1.0, "perceptual": 0.1}, layers=("relu1_1",), backbone="vgg11",
                   weights=None)
    )


def _config(out, **overrides):
    settings = dict(steps=6, batch_size=2, learning_rate=1e-2, sample_every=3,
                    checkpoint_every=3, progress=False)
    settings.update(overrides)
    return TrainConfig(out, **settings)


def _fit(out, model=None, **overrides):
    torch.manual_seed(0)
    model = model or UNet(in_channels=3, base_channels=4, depth=1, residual=False)
    images = _images()
    dataset = RestorationDataset(images[:2], 16, GaussianNoise(0.1), length=8, seed=0)
    pairs = make_eval_pairs(images[2:], GaussianNoise(0.1))
    return fit(model, _tiny_loss(), dataset, pairs, _config(out, **overrides),
               task={"name": "denoise"}, eval_names=["c.png"], echo=lambda _: None)


def test_training_lowers_the_loss_and_writes_outputs(tmp_path):
    result = _fit(tmp_path / "run", steps=12)
    losses = [entry["loss"] for entry in result.history]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3
    assert set(result.history[0]) == {"step", "loss", "content", "mse"}
    out = tmp_path / "run"
    for name in ("checkpoint.pt", "loss_curve.png", "report.md", "report.json",
                 "samples/step_000003.png", "samples/step_000012.png", "eval/grid.png",
                 "eval/c_output.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    row = report["metrics"]["images"][0]
    assert row["image"] == "c.png"
    assert {"psnr_input", "psnr_output", "ssim_input", "ssim_output"} <= set(row)
    assert "| c.png |" in (out / "report.md").read_text()


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    whole = _fit(tmp_path / "whole", steps=5)
    _fit(tmp_path / "split", steps=3)
    checkpoint = load_checkpoint(tmp_path / "split" / CHECKPOINT_NAME)
    assert checkpoint["step"] == 3 and len(checkpoint["optimizer"]["state"]) > 0
    resumed = _fit(tmp_path / "split", steps=5, resume=True)
    assert resumed.start_step == 3 and resumed.step == 5
    assert [e["loss"] for e in resumed.history] == pytest.approx(
        [e["loss"] for e in whole.history], rel=1e-5
    )
    final_whole = load_checkpoint(tmp_path / "whole")["model"]
    final_split = load_checkpoint(tmp_path / "split")["model"]
    for key, value in final_whole.items():
        torch.testing.assert_close(final_split[key], value, msg=key)


def test_checkpoint_guards(tmp_path):
    _fit(tmp_path / "run", steps=2)
    with pytest.raises(ValueError, match=r"already exists; pass --resume \(resume=True\)"):
        _fit(tmp_path / "run", steps=2)
    with pytest.raises(ValueError, match="cannot resume: no checkpoint"):
        _fit(tmp_path / "other", steps=2, resume=True)
    other_model = UNet(in_channels=3, base_channels=8, depth=1, residual=False)
    with pytest.raises(ValueError, match="trained with model"):
        _fit(tmp_path / "run", model=other_model, steps=3, resume=True)
    with pytest.raises(ValueError, match="exclude each other"):
        _fit(tmp_path / "run", steps=3, resume=True, overwrite=True)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


def test_train_restoration_grayscale(tmp_path):
    images = [image[:1] for image in _images(3)]
    torch.manual_seed(0)
    result = train_restoration(
        UNet(in_channels=1, base_channels=4, depth=1), GaussianNoise(0.1), images[:2],
        images[2:], ["slice.png"], LossConfig({"mse": 1.0}), _config(tmp_path, steps=2),
        crop_size=16, task={"name": "denoise", "mode": "gray"}, echo=lambda _: None,
    )
    assert result.step == 2
    # the distance module needs ImageNet weights that tests do not have: the report says so
    report = (tmp_path / "report.md").read_text()
    assert "perceptual distance of the report not computed" in report
    assert "`perceptual weights fetch vgg16/imagenet`" in report
    assert "--weights random" in report and "explicitly" not in report


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    from perceptual_loss.apps.images.io import save_image

    for index, image in enumerate(_images(3, size=32)):
        save_image(image, data / f"img{index}.png")
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "perceptual_loss", "train", "denoise", "--data", str(data), "--out", str(out),
        "--steps", "4", "--batch-size", "1", "--crop-size", "16", "--width", "4", "--depth",
        "1", "--loss", "mse=1", "--device", "cpu", "--no-progress", "--sample-every", "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PERCEPTUAL_DIST_TIMEOUT": "120"}
    completed = run_group(command, timeout=400, cwd=tmp_path, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((out / "report.json").read_text())["summary"]
    assert summary["processes"] == 2 and summary["steps"] == 4
    assert load_checkpoint(out)["step"] == 4
    # only rank 0 prints the start line
    assert completed.stdout.count("denoise: 2 training / 1 held-out images") == 1
