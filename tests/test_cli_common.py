import os
import sys
import textwrap
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

import perceptual_loss
from perceptual_loss.cli import LAZY_SUBCOMMANDS, LazyGroup, cli, main
from perceptual_loss.cli.errors import (
    PerceptualCommand,
    format_user_error,
    missing_weights_message,
)
from perceptual_loss.cli.options import (
    device_option,
    parse_name_list,
    parse_weights,
    resolve_device,
    weights_option,
)
from processes import run_group

SRC = Path(perceptual_loss.__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


# ------------------------------------------------------------------ resolve_device
def test_resolve_device_auto_and_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_resolve_device_cuda_without_cuda_is_clear(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(3)


def test_resolve_device_cuda_index_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"only 1 CUDA device\(s\)"):
        resolve_device("cuda:3")


# ------------------------------------------------------------------ parse_weights
def test_parse_weights_keywords_files_and_keys(tmp_path):
    assert parse_weights("imagenet") == "imagenet"
    assert parse_weights("ImageNet") == "imagenet"
    assert parse_weights("random") is None
    assert parse_weights("none") is None
    assert parse_weights(None) is None
    checkpoint = tmp_path / "vgg.pth"
    checkpoint.write_bytes(b"x")
    assert parse_weights(str(checkpoint)) == checkpoint
    assert parse_weights(checkpoint) == checkpoint
    assert parse_weights("vgg16/keras-imagenet") == "vgg16/keras-imagenet"
    assert parse_weights("keras-imagenet") == "keras-imagenet"


def test_parse_weights_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="weights file not found: .*missing.pth"):
        parse_weights(str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        parse_weights("./nowhere")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        parse_weights(str(tmp_path))
    with pytest.raises(ValueError, match="empty"):
        parse_weights("  ")
    with pytest.raises(ValueError, match=r"unknown weights 'imagenett'.*vgg16/imagenet"):
        parse_weights("imagenett")


def test_parse_name_list():
    assert parse_name_list("relu1_2, relu2_2,,relu1_2") == ("relu1_2", "relu2_2")
    assert parse_name_list(("a,b", "c")) == ("a", "b", "c")
    assert parse_name_list(None) == ()


# ------------------------------------------------------------------ error handling
@click.command(cls=PerceptualCommand)
@device_option
@weights_option
@click.option("--fail", type=click.Choice(["none", "value", "file", "bug", "import"]),
              default="none")
def probe(device, weights, fail):
    """A command for the tests."""
    if fail == "value":
        raise ValueError("layer 'relu9_9' is unknown;\nvalid: relu1_1, relu1_2")
    if fail == "file":
        raise FileNotFoundError("image not found: nowhere.png")
    if fail == "bug":
        raise RuntimeError("internal bug")
    if fail == "import":
        raise ModuleNotFoundError("No module named 'rich'", name="rich")
    click.echo(f"device={device} weights={weights!r}")


def test_options_are_converted():
    result = CliRunner().invoke(probe, ["--device", "cpu", "--weights", "random"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "device=cpu weights=None"
    result = CliRunner().invoke(probe, [])
    assert "weights='imagenet'" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--fail", "value"], "Error: layer 'relu9_9' is unknown; valid: relu1_1, relu1_2"),
        (["--fail", "file"], "Error: image not found: nowhere.png"),
        (["--fail", "import"], "Error: this command needs the Python package 'rich'"),
        (["--bogus"], "Error: No such option '--bogus'"),
        (["--weights", "missing.pth"], "Error: Invalid value for '--weights'"),
        (["--device", "tpu"], "Error: Invalid value for '--device': unknown device 'tpu'"),
    ],
)
def test_user_errors_are_one_line_exit_1(args, expected):
    result = CliRunner().invoke(probe, args)
    assert result.exit_code == 1
    assert result.stderr.startswith(expected)
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cuda_without_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(probe, ["--device", "cuda"])
    assert result.exit_code == 1
    assert "CUDA is not available" in result.stderr
    assert result.stderr.count("\n") == 1


def test_debug_shows_the_exception_and_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.delenv("PERCEPTUAL_DEBUG", raising=False)
    result = CliRunner().invoke(probe, ["--debug", "--fail", "value"])
    assert isinstance(result.exception, ValueError)
    result = CliRunner().invoke(probe, ["--fail", "bug"])
    assert isinstance(result.exception, RuntimeError)  # not swallowed into one line
    monkeypatch.setenv("PERCEPTUAL_DEBUG", "1")
    result = CliRunner().invoke(probe, ["--fail", "file"])
    assert isinstance(result.exception, FileNotFoundError)


# ------------------------------------------------------------------ the group
def test_help_lists_every_subcommand():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in LAZY_SUBCOMMANDS:
        assert name in result.stdout
    assert set(LAZY_SUBCOMMANDS) == {
        "compare", "features", "weights", "train", "stylize", "style-optimize", "demo",
    }


def test_unknown_subcommand_lists_the_known_ones():
    result = CliRunner().invoke(cli, ["compre"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: no such command 'compre'; commands: compare,")


def test_help_imports_no_subcommand_module():
    code = textwrap.dedent(
        """
        import sys
        from perceptual_loss.cli import cli
        cli.main(["--help"], standalone_mode=False)
        loaded = [m for m in sys.modules if m.startswith("perceptual_loss.cli.")
                  and m != "perceptual_loss.cli.errors"]
        print("LOADED", loaded)
        """
    )
    done = run_group([sys.executable, "-c", code], env=_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout


def test_missing_module_and_missing_package_give_clean_messages(tmp_path, monkeypatch):
    (tmp_path / "needs_missing_pkg.py").write_text(
        "import not_a_real_package_zz9\n", encoding="utf-8"
    )
    (tmp_path / "not_a_command.py").write_text("thing = 3\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    lazy = LazyGroup(
        name="perceptual",
        lazy_subcommands={
            "gone": ("perceptual_loss.cli.no_such_module:gone", "gone"),
            "needy": ("needs_missing_pkg:cmd", "needs a package"),
            "odd": ("not_a_command:thing", "not a command"),
        },
    )
    runner = CliRunner()
    result = runner.invoke(lazy, ["gone"])
    assert result.exit_code == 1
    assert "'gone' command is not part of this installation" in result.stderr
    result = runner.invoke(lazy, ["needy"])
    assert result.exit_code == 1
    assert "needs the Python package 'not_a_real_package_zz9'" in result.stderr
    assert "pip install 'perceptual-loss[cli]'" in result.stderr
    result = runner.invoke(lazy, ["odd"])
    assert result.exit_code == 1
    assert "is not a click command" in result.stderr
    # --help of the group still works without importing any of them
    result = runner.invoke(lazy, ["--help"])
    assert result.exit_code == 0
    assert "needs a package" in result.stdout


def test_main_and_python_dash_m(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    assert "compare" in capsys.readouterr().out
    done = run_group([sys.executable, "-m", "perceptual_loss", "nope"], env=_env(), timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: no such command 'nope'")
    assert done.stderr.count("\n") == 1


def test_missing_weights_are_reported_in_command_line_words(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", raising=False)
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(image)
    result = CliRunner().invoke(cli, ["compare", str(image), str(image)])
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: weights file vgg16-397923af.pth for vgg16/imagenet")
    assert "downloads are off" in message
    assert "perceptual weights fetch vgg16/imagenet" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "--weights random" in message and "weights=None" not in message


# ------------------------------------------------------------------ missing weights
@pytest.mark.parametrize(("reason", "said"), [
    ("offline", " (downloads are off: PERCEPTUAL_LOSS_OFFLINE is set)."),
    ("download-failed", " (the download failed: no internet?)."),
    ("absent", " is not here. Fetch"),
])
def test_missing_weights_line_says_why_from_the_errors_reason(reason, said, tmp_path):
    from perceptual_loss.weights import WeightsNotFoundError

    # the message text is not read: a reworded library message changes nothing here
    error = WeightsNotFoundError("worded differently", key="vgg16/imagenet",
                                 weights_file="vgg16-397923af.pth", url="https://x/y.pth",
                                 folders=(tmp_path,), reason=reason)
    line = missing_weights_message(error)
    assert line.startswith("Error: weights file vgg16-397923af.pth for vgg16/imagenet")
    assert said in line
    assert "`perceptual weights fetch vgg16/imagenet` (from https://x/y.pth)" in line
    assert f"or copy it into {tmp_path}" in line and line.endswith("--weights random.")
    assert format_user_error(error) == line


def test_other_errors_and_paths_get_no_missing_weights_line(tmp_path):
    from perceptual_loss.weights import WeightsNotFoundError

    assert missing_weights_message(FileNotFoundError("vgg16/imagenet not here")) is None
    path_error = WeightsNotFoundError(f"weights {tmp_path}: no such file", reason="no-such-file")
    assert missing_weights_message(path_error) is None
    assert format_user_error(path_error) == f"Error: weights {tmp_path}: no such file"
