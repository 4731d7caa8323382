import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from perceptual_loss.apps.compare.folders import compare_folders
from perceptual_loss.apps.compare.heatmap import DistanceMapper, perceptual_distance_map
from perceptual_loss.apps.compare.page import sort_metric, worst_first, write_html_report
from perceptual_loss.apps.compare.results import PairScore
from perceptual_loss.apps.compare.scorer import ImageScorer
from perceptual_loss.cli import cli
from perceptual_loss.losses import PerceptualLoss

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HAVE_SELENIUM = importlib.util.find_spec("selenium") is not None
BROWSER_SKIP_REASON = (
    "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) "
    "and selenium (pip install 'perceptual-loss[test]')"
)


def _write_pairs(folder_a, folder_b, count=3, size=(48, 64)):
    """count pairs of increasing difference, plus a grayscale reference for pair 0."""
    rng = np.random.default_rng(0)
    folder_a.mkdir(parents=True, exist_ok=True)
    folder_b.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        base = rng.integers(0, 256, size=(*size, 3)).astype(np.float64)
        base = (base + np.roll(base, 1, 0) + np.roll(base, 1, 1)) / 3  # some structure
        noisy = base + rng.normal(0, 4 + 12 * index, base.shape)
        name = f"img{index}"
        if index == 0:
            Image.fromarray(base.mean(-1).astype(np.uint8)).save(folder_a / f"{name}.png")
        else:
            Image.fromarray(base.astype(np.uint8)).save(folder_a / f"{name}.png")
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder_b / f"{name}.png")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href") and value is not None:
                self.sources.append(value)


def _score(name, **values):
    return PairScore(name, f"a/{name}.png", f"b/{name}.png", 8, 8, values)


def test_worst_first_follows_each_metrics_direction():
    scores = [_score("x", perceptual=0.1, psnr=30.0), _score("y", perceptual=0.3, psnr=math.inf),
              _score("z", perceptual=0.2, psnr=20.0)]
    assert [s.name for s in worst_first(scores, "perceptual")] == ["y", "z", "x"]
    assert [s.name for s in worst_first(scores, "psnr")] == ["z", "x", "y"]  # low PSNR is worse
    assert worst_first(scores, None) == scores
    assert sort_metric(["mse", "psnr", "perceptual", "perceptual/relu1_2", "lpips"]) == \
        "perceptual"
    assert sort_metric(["ssim", "lpips"]) == "lpips"
    assert sort_metric(["psnr"]) == "psnr"


@pytest.mark.parametrize(
    ("metrics", "criterion", "kind"),
    [(["perceptual"], "l1", "perceptual"), (["perceptual"], "mse", "perceptual"),
     (["mse", "perceptual", "lpips"], "l1", "lpips"), (["mse"], "l1", "pixel")],
)
def test_distance_map_averages_to_the_score(metrics, criterion, kind):
    torch.manual_seed(0)
    scorer = ImageScorer(metrics, weights=None, criterion=criterion,
                         layers=["relu1_2", "relu2_2", "relu3_3"])
    image_a = torch.rand(3, 64, 48)
    image_b = (image_a + 0.1 * torch.randn_like(image_a)).clamp(0, 1)
    values = scorer.score(image_a[None], image_b[None])
    mapper = DistanceMapper(scorer)
    distance = mapper(image_a, image_b)
    assert mapper.kind == kind
    assert distance.shape == (64, 48) and float(distance.min()) >= 0
    # the same (random) networks as the scores: the map's mean is the pair's value
    expected = {"perceptual": "perceptual", "lpips": "lpips", "pixel": "mse"}[kind]
    tolerance = 2e-2 if kind == "lpips" else 1e-4  # alexnet's strides do not tile 64x48
    assert float(distance.mean()) == pytest.approx(float(values[expected][0]), rel=tolerance)
    assert float(mapper(image_a, image_a).max()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("criterion", ["charbonnier", "mse"])
def test_heat_map_of_weighted_normalised_charbonnier_averages_to_the_pairs_value(criterion):
    torch.manual_seed(0)
    scorer = ImageScorer(["perceptual"], weights=None, layers=["relu1_2", "relu2_2"])
    # the page draws the map with the scorer's own loss, whatever its settings
    scorer.perceptual = PerceptualLoss(
        weights=None, layers=("relu1_2", "relu2_2", "relu3_3"), layer_weights=(0.5, 3.0, 1.5),
        criterion=criterion, normalize_features=True, charbonnier_eps=0.05, feature_weight=2.0,
        pixel_mse=0.7, reduction="none")
    image_a = torch.rand(3, 32, 40)
    image_b = (image_a + 0.1 * torch.randn_like(image_a)).clamp(0, 1)
    value = scorer.perceptual(image_b[None], image_a[None])
    mapper = DistanceMapper(scorer)
    distance = mapper(image_a, image_b)
    assert mapper.kind == "perceptual" and criterion in mapper.description
    assert distance.shape == (32, 40) and float(distance.min()) >= 0
    assert float(distance.mean()) == pytest.approx(float(value[0]), rel=1e-4)
    # an unweighted L1 map (what the page drew before) is far from this pair's value
    plain = perceptual_distance_map(PerceptualLoss(weights=None, layers=("relu1_2", "relu2_2",
                                                                         "relu3_3")),
                                    image_b[None], image_a[None])
    assert float(plain.mean()) != pytest.approx(float(value[0]), rel=0.1)


def test_heat_map_refuses_terms_without_a_per_pixel_form():
    loss = PerceptualLoss(weights=None, layers=("relu1_2",), style_layers=("relu1_2",))
    image = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="style, SSIM and TV terms have no per-pixel map"):
        perceptual_distance_map(loss, image, image)


def test_report_is_self_contained_and_ordered_worst_first(tmp_path):
    _write_pairs(tmp_path / "a", tmp_path / "b")
    scorer = ImageScorer(["mse", "psnr", "perceptual"], weights=None,
                         layers=["relu1_2", "relu2_2"])
    result = compare_folders(tmp_path / "a", tmp_path / "b", scorer, progress=False)
    out = tmp_path / "report"
    (out / "assets").mkdir(parents=True)
    (out / "assets" / "stale.png").write_bytes(b"old")
    index = write_html_report(out, result.scores, scorer, only_in_a=["lonely"])
    page = index.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(page)
    pictures = [src for src in parser.sources if src.startswith("assets/")]
    assert len(pictures) == 3 * 5 + 1  # a, b, map, swipe a + b per pair; the colour bar
    for source in parser.sources:
        assert not re.match(r"^(https?:)?//", source), source  # nothing from the network
        if not source.startswith(("#", "data:")):
            assert (out / source).is_file(), source
    assert not (out / "assets" / "stale.png").exists()
    assert "<script src" not in page and "{{" not in page
    # worst first by the perceptual distance, in the table and the cards
    names = re.findall(r'<tr data-pair="\d+"><td data-value="([^"]+)"', page)
    by_distance = sorted(result.scores, key=lambda s: -s.values["perceptual"])
    assert names == [s.name for s in by_distance]
    assert re.findall(r'<h3><span class="rank"[^>]*>#\d+</span> (\w+)</h3>', page) == names
    assert 'id="random-weights"' in page and "--weights random" in page
    assert "1 only in A (skipped): lonely" in page
    # the heat maps are coloured pictures of the display size
    heat = Image.open(out / "assets" / f"0000_{names[0]}_map.png")
    thumbnail = Image.open(out / "assets" / f"0000_{names[0]}_a.png")
    assert heat.mode == "RGB" and heat.size == thumbnail.size == (64 * 4, 48 * 4)


def test_report_without_random_weights_has_no_warning(tmp_path):
    _write_pairs(tmp_path / "a", tmp_path / "b", count=1)
    scorer = ImageScorer(["mse", "psnr"], weights="imagenet")  # no network is built
    result = compare_folders(tmp_path / "a", tmp_path / "b", scorer, progress=False)
    page = write_html_report(tmp_path / "r", result.scores, scorer).read_text()
    assert "random-weights" not in page
    assert "Squared pixel difference" in page
    with pytest.raises(ValueError, match="no scores"):
        write_html_report(tmp_path / "r", [], scorer)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        write_html_report(tmp_path / "file", result.scores, scorer)


def test_cli_html_for_two_files_and_for_folders(tmp_path):
    _write_pairs(tmp_path / "a", tmp_path / "b", count=2)
    runner = CliRunner()
    result = runner.invoke(cli, ["compare", str(tmp_path / "a" / "img1.png"),
                                 str(tmp_path / "b" / "img1.png"), "--weights", "random",
                                 "--device", "cpu", "--html", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    assert f"HTML written to {tmp_path / 'one' / 'index.html'}" in result.stderr
    assert (tmp_path / "one" / "index.html").is_file()
    result = runner.invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                 "--weights", "random", "--device", "cpu", "--no-progress",
                                 "--metric", "mse,lpips", "--html", str(tmp_path / "two"),
                                 "--json", "-"])
    assert result.exit_code == 0, result.output
    assert result.stdout.lstrip().startswith("{")  # --json - still owns stdout
    page = (tmp_path / "two" / "index.html").read_text()
    assert "LPIPS (alex) spatial map" in page and page.count('class="card"') == 2


# --------------------------------------------------------------------------------------------
# the page in a real browser
# --------------------------------------------------------------------------------------------
@pytest.fixture
def browser(tmp_path):
    """Headless chromium through selenium; every process it starts is killed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never download a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, popen_kw={"start_new_session": True})
    driver = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(60)
        driver.set_script_timeout(30)
        yield driver
    finally:
        try:
            if driver is not None:
                driver.quit()
        finally:
            process = getattr(service, "process", None)
            if process is not None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # chromedriver and its chromium
                except ProcessLookupError:
                    pass
                try:
                    process.wait(timeout=10)
                except (subprocess.TimeoutExpired, ChildProcessError):
                    pass


def _column(driver, index):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#scores tbody tr'))"
        ".map(r => r.cells[arguments[0]].getAttribute('data-value'));", index)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER and HAVE_SELENIUM), reason=BROWSER_SKIP_REASON)
def test_report_in_headless_chromium(tmp_path, browser):
    _write_pairs(tmp_path / "a", tmp_path / "b", count=4)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--metric", "all", "--weights", "random", "--device",
                                      "cpu", "--no-progress", "--html", str(out)])
    assert result.exit_code == 0, result.output

    browser.get((out / "index.html").as_uri())
    browser.execute_async_script(  # wait until every picture has loaded or failed
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.images).map(i => i.complete ? 0 :"
        " new Promise(r => { i.onload = i.onerror = r; }))).then(() => done(0));")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src);")
    assert broken == []
    cards = browser.execute_script(
        "return Array.from(document.querySelectorAll('.card')).map(c => ["
        "c.querySelector('h3').textContent, c.querySelectorAll('img').length]);")
    assert sorted(name.split()[-1] for name, _ in cards) == [f"img{i}" for i in range(4)]
    assert all(count == 5 for _, count in cards)
    assert browser.find_element("id", "random-weights").is_displayed()

    headers = browser.execute_script(
        "return Array.from(document.querySelectorAll('#scores thead th'))"
        ".map(th => th.getAttribute('data-col'));")
    perceptual = headers.index("perceptual")
    values = [float(v) for v in _column(browser, perceptual)]
    assert values == sorted(values, reverse=True)  # worst first as written
    psnr = headers.index("psnr")
    browser.find_elements("css selector", "#scores thead th button")[psnr].click()
    values = [float(v) for v in _column(browser, psnr)]
    assert values == sorted(values)  # worst (lowest) PSNR first
    order = browser.execute_script(
        "return Array.from(document.querySelectorAll('.card')).map(c => c.id);")
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#scores tbody tr'))"
        ".map(r => 'pair-' + r.getAttribute('data-pair'));")
    assert order == rows  # the cards follow the table
    browser.find_elements("css selector", "#scores thead th button")[psnr].click()
    assert [float(v) for v in _column(browser, psnr)] == sorted(values, reverse=True)
    browser.find_elements("css selector", "#scores thead th button")[0].click()
    assert _column(browser, 0) == [f"img{i}" for i in range(4)]

    position = browser.execute_script(
        "const input = document.querySelector('.swipe input'); input.value = 20;"
        "input.dispatchEvent(new Event('input'));"
        "return input.parentNode.style.getPropertyValue('--pos');")
    assert position.strip() == "20%"

    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] > 0
    browser.execute_script("console.error('probe')")  # the log really records errors
    assert any("probe" in entry["message"] for entry in browser.get_log("browser"))


# --------------------------------------------------------------------------------------------
# --html PAGE.html, and the video page
# --------------------------------------------------------------------------------------------
def _links_resolve(page):
    parser = _Links()
    parser.feed(page.read_text())
    local = [s for s in parser.sources if not s.startswith(("#", "data:"))]
    assert local and all((page.parent / source).is_file() for source in local)
    return local


def test_html_path_ending_in_html_is_the_page_with_its_pictures_beside_it(tmp_path):
    _write_pairs(tmp_path / "a", tmp_path / "b", count=2)
    runner = CliRunner()
    page = tmp_path / "out" / "report.html"
    result = runner.invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                 "--metric", "mse", "--no-progress", "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert page.is_file() and f"HTML written to {page}" in result.stderr
    sources = _links_resolve(page)
    assert all(source.startswith("report_files/") for source in sources)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report_files"]
    folder = tmp_path / "as_folder"
    result = runner.invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                 "--metric", "mse", "--no-progress", "--html", str(folder)])
    assert result.exit_code == 0, result.output
    assert all(s.startswith("assets/") for s in _links_resolve(folder / "index.html"))
    (tmp_path / "taken.html").mkdir()
    result = runner.invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                 "--metric", "mse", "--no-progress", "--html",
                                 str(tmp_path / "taken.html")])
    assert result.exit_code == 1 and "taken.html is a folder" in result.stderr


def _write_frames(folder, frames=4, size=(40, 48)):
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (*size, 3)).astype(np.float64)
    for t in range(frames):
        shifted = np.roll(base, 3 * t, axis=1)
        for side, pixels in (("a", shifted), ("b", shifted + rng.normal(0, 5 + 20 * (t % 2),
                                                                        shifted.shape))):
            (folder / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                folder / side / f"f{t}.png")


def test_video_page_keeps_frame_order_and_plots_every_frame(tmp_path):
    _write_frames(tmp_path, frames=4)
    page = tmp_path / "video.html"
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--video", "--metric", "mse,perceptual", "--weights",
                                      "random", "--device", "cpu", "--no-progress",
                                      "--layers", "relu1_2", "--html", str(page), "--json",
                                      str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    text = page.read_text()
    _links_resolve(page)
    tlp = json.loads((tmp_path / "s.json").read_text())["video"]["tlp"]
    assert f"tLP {tlp:.4g}</strong>" in text
    svg = re.search(r'<svg id="frame-plot".*?</svg>', text, re.S).group(0)
    lines = dict(re.findall(r'<polyline class="([\w-]+)"[^>]*points="([^"]*)"', svg))
    assert len(lines["metric"].split()) == 4  # every frame's perceptual distance
    assert len(lines["tlp"].split()) == 3  # tLP terms of frames 1..3
    assert len(lines["change-a"].split()) == len(lines["change-b"].split()) == 3
    xs = [float(point.split(",")[0]) for point in lines["metric"].split()]
    assert xs == sorted(xs)
    cards = re.findall(r'<section class="card" id="pair-\d+" data-pair="\d+">\n<h3>.*?</span> '
                       r"(\w+)</h3>", text)
    assert cards == ["f0", "f1", "f2", "f3"]  # frame order, not worst first


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER and HAVE_SELENIUM), reason=BROWSER_SKIP_REASON)
def test_video_plot_in_headless_chromium(tmp_path, browser):
    _write_frames(tmp_path, frames=3)
    page = tmp_path / "video.html"
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--video", "--metric", "mse,lpips", "--weights",
                                      "random", "--device", "cpu", "--no-progress",
                                      "--html", str(page)])
    assert result.exit_code == 0, result.output
    browser.get(page.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    box = browser.execute_script(
        "const r = document.getElementById('frame-plot').getBoundingClientRect();"
        "return [r.width, r.height];")
    assert box[0] > 400 and box[1] > 200
    fills = browser.execute_script(
        "return Array.from(document.querySelectorAll('#frame-plot polyline'))"
        ".map(p => getComputedStyle(p).fill);")
    assert fills and all(fill == "none" for fill in fills)  # lines, not filled areas
