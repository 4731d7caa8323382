import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from skimage.metrics import structural_similarity

from perceptual_loss.apps.compare.folders import compare_folders, match_folders
from perceptual_loss.apps.compare.results import summarize
from perceptual_loss.apps.compare.scorer import ImageScorer, parse_metrics
from perceptual_loss.apps.images.quality import psnr_from_mse
from perceptual_loss.backbones import get_backbone
from perceptual_loss.cli import cli

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
LAYERS = "relu1_1,relu2_1"


@pytest.fixture(scope="module")
def vgg11_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vgg11-test.pth"
    torch.save(get_backbone("vgg11").build_features().state_dict(), path)  # trunk only
    return path


def _write_png(path, seed, size=(24, 20), base=None, noise=0.1):
    rng = np.random.default_rng(seed)
    if base is None:
        pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    else:
        noisy = base.astype(np.float64) + rng.normal(0, noise * 255, base.shape)
        pixels = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def _reference_vgg11_distance(state, pixels_a, pixels_b):
    """relu1_1 and relu2_1 of VGG11 written out with F.conv2d, L1 mean per layer."""

    def features(pixels):
        x = torch.from_numpy(
            ((pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy()
        )[None].float()
        relu1_1 = F.relu(F.conv2d(x, state["0.weight"], state["0.bias"],
                                  padding=1))
        pooled = F.max_pool2d(relu1_1, 2)
        relu2_1 = F.relu(F.conv2d(pooled, state["3.weight"], state["3.bias"],
                                  padding=1))
        return relu1_1, relu2_1

    parts = [float((fa - fb).abs().mean()) for fa, fb in
             zip(features(pixels_a), features(pixels_b), strict=True)]
    return parts


def _independent_scores(pixels_a, pixels_b):
    a = pixels_a.astype(np.float64) / 255.0
    b = pixels_b.astype(np.float64) / 255.0
    mse = float(np.mean((a - b) ** 2))
    psnr = 10 * math.log10(1.0 / mse)
    ssim = structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0, channel_axis=-1)
    return mse, psnr, ssim


def test_compare_two_files_json_matches_independent_computation(tmp_path, vgg11_checkpoint):
    pixels_a = _write_png(tmp_path / "a.png", seed=1)
    pixels_b = _write_png(tmp_path / "b.png", seed=2, base=pixels_a)
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(cli, [
        "compare", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--backbone", "vgg11",
        "--layers", LAYERS, "--weights", str(vgg11_checkpoint), "--device", "cpu",
        "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    (pair,) = document["pairs"]
    mse, psnr, ssim = _independent_scores(pixels_a, pixels_b)
    assert pair["mse"] == pytest.approx(mse, rel=1e-6)
    assert pair["psnr"] == pytest.approx(psnr, rel=1e-6)
    assert pair["ssim"] == pytest.approx(ssim, abs=1e-5)
    state = torch.load(vgg11_checkpoint, weights_only=True)
    relu1_1, relu2_1 = _reference_vgg11_distance(state, pixels_a, pixels_b)
    assert pair["perceptual/relu1_1"] == pytest.approx(relu1_1, rel=1e-4)
    assert pair["perceptual/relu2_1"] == pytest.approx(relu2_1, rel=1e-4)
    assert pair["perceptual"] == pytest.approx(relu1_1 + relu2_1, rel=1e-4)
    assert (pair["height"], pair["width"]) == (24, 20)
    assert document["config"]["layers"] == ["relu1_1", "relu2_1"]
    assert document["summary"]["mse"] == pytest.approx(mse, rel=1e-6)
    # the table is printed too
    assert "psnr (dB)" in result.stdout
    assert f"{psnr:.2f}" in result.stdout


def test_identical_images_give_zero_distance_and_infinite_psnr(tmp_path):
    _write_png(tmp_path / "a.png", seed=3)
    result = CliRunner().invoke(cli, [
        "compare", str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--backbone", "vgg11",
        "--layers", "relu1_1", "--weights", "random", "--json", "-",
    ])
    assert result.exit_code == 0, result.output
    pair = json.loads(result.stdout)["pairs"][0]
    assert pair["mse"] == 0.0
    assert pair["psnr"] == "inf"
    assert pair["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert pair["perceptual"] == 0.0
    assert "random" in result.stderr  # loud about untrained weights


def test_compare_folders_csv_pairs_by_name(tmp_path, vgg11_checkpoint):
    expected = {}
    for index, name in enumerate(["cat", "dog", "owl"]):
        pixels_a = _write_png(tmp_path / "ref" / f"{name}.png", seed=10 + index)
        # the judged folder holds JPEG-free PNGs under the same name, one with another suffix
        suffix = ".bmp" if name == "dog" else ".png"
        pixels_b = _write_png(tmp_path / "out" / f"{name}{suffix}", seed=20 + index,
                              base=pixels_a, noise=0.05 * (index + 1))
        expected[name] = _independent_scores(pixels_a, pixels_b)
    _write_png(tmp_path / "ref" / "lonely.png", seed=99)
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(cli, [
        "compare", str(tmp_path / "ref"), str(tmp_path / "out"), "--backbone", "vgg11",
        "--layers", LAYERS, "--weights", str(vgg11_checkpoint), "--csv", str(out),
        "--batch-size", "2", "--no-progress",
    ])
    assert result.exit_code == 0, result.output
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["cat", "dog", "owl"]
    for row in rows:
        mse, psnr, ssim = expected[row["name"]]
        assert float(row["mse"]) == pytest.approx(mse, rel=1e-6)
        assert float(row["psnr"]) == pytest.approx(psnr, rel=1e-6)
        assert float(row["ssim"]) == pytest.approx(ssim, abs=1e-5)
    # stronger noise, larger distances: the metrics agree on the order
    assert float(rows[0]["perceptual"]) < float(rows[1]["perceptual"]) < float(
        rows[2]["perceptual"])
    assert "1 image(s) only in A were skipped: lonely" in result.stderr
    assert "mean" in result.stdout


def test_batched_and_single_folder_scores_agree(tmp_path):
    for index in range(3):
        base = _write_png(tmp_path / "a" / f"{index}.png", seed=index, size=(16, 16))
        _write_png(tmp_path / "b" / f"{index}.png", seed=5 + index, base=base)
    _write_png(tmp_path / "a" / "big.png", seed=7, size=(20, 24))
    _write_png(tmp_path / "b" / "big.png", seed=8, size=(20, 24))
    torch.manual_seed(0)
    scorer = ImageScorer(backbone="vgg11", layers=("relu1_1",), weights=None)
    one = compare_folders(tmp_path / "a", tmp_path / "b", scorer, batch_size=1, progress=False)
    four = compare_folders(tmp_path / "a", tmp_path / "b", scorer, batch_size=4, progress=False)
    assert one.world_size == 1
    assert [s.name for s in one.scores] == ["0", "1", "2", "big"]
    for single, batched in zip(one.scores, four.scores, strict=True):
        for key, value in single.values.items():
            assert batched.values[key] == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_lpips_metric_through_public_api(tmp_path):
    base = _write_png(tmp_path / "a.png", seed=1, size=(32, 32))
    _write_png(tmp_path / "b.png", seed=2, size=(32, 32), base=base)
    result = CliRunner().invoke(cli, [
        "compare", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--metric", "mse,lpips",
        "--weights", "random", "--json", "-",
    ])
    assert result.exit_code == 0, result.output
    pair = json.loads(result.stdout)["pairs"][0]
    assert set(pair) == {"name", "a", "b", "height", "width", "mse", "lpips"}
    assert pair["lpips"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.png", "a.png"], "Error: Invalid value for 'A': Path"),
        (["a.png", "small.png"], "is 20x24 pixels but"),
        (["a.png", "."], "A is a file but B is a folder"),
        (["a.png", "a.png", "--metric", "fid"], "unknown metric 'fid'"),
        (["a.png", "a.png", "--layers", "relu9_9"], "relu9_9"),
        (["a.png", "a.png", "--weights", "nowhere.pth"], "weights file not found"),
        (["a.png", "a.png", "--backbone", "resnet50"], "resnet50"),
        (["tiny.png", "tiny2.png"], "ssim needs images of at least 11x11"),
        (["a.png", "a.png", "--json", "-", "--csv", "-"], "choose one"),
    ],
)
def test_compare_user_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    _write_png(tmp_path / "a.png", seed=1)
    _write_png(tmp_path / "small.png", seed=1, size=(12, 12))
    _write_png(tmp_path / "tiny.png", seed=1, size=(8, 8))
    _write_png(tmp_path / "tiny2.png", seed=2, size=(8, 8))
    if "--weights" not in args:
        args = [*args, "--weights", "random"]
    result = CliRunner().invoke(cli, ["compare", *args, "--device", "cpu"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("Warning:") for line in lines[:-1])  # e.g. random weights
    assert lines[-1].startswith("Error:")
    assert message in lines[-1]
    assert "Traceback" not in result.stderr


def test_unmatched_folders_and_duplicate_names(tmp_path):
    _write_png(tmp_path / "a" / "x.png", seed=1)
    _write_png(tmp_path / "b" / "y.png", seed=1)
    with pytest.raises(ValueError, match="no file names match"):
        match_folders(tmp_path / "a", tmp_path / "b")
    _write_png(tmp_path / "b" / "x.png", seed=1)
    _write_png(tmp_path / "b" / "x.jpg", seed=1)
    with pytest.raises(ValueError, match="two images named 'x'"):
        match_folders(tmp_path / "a", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        match_folders(tmp_path / "empty", tmp_path / "a")


def test_helpers():
    assert parse_metrics(None) == ("mse", "psnr", "ssim", "perceptual")
    assert parse_metrics(["all"]) == ("mse", "psnr", "ssim", "perceptual", "lpips", "dists")
    assert parse_metrics(["PSNR", "mse"]) == ("mse", "psnr")
    assert float(psnr_from_mse(0.01)) == pytest.approx(20.0)
    assert math.isinf(float(psnr_from_mse(0.0)))
    scorer = ImageScorer(["mse", "psnr"])
    with pytest.raises(ValueError, match=r"values in \[-0\.5, 0\.5\], expected \[0, 1\]"):
        scorer.score(torch.full((1, 3, 4, 4), -0.5).clamp_max(0.5).index_fill_(3,
                     torch.tensor([0]), 0.5), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        scorer.score(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


def test_summarize_averages_finite_psnr():
    from perceptual_loss.apps.compare.results import PairScore

    scores = [
        PairScore("a", "a", "a", 1, 1, {"mse": 0.0, "psnr": math.inf}),
        PairScore("b", "b", "b", 1, 1, {"mse": 0.01, "psnr": 20.0}),
        PairScore("c", "c", "c", 1, 1, {"mse": 0.001, "psnr": 30.0}),
    ]
    summary = summarize(scores)
    assert summary["psnr"] == pytest.approx(25.0)
    assert summary["mse"] == pytest.approx(0.011 / 3)


def test_error_inside_a_dataloader_worker_is_still_one_line(tmp_path):
    _write_png(tmp_path / "a" / "x.png", seed=1, size=(20, 20))
    _write_png(tmp_path / "b" / "x.png", seed=2, size=(24, 20))
    result = CliRunner().invoke(cli, [
        "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--metric", "mse",
        "--workers", "1", "--no-progress",
    ])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: ")
    assert "x.png is 20x20 pixels but" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_prints_one_example_per_line():
    result = CliRunner().invoke(cli, ["compare", "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "\\b" not in result.output and "\b" not in result.output
    lines = [line.strip() for line in result.output.splitlines()]
    examples = lines[lines.index("Examples:") + 1:]
    examples = examples[: examples.index("")]
    assert len(examples) == 5
    assert all(line.startswith("perceptual compare ") for line in examples)
    assert "perceptual compare refs/ outputs/ --html report/" in examples
    assert "perceptual compare ref_frames/ out_frames/ --video --html video.html" in examples
    assert "--html PATH" in result.output


def test_transparent_pixels_give_a_one_line_warning(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(24, 20, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:12, :, 3] = 0  # the top half is hidden
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "logo.png")
    _write_png(tmp_path / "b.png", seed=1)
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "logo.png"),
                                      str(tmp_path / "b.png"), "--metric", "mse"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"Warning: {tmp_path / 'logo.png'}: 50% of its pixels are mostly or fully transparent; "
        "the alpha channel is dropped and the colour stored under them is used as it is (often "
        "black). Flatten the image onto the background you mean first to choose what they show"
    ]


# --------------------------------------------------------------------------------------------
# --video: two clips of frames
# --------------------------------------------------------------------------------------------
def _write_clips(folder, frames=5, size=(32, 36)):
    """A clip that pans and a noisy copy whose noise flickers: frame_001.png, ..."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (*size, 3)).astype(np.float64)
    for t in range(1, frames + 1):
        shifted = np.roll(base, 2 * t, axis=1)
        noisy = shifted + rng.normal(0, 10 if t % 2 else 40, shifted.shape)
        for side, pixels in (("a", shifted), ("b", noisy)):
            path = folder / side / f"frame_{t:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).save(path)


def test_compare_videos_gives_tlp_from_pairwise_lpips_of_the_frames(tmp_path):
    from perceptual_loss.apps.compare.video import compare_videos
    from perceptual_loss.apps.images.io import load_image

    _write_clips(tmp_path, frames=5)
    torch.manual_seed(0)
    scorer = ImageScorer(["mse", "lpips"], weights="random")
    result = compare_videos(tmp_path / "a", tmp_path / "b", scorer, frames_per_chunk=2,
                            progress=False)
    assert [score.name for score in result.scores] == [f"frame_{t:03d}" for t in range(1, 6)]
    a = [load_image(tmp_path / "a" / f"frame_{t:03d}.png")[None] for t in range(1, 6)]
    b = [load_image(tmp_path / "b" / f"frame_{t:03d}.png")[None] for t in range(1, 6)]
    metric = scorer.temporal_metric()
    with torch.no_grad():
        change_a = [float(metric(a[t], a[t - 1])) for t in range(1, 5)]
        change_b = [float(metric(b[t], b[t - 1])) for t in range(1, 5)]
        frame_lpips = [float(metric(b[t], a[t])) for t in range(5)]
    terms = [abs(pb - pa) for pa, pb in zip(change_a, change_b, strict=True)]
    assert result.tlp == pytest.approx(sum(terms) / 4, rel=1e-5)
    assert result.changes_a == pytest.approx(change_a, rel=1e-5)
    assert math.isnan(result.scores[0].values["tlp"])
    assert [s.values["tlp"] for s in result.scores[1:]] == pytest.approx(terms, rel=1e-4)
    assert [s.values["lpips"] for s in result.scores] == pytest.approx(frame_lpips, rel=1e-5)
    assert summarize(result.scores)["tlp"] == pytest.approx(result.tlp, rel=1e-6)


def test_cli_video_on_folders_and_numbered_sequences(tmp_path):
    _write_clips(tmp_path, frames=4)
    (tmp_path / "b" / "frame_004.png").rename(tmp_path / "b" / "frame_009.png")  # unmatched
    outputs = []
    for a, b in ((tmp_path / "a", tmp_path / "b"),
                 (tmp_path / "a" / "frame_%03d.png", tmp_path / "b" / "frame_%d.png")):
        torch.manual_seed(0)
        result = CliRunner().invoke(cli, [
            "compare", str(a), str(b), "--video", "--metric", "mse,psnr", "--weights",
            "random", "--device", "cpu", "--no-progress", "--json", "-"])
        assert result.exit_code == 0, result.output
        assert "1 frame(s) only in A were skipped: " in result.stderr
        outputs.append(json.loads(result.stdout))
    for document in outputs:
        frames = document["pairs"]
        assert len(frames) == 3 and frames[0]["tlp"] is None
        assert document["video"]["tlp"] == pytest.approx(
            (frames[1]["tlp"] + frames[2]["tlp"]) / 2)
        assert document["summary"]["tlp"] == pytest.approx(document["video"]["tlp"])
        assert document["video"]["tlp_x100"] == pytest.approx(100 * document["video"]["tlp"])
        assert document["video"]["tlp"] > 0
    assert [f["name"] for f in outputs[0]["pairs"]] == ["frame_001", "frame_002", "frame_003"]
    assert [f["name"] for f in outputs[1]["pairs"]] == ["1", "2", "3"]
    assert outputs[0]["video"]["tlp"] == pytest.approx(outputs[1]["video"]["tlp"], rel=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["a/frame_001.png", "b", "--video"], "a/frame_001.png is a file"),
    (["a/x_%03d.png", "b", "--video"], "no frames match"),
    (["a/frame_%03d.png", "b/frame_%03d.png"], "add --video"),
    (["a/frame_%03d.png", "nowhere/f_%03d.png", "--video"], "Path 'nowhere/f_%03d.png' does"),
])
def test_cli_video_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    _write_clips(tmp_path, frames=2)
    result = CliRunner().invoke(cli, ["compare", *args, "--metric", "mse", "--no-progress"])
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines()[-1].startswith("Error:")
    assert message in result.stderr and "Traceback" not in result.stderr


def test_metric_help_lists_dists_and_what_all_adds():
    result = CliRunner().invoke(cli, ["compare", "--help"], terminal_width=200)
    text = " ".join(result.output.split())
    assert "perceptual, lpips, dists, or all (the default four plus lpips and dists)" in text
