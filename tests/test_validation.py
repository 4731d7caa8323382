"""Nothing silently wrong: bad options and inputs end in a clear error, never a wrong number.

One test per class of failure an adversarial pass found (options without meaning, tiled
batches, the functional form's order of checks, weight-file values, dtype drift, double
backward, downloads killed midway), each written to fail on the code before the fix.
"""

from __future__ import annotations

import hashlib
import http.server
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from perceptual_loss import LPIPS, PerceptualLoss, perceptual_loss
from perceptual_loss.apps.train.checkpoints import CHECKPOINT_FORMAT, load_checkpoint
from perceptual_loss.backbones import get_backbone
from perceptual_loss.frozen import copy_frozen_weights
from perceptual_loss.functional_loss import _cached_loss
from perceptual_loss.metrics.lpips import load_lpips_heads
from perceptual_loss.weights import (
    WeightsIntegrityError,
    WeightSpec,
    partial_path,
    register_weights,
    resolve_weight_file,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "vgg11", "layers": ("relu1_1", "relu2_1"), "weights": None}


def _images(n=2, c=3, size=16, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, c, size, size, generator=generator, dtype=dtype),
            torch.rand(n, c, size, size, generator=generator, dtype=dtype))


# ------------------------------------------------------------------ options without meaning
@pytest.mark.parametrize("option", ["feature_weight", "style_weight", "pixel_mse", "pixel_l1",
                                    "ssim_weight", "tv_weight", "charbonnier_eps"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_negative_nan_or_infinite_term_weights_are_refused(option, value):
    with pytest.raises(ValueError, match=rf"{option} must be a finite number >= 0"):
        PerceptualLoss(**TINY, **{option: value})


@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf")])
def test_bad_layer_weights_are_refused_by_position_and_by_name(value):
    with pytest.raises(ValueError, match=r"layer_weights\[1\] must be a finite number"):
        PerceptualLoss(**TINY, layer_weights=[1.0, value])
    with pytest.raises(ValueError, match=r"style_layer_weights\['relu1_1'\] must be"):
        PerceptualLoss(**TINY, style_layers=("relu1_1",),
                       style_layer_weights={"relu1_1": value})


@pytest.mark.parametrize("input_range", [(0, float("inf")), (float("-inf"), 1), (1, 0), (2, 2),
                                         (0, float("nan"))])
def test_bad_ranges_are_refused_even_without_feature_layers(input_range):
    with pytest.raises(ValueError, match="input_range must"):
        PerceptualLoss(**TINY, input_range=input_range)
    with pytest.raises(ValueError, match="input_range must"):
        PerceptualLoss(layers=(), weights=None, pixel_mse=1.0, input_range=input_range)


def test_pixel_only_loss_checks_the_declared_range():
    loss_fn = PerceptualLoss(layers=(), weights=None, pixel_mse=1.0)
    x, y = _images()
    with pytest.raises(ValueError,
                       match=r"prediction has values in \[.*, 255\] but input_range=\(0, 1\)"):
        loss_fn(x * 255, y)


def test_unknown_options_name_the_nearest_valid_one():
    with pytest.raises(TypeError, match=r"unknown option 'pixel_ms'.*'pixel_mse'"):
        PerceptualLoss(**TINY, pixel_ms=1.0)
    x, y = _images()
    with pytest.raises(TypeError, match=r"unknown option 'style_wieght'"):
        perceptual_loss(x, y, **TINY, style_wieght=2.0)


# ------------------------------------------------------------------ batches that do not fit
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_a_cached_target_of_another_batch_size_is_refused_not_tiled(chunk_size):
    loss_fn = PerceptualLoss(**TINY, chunk_size=chunk_size)
    target, _ = _images(n=2)
    prediction, _ = _images(n=4, seed=1)
    loss_fn.set_target(target)
    with pytest.raises(ValueError, match=r"cache one image \(batch 1.*or exactly 4"):
        loss_fn(prediction)


@pytest.mark.parametrize("chunk_size", [None, 1])
def test_a_cached_single_target_is_shared_by_every_sample(chunk_size):
    loss_fn = PerceptualLoss(**TINY, pixel_mse=1.0, chunk_size=chunk_size, reduction="none")
    target, prediction = _images(n=1)[0], _images(n=3, seed=2)[0]
    expected = loss_fn(prediction, target.expand(3, -1, -1, -1))
    loss_fn.set_target(target)
    torch.testing.assert_close(loss_fn(prediction), expected)


# ------------------------------------------------------------------ the functional form
def test_functional_form_checks_inputs_before_any_cast_or_cache():
    x, y = _images()
    with pytest.raises(TypeError, match=r"prediction has dtype torch.int64.*float"):
        perceptual_loss((x * 255).long(), y, **TINY)
    with pytest.raises(TypeError, match=r"prediction must be a torch.Tensor.*got list"):
        perceptual_loss(x.tolist(), y, **TINY)


def test_functional_form_accepts_list_options_and_pure_style():
    x, y = _images()
    _cached_loss.cache_clear()
    torch.manual_seed(0)
    value = perceptual_loss(x, y, **TINY, layer_weights=[0.5, 2.0])
    torch.manual_seed(0)
    torch.testing.assert_close(value, PerceptualLoss(**TINY, layer_weights=(0.5, 2.0))(x, y))
    style = {"backbone": "vgg11", "weights": None, "layers": (), "style_layers": ("relu1_1",)}
    torch.manual_seed(0)
    style_only = perceptual_loss(x, y, **{**style, "style_layers": ["relu1_1"]})
    torch.manual_seed(0)
    expected = PerceptualLoss(**style)
    assert expected.layers == ()
    torch.testing.assert_close(style_only, expected(x, y))


# ------------------------------------------------------------------ weight files
def _vgg11_state() -> dict[str, torch.Tensor]:
    return get_backbone("vgg11").build_features().state_dict()


def test_weight_files_with_integer_or_non_finite_tensors_are_refused(tmp_path):
    state = _vgg11_state()
    state["0.weight"] = state["0.weight"].round().to(torch.int32)
    path = tmp_path / "int.pth"
    torch.save(state, path)
    with pytest.raises(WeightsIntegrityError, match=rf"{path.name}.*'0.weight' has dtype "
                                                    r"torch.int32"):
        PerceptualLoss("vgg11", layers=("relu1_1",), weights=path)
    state = _vgg11_state()
    state["3.bias"][0] = float("nan")
    torch.save(state, path)
    with pytest.raises(WeightsIntegrityError, match=rf"{path.name}.*'3.bias' holds NaN or Inf"):
        PerceptualLoss("vgg11", layers=("relu1_1",), weights=path)


def test_bad_lpips_heads_files_are_named(tmp_path):
    garbage = tmp_path / "heads.pth"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=rf"cannot read LPIPS heads file .*{garbage.name}"):
        load_lpips_heads("alex", path=garbage)
    with pytest.raises(FileNotFoundError, match="LPIPS heads file not found"):
        load_lpips_heads("alex", path=tmp_path / "missing.pth")
    heads = {f"lin{i}.model.1.weight": torch.ones(1, c, 1, 1) for i, c in
             enumerate((64, 192, 384, 256, 256))}
    heads["lin2.model.1.weight"][0, 0] = float("inf")
    torch.save(heads, garbage)
    with pytest.raises(ValueError, match=r"'lin2.model.1.weight' holds NaN or Inf"):
        LPIPS("alex", weights=None, heads=garbage)


def test_a_checkpoint_lacking_a_key_is_named_not_a_key_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "task": {}, "model_config": {}, "model": {},
                "step": 3, "history": []}, path)
    with pytest.raises(ValueError, match=rf"{path.name} lacks 'optimizer'"):
        load_checkpoint(path)


# ------------------------------------------------------------------ dtype
def test_a_double_loss_with_every_term_stays_double_and_passes_gradcheck():
    loss_fn = PerceptualLoss("vgg11", layers=("relu1_1",), weights=None,
                             style_layers=("relu1_1",), pixel_mse=1.0, pixel_l1=0.5,
                             ssim_weight=0.5, tv_weight=0.1, memory="plain",
                             check_values=False).double()
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.rand(1, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    value, parts = loss_fn(x, y, return_parts=True)
    assert value.dtype == torch.float64
    assert all(part.dtype == torch.float64 for part in parts.values())
    # L1 has a kink at 0 and nowhere near it here; everything else is smooth.
    assert torch.autograd.gradcheck(lambda p: loss_fn(p, y), (x.requires_grad_(),),
                                    eps=1e-6, atol=1e-5)


def test_an_ssim_only_loss_returns_the_loss_dtype():
    loss_fn = PerceptualLoss(layers=(), weights=None, ssim_weight=1.0).double()
    x, y = _images(size=16, dtype=torch.float64)
    assert loss_fn(x, y).dtype == torch.float64


# ------------------------------------------------------------------ double backward
def test_double_backward_names_the_plain_path_and_the_plain_path_supports_it():
    x, y = _images(n=1)
    x.requires_grad_()
    lean = PerceptualLoss(**TINY)
    with pytest.raises(RuntimeError, match=r"memory=\"plain\""):
        torch.autograd.grad(lean(x, y), x, create_graph=True)
    plain = PerceptualLoss(**TINY, memory="plain")
    copy_frozen_weights(lean, plain)
    (grad,) = torch.autograd.grad(plain(x, y), x, create_graph=True)
    grad.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all()


# ------------------------------------------------------------------ downloads killed midway
class _SlowHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    delay = 0.0

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        for start in range(0, len(self.payload), 1 << 16):
            self.wfile.write(self.payload[start:start + (1 << 16)])
            self.wfile.flush()
            time.sleep(self.delay)

    def log_message(self, *args):  # quiet
        pass


def _serve(payload: bytes, delay: float):
    handler = type("Handler", (_SlowHandler,), {"payload": payload, "delay": delay})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.timeout(120)
def test_a_killed_download_leaves_no_partial_file_after_the_next_attempt(tmp_path, monkeypatch):
    payload = os.urandom(1 << 20)
    digest = hashlib.sha256(payload).hexdigest()
    name = f"killed-{digest[:8]}.pth"
    spec = register_weights(WeightSpec(
        key=f"test-download/{digest[:8]}", backbone="vgg11", filename=name,
        url=f"https://example.invalid/{name}", file_format="torch", hash_algorithm="sha256",
        hash_value=digest[:8], normalization="imagenet", license="test"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"),
           "PERCEPTUAL_LOSS_WEIGHTS_DIR": str(tmp_path / "none")}
    slow = _serve(payload, delay=0.5)
    try:
        env["PERCEPTUAL_LOSS_MIRROR"] = f"http://127.0.0.1:{slow.server_address[1]}"
        code = ("from perceptual_loss.weights import WeightSpec, register_weights, "
                "resolve_weight_file\n"
                f"spec = register_weights(WeightSpec(**{spec.__dict__!r}))\n"
                "resolve_weight_file(spec, progress=False)\n")
        child = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not list(cache.glob(f"{name}.*.partial")) and time.monotonic() < deadline:
                time.sleep(0.1)
            partials = list(cache.glob(f"{name}.*.partial"))
            assert partials, "the download never started"
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        assert list(cache.glob(f"{name}.*.partial")) == partials  # left behind by the kill
    finally:
        slow.shutdown()
    fast = _serve(payload, delay=0.0)
    try:
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", str(tmp_path / "none"))
        monkeypatch.setenv("PERCEPTUAL_LOSS_MIRROR", f"http://127.0.0.1:{fast.server_address[1]}")
        path = resolve_weight_file(spec, progress=False)
    finally:
        fast.shutdown()
    assert path.read_bytes() == payload
    assert list(cache.glob("*.partial")) == []
    assert partial_path(path).name.endswith(".partial")


def test_weight_values_are_checked_for_finiteness_cheaply():
    state = _vgg11_state()
    assert all(torch.isfinite(v).all() for v in state.values())
    assert not math.isnan(float(state["0.weight"].sum()))
