import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from perceptual_loss.apps import demo as demo_module
from perceptual_loss.apps.demo import DISTORTIONS, DemoConfig, resolve_demo_weights, run_demo
from perceptual_loss.apps.images.degradations import distort, gaussian_blur
from perceptual_loss.cli import cli

TRAINING_DOCS = Path(__file__).resolve().parents[1] / "docs" / "training.md"
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|inf|nan)"

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


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    """One quick demo run through the command line, offline (random weights)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    patch = pytest.MonkeyPatch()
    try:
        patch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
        patch.setenv("TORCH_HOME", str(out.parent / "torch"))
        patch.setenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", str(out.parent / "none"))
        result = CliRunner().invoke(
            cli, ["demo", "--out", str(out), "--quick", "--no-progress", "--device", "cpu"],
            catch_exceptions=False,
        )
    finally:
        patch.undo()
    return result, out


def test_quick_demo_end_to_end(quick_demo):
    result, out = quick_demo
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
    blur_mse = table["blur sigma 1"]["mse"]
    for label in ("shift 1px", "noise sigma 0.10"):  # each ratio is to the blur's own mean
        assert table[label]["mse / blur 1"] == pytest.approx(table[label]["mse"] / blur_mse)
    # the verdict in the report follows the numbers
    verdict = "**support**" if data["claim_holds"] else "**do not fully support**"
    assert verdict in report
    assert set(data["denoise"]) == {"mse", "mse+perceptual"}


def test_quick_demo_pictures_say_random_weights(quick_demo):
    _, out = quick_demo
    with Image.open(out / "denoise_comparison.png") as picture:
        assert picture.convert("RGB").getpixel((3, 3)) == (253, 226, 226)  # the note's band
    with Image.open(out / "shift_vs_blur.png") as picture:
        top = np.asarray(picture.convert("RGB"))[:40]
    assert (np.abs(top.astype(int) - (253, 232, 232)).sum(-1) <= 3).sum() > 1000  # the box


def test_pictures_are_captioned_with_their_own_numbers(tmp_path, monkeypatch):
    captions = {}

    class Axis:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

        def set_title(self, text, **kwargs):
            captions[len(captions)] = text

    rows = [{"image": image, "distortion": label, "mse": mse, "perceptual": 10 * mse}
            for image, base in (("one", 1.0), ("two", 2.0))
            for mse, (label, _, _) in zip((base, base + 0.5), DISTORTIONS[:2], strict=False)]
    table = {label: {"mse / blur 1": 1.0, "perceptual / blur 1": 1.0}
             for label, _, _ in DISTORTIONS[:2]}
    examples = {name: torch.zeros(3, 4, 4) for name in ("original", *table)}
    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "add_subplot", lambda *a, **k: Axis())
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda *a, **k: None)
    demo_module.distortion_figure(examples, table, rows, tmp_path / "f.png")
    texts = list(captions.values())
    assert texts[0] == "one: original"
    assert "MSE 1\n" in texts[1] and "MSE 1.5\n" in texts[2]  # picture one's, not means
    assert texts[-1].startswith("Means over the 2 sample pictures (one, two)")


def test_demo_restores_the_thread_count(tmp_path):
    before = torch.get_num_threads()
    lines = []
    run_demo(DemoConfig(tmp_path, quick=True, weights=None, progress=False, threads=1),
             echo=lines.append)
    assert lines[0] == "[demo] 1 CPU thread (1 asked for, " + lines[0].split(", ")[1]
    assert torch.get_num_threads() == before


def _demo_section(text: str) -> str:
    start = text.index("## The demo")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def _tables(markdown: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append([row for row in current if not set("".join(row)) <= set("- ")])
            current = []
    return tables


def test_docs_quote_the_report_as_the_demo_writes_it(quick_demo):
    """docs/training.md quotes a real run: its tables and lines must have the report's form."""
    _, out = quick_demo
    report = (out / "report.md").read_text()
    docs = _demo_section(TRAINING_DOCS.read_text(encoding="utf-8"))
    plain = docs.replace("**", "")
    headings = re.findall(r"^## \d+\. (.+)$", report, flags=re.MULTILINE)
    assert len(headings) == 2, headings
    for heading in headings:
        assert heading in plain, f"docs/training.md does not name the section {heading!r}"
    report_tables = {tuple(table[0]): table for table in _tables(report)}
    docs_tables = _tables(docs)
    assert len(docs_tables) >= 2
    for table in docs_tables:
        assert tuple(table[0]) in report_tables, f"no report table has the header {table[0]}"
        written = report_tables[tuple(table[0])]
        assert [row[0] for row in table] == [row[0] for row in written]
        for quoted, row in zip(table[1:], written[1:], strict=True):
            assert len(quoted) == len(row)
            assert all(re.fullmatch(NUMBER, cell) for cell in quoted[1:]), quoted
    quotes = [line[2:] for line in docs.splitlines() if line.startswith("> ")]
    assert quotes, "docs/training.md quotes no line of the report"
    for quote in quotes:
        if quote.startswith("Verdict:"):  # either verdict; which one depends on the run
            pattern = re.escape("Verdict: the numbers **")
        else:
            parts = re.split(NUMBER, quote)
            pattern = NUMBER.join(re.escape(part) for part in parts)
        assert re.search(pattern, report), f"the report has no line like: {quote}"


def test_demo_with_explicit_random_weights_says_why(tmp_path):
    result = run_demo(DemoConfig(tmp_path, quick=True, weights=None, progress=False),
                      echo=lambda _: None)
    assert result.weights_used is None
    assert "asked for" in result.weights_note
    assert result.report.read_text().count("RANDOM VGG WEIGHTS") == 1
