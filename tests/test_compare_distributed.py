"""`perceptual compare DIR_A DIR_B` under torchrun: 2 CPU processes (gloo) on a free port."""

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import perceptual_loss
from perceptual_loss.apps.compare.folders import compare_folders
from perceptual_loss.apps.compare.scorer import ImageScorer
from perceptual_loss.backbones import get_backbone
from processes import run_group

SRC = Path(perceptual_loss.__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun(args, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PERCEPTUAL_DEBUG", None)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "perceptual_loss",
        *args,
    ]
    env["PERCEPTUAL_DIST_TIMEOUT"] = "120"
    return run_group(command, timeout=300, env=env, cwd=cwd)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_folder_comparison_sharded_over_two_processes(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"img{index}" for index in range(5)]  # odd: the shards are uneven
    for index, name in enumerate(names):
        size = (16, 16) if index % 2 else (20, 12)  # pairs of different sizes
        base = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        noisy = np.clip(base + rng.normal(0, 10 * (index + 1), base.shape), 0, 255)
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "b").mkdir(exist_ok=True)
        Image.fromarray(base).save(tmp_path / "a" / f"{name}.png")
        Image.fromarray(noisy.astype(np.uint8)).save(tmp_path / "b" / f"{name}.png")
    torch.manual_seed(0)
    checkpoint = tmp_path / "vgg11.pth"
    torch.save(get_backbone("vgg11").build_features().state_dict(), checkpoint)
    out = tmp_path / "scores.json"

    done = _torchrun([
        "compare", str(tmp_path / "a"), str(tmp_path / "b"),
        "--backbone", "vgg11", "--layers", "relu1_1,relu2_1", "--weights", str(checkpoint),
        "--device", "cpu", "--json", str(out), "--no-progress",
    ], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("5 pairs") == 1  # rank 0 alone reports

    document = json.loads(out.read_text())
    assert document["config"]["world_size"] == 2
    assert [pair["name"] for pair in document["pairs"]] == names

    scorer = ImageScorer(backbone="vgg11", layers=("relu1_1", "relu2_1"), weights=checkpoint)
    alone = compare_folders(tmp_path / "a", tmp_path / "b", scorer, progress=False)
    assert alone.world_size == 1
    for pair, expected in zip(document["pairs"], alone.scores, strict=True):
        assert pair["name"] == expected.name
        for key, value in expected.values.items():
            assert pair[key] == pytest.approx(value, rel=1e-5, abs=1e-9), key


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_a_failing_rank_stops_every_process_with_one_line(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "a" / "p0.png")
    Image.fromarray(np.ones((16, 16, 3), dtype=np.uint8)).save(tmp_path / "b" / "p0.png")
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / "a" / "p1.png")
    Image.fromarray(np.zeros((12, 16, 3), dtype=np.uint8)).save(tmp_path / "b" / "p1.png")
    done = _torchrun(["compare", "a", "b", "--metric", "mse,psnr", "--no-progress",
                      "--json", "out.json"], cwd=tmp_path)
    assert done.returncode != 0  # and no hang: rank 0 learns that rank 1 failed
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    # rank 0 alone prints, and its line carries rank 1's own error
    assert len(errors) == 1, done.stderr
    assert "process 1 of 2 failed" in errors[0]
    assert "p1.png is 16x16 pixels but" in errors[0]
    # torchrun prints its own launcher traceback; none comes from the processes themselves
    assert "perceptual_loss/apps" not in done.stderr
    assert "perceptual_loss/cli" not in done.stderr
    assert not (tmp_path / "out.json").exists()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_random_weights_are_the_same_network_on_every_rank(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    for folder, image in (("a", base), ("b", noisy)):
        (tmp_path / folder).mkdir()
        for index in range(3):  # three identical pairs: ranks 0 and 1 each score some
            Image.fromarray(image).save(tmp_path / folder / f"p{index}.png")
    done = _torchrun(["compare", "a", "b", "--backbone", "vgg11", "--layers", "relu1_1,relu2_1",
                      "--metric", "perceptual", "--weights", "random", "--device", "cpu",
                      "--json", "out.json", "--no-progress"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    values = [pair["perceptual"] for pair in json.loads((tmp_path / "out.json").read_text())
              ["pairs"]]
    assert values[0] == values[1] == values[2]
    scorer = ImageScorer(["perceptual"], backbone="vgg11", layers=("relu1_1", "relu2_1"),
                         weights=None)
    alone = compare_folders(tmp_path / "a", tmp_path / "b", scorer, progress=False)
    assert values[0] == pytest.approx(alone.scores[0].values["perceptual"], rel=1e-6)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_an_error_every_rank_hits_is_printed_once(tmp_path):
    done = _torchrun(["compare", "missing_a.png", "missing_b.png", "--no-progress"],
                     cwd=tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
