import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from perceptual_loss.apps.features import (
    DEFAULT_FEATURE_LAYERS,
    channel_grid,
    colorize,
    extract_feature_maps,
    fit_image,
    normalize_maps,
    select_channels,
)
from perceptual_loss.backbones import get_backbone
from perceptual_loss.cli import cli
from perceptual_loss.recipe import block_ends

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def vgg11_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "vgg11-features.pth"
    torch.save(get_backbone("vgg11").build_features().state_dict(), path)
    return path


def _relu1_1(state, pixels):
    x = torch.from_numpy(((pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
    x = x[None].float()
    return F.relu(F.conv2d(x, state["0.weight"], state["0.bias"], padding=1))[0]


def test_normalize_maps_matches_numpy():
    maps = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]]])
    out = normalize_maps(maps)
    np.testing.assert_allclose(out[0].numpy(), (np.array([[1, 3], [5, 9]]) - 1) / 8)
    assert torch.equal(out[1], torch.zeros(2, 2))  # a flat map is shown black, not NaN


def test_select_channels_by_activation_and_index():
    feature_map = torch.zeros(4, 2, 2)
    feature_map[2] = 5.0
    feature_map[0] = -3.0  # strong, though negative
    feature_map[3] = 1.0
    assert select_channels(feature_map, 3).tolist() == [2, 0, 3]
    assert select_channels(feature_map, 9, order="index").tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="count must be >= 1"):
        select_channels(feature_map, 0)
    with pytest.raises(ValueError, match="order must be"):
        select_channels(feature_map, 1, order="random")


def test_channel_grid_layout_and_content():
    feature_map = torch.arange(5 * 3 * 4, dtype=torch.float32).reshape(5, 3, 4)
    feature_map[1] = feature_map[1].flip(-1)
    grid = channel_grid(feature_map, max_channels=5, order="index", cell_size=4, padding=1)
    # 5 tiles -> 2 rows x 3 columns of 3x4 tiles with 1 px padding
    assert grid.shape == (1, 2 * 3 + 3, 3 * 4 + 4)
    expected_1 = normalize_maps(feature_map[1:2])[0]
    assert torch.allclose(grid[0, 1:4, 6:10], expected_1)
    assert torch.all(grid[0, 0, :] == 1.0)  # white padding
    enlarged = channel_grid(feature_map[:1], cell_size=8, padding=0)
    assert enlarged.shape == (1, 6, 8)  # nearest-neighbour enlargement keeps the aspect


def test_colorize_gray_and_matplotlib():
    maps = torch.tensor([[[0.0, 1.0]]])
    assert colorize(maps).shape == (1, 1, 1, 2)
    pytest.importorskip("matplotlib")
    from matplotlib import colormaps

    colored = colorize(maps, "viridis")
    assert colored.shape == (1, 3, 1, 2)
    np.testing.assert_allclose(colored[0, :, 0, 1].numpy(), colormaps["viridis"](1.0)[:3],
                               atol=1e-6)
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        colorize(maps, "nope")


def test_fit_image():
    image = torch.rand(3, 40, 20)
    assert fit_image(image, 10).shape == (3, 10, 5)
    assert fit_image(image, 100) is image
    assert fit_image(image, None) is image


def test_extract_feature_maps_matches_hand_written_conv(vgg11_checkpoint):
    pixels = np.random.default_rng(0).integers(0, 256, size=(16, 12, 3)).astype(np.float64)
    image = torch.from_numpy(pixels.transpose(2, 0, 1) / 255.0).float()
    maps = extract_feature_maps(image, backbone="vgg11", layers=("block1_conv1", "pool2"),
                                weights=vgg11_checkpoint)
    assert list(maps) == ["relu1_1", "pool2"]
    assert maps["pool2"].shape == (128, 4, 3)
    state = torch.load(vgg11_checkpoint, weights_only=True)
    assert torch.allclose(maps["relu1_1"], _relu1_1(state, pixels), atol=1e-5)


def test_features_command_writes_grids_and_overview(tmp_path, vgg11_checkpoint):
    pixels = np.random.default_rng(1).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    out = tmp_path / "maps"
    result = CliRunner().invoke(cli, [
        "features", str(tmp_path / "photo.png"), "--backbone", "vgg11",
        "--layers", "relu1_1,relu2_1", "--weights", str(vgg11_checkpoint), "--device", "cpu",
        "-o", str(out), "--order", "index", "--cell-size", "16", "--channels", "64",
    ])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["overview.png", "relu1_1.png", "relu2_1.png"]
    assert "relu2_1" in result.stdout and "128 x    8 x    8" in result.stdout

    with Image.open(out / "relu1_1.png") as grid_file:
        grid = np.asarray(grid_file.convert("L"), dtype=np.float64) / 255.0
    assert grid.shape == (8 * 16 + 9 * 2, 8 * 16 + 9 * 2)  # 64 channels, 8 x 8 tiles
    state = torch.load(vgg11_checkpoint, weights_only=True)
    relu = _relu1_1(state, pixels.astype(np.float64)).numpy()
    for channel, (row, column) in [(0, (0, 0)), (9, (1, 1))]:
        expected = relu[channel]
        span = expected.max() - expected.min()
        expected = (expected - expected.min()) / span if span > 0 else expected * 0
        top, left = 2 + row * 18, 2 + column * 18
        np.testing.assert_allclose(grid[top : top + 16, left : left + 16], expected,
                                   atol=1 / 255 + 1e-3)
    with Image.open(out / "overview.png") as overview:
        assert overview.width > overview.height  # input row + 2 layer rows, 8 channels wide


def test_features_gray_image_default_out_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((20, 20), 100, dtype=np.uint8)).save(tmp_path / "ct.png")
    result = CliRunner().invoke(cli, [
        "features", "ct.png", "--backbone", "vgg11", "--layers", "relu1_1", "--gray",
        "--weights", "random", "--colormap", "gray",
    ])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "features_ct" / "relu1_1.png").is_file()
    assert "random" in result.stderr
    for name in ("relu1_1.png", "overview.png"):  # every picture says it: a pale red band
        with Image.open(tmp_path / "features_ct" / name) as picture:
            assert picture.convert("RGB").getpixel((3, 3)) == (253, 226, 226), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.png"], "Error: Invalid value for 'IMAGE'"),
        (["img.png", "--layers", "relu7_1"], "relu7_1"),
        (["img.png", "--colormap", "nope"], "unknown colormap 'nope'"),
        (["img.png", "--channels", "0"], "Invalid value for '--channels'"),
        (["img.png", "--layers", "relu5_2"], "too small"),
    ],
)
def test_features_user_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    result = CliRunner().invoke(cli, ["features", *args, "--backbone", "vgg11",
                                      "--weights", "random"])
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:")
    assert message in last
    assert "Traceback" not in result.stderr


def test_default_layers_follow_the_backbone():
    assert block_ends("vgg16") == DEFAULT_FEATURE_LAYERS
    assert block_ends("vgg11") == ("relu1_1", "relu2_1", "relu3_2", "relu4_2",
                                               "relu5_2")
    with pytest.raises(ValueError, match="unknown backbone"):
        block_ends("resnet")


def test_help_prints_one_example_per_line():
    result = CliRunner().invoke(cli, ["features", "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "\\b" not in result.output and "\b" not in result.output
    lines = [line.strip() for line in result.output.splitlines()]
    examples = lines[lines.index("Examples:") + 1:]
    examples = examples[: examples.index("")]
    assert examples == [
        "perceptual features photo.jpg",
        "perceptual features ct.png --gray --layers relu1_2,relu3_3 --colormap magma -o "
        "ct_maps",
    ]
