"""Stand-ins for the docs test: the tensors, files and weights that documented examples use.

Every name a documented Python block uses without defining it, and every file a documented
command reads, is defined here once. Weights are random-weight files written under the
official file names; the registry entries' digests are replaced by the stand-ins' own for the
test only (in this process with ``monkeypatch``, in child processes by
``docs_site/sitecustomize.py``), so the library's hash check runs as it does for users.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from perceptual_loss import weights as weights_module
from perceptual_loss.backbones import get_backbone
from perceptual_loss.weights import RANDOM_WEIGHTS_SEED, build_random, get_weight_spec

SITE_DIR = Path(__file__).resolve().parent / "docs_site"
IMAGE_SIDE = 64


def _rand(*shape: int, seed: int, grad: bool = False, low: float = 0.0, high: float = 1.0
          ) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = low + (high - low) * torch.rand(*shape, generator=generator)
    return x.requires_grad_(grad)


class MyResNet(nn.Module):
    """A small network of one's own with a ResNet's module names (``layer2.0.relu``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        block = nn.Sequential()
        block.add_module("conv", nn.Conv2d(8, 16, 3, stride=2, padding=1))
        block.add_module("relu", nn.ReLU())
        self.layer2 = nn.Sequential(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(self.layer1(self.stem(x)))


def tensors() -> dict[str, Any]:
    """Image batches ``(N, C, H, W)`` in ``[0, 1]``; predictions record gradients."""
    side = IMAGE_SIDE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        my_net = MyResNet()
    return {
        "prediction": _rand(2, 3, side, side, seed=1, grad=True),
        "target": _rand(2, 3, side, side, seed=2),
        "a": _rand(2, 3, side, side, seed=3), "b": _rand(2, 3, side, side, seed=4),
        "sr": _rand(2, 3, side, side, seed=5, grad=True), "hr": _rand(2, 3, side, side, seed=6),
        "stylized": _rand(1, 3, side, side, seed=7, grad=True),
        "content": _rand(1, 3, side, side, seed=8),
        "style_image": _rand(1, 3, side, side, seed=9),
        "denoised_ct": _rand(2, 1, side, side, seed=10, grad=True),
        "full_dose_ct": _rand(2, 1, side, side, seed=11),
        "big_a": _rand(1, 3, 96, 96, seed=12), "big_b": _rand(1, 3, 96, 96, seed=13),
        "pred_hu": _rand(1, 1, 16, 32, 32, seed=14, grad=True, low=-1000, high=1000),
        "target_hu": _rand(1, 1, 16, 32, 32, seed=15, low=-1000, high=1000),
        "my_net": my_net, "MyResNet": MyResNet,
    }


def volumes() -> dict[str, Any]:
    """CT volumes ``(N, 1, D, H, W)``: in Hounsfield units, as stored, and windowed."""
    shape = (1, 1, 16, 32, 32)
    return {
        "predicted_hu": _rand(*shape, seed=20, grad=True, low=-1000, high=1000),
        "hu": _rand(*shape, seed=21, low=-1000, high=1000),
        "stored_pixels": torch.round(_rand(*shape, seed=22, low=0, high=2000)),
        "output": _rand(*shape, seed=23, grad=True),
        "target": _rand(*shape, seed=24),
    }


def keras_data() -> dict[str, Any]:
    """Channels-last numpy batches and a tiny image-to-image Keras model."""
    import keras

    def unet_model(shape: tuple[int, int, int] = (32, 32, 3)) -> keras.Model:
        inputs = keras.Input(shape)
        hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
        outputs = keras.layers.Conv2D(shape[-1], 3, padding="same", activation="sigmoid")(hidden)
        return keras.Model(inputs, outputs)

    rng = np.random.default_rng(0)
    batch = rng.random((4, 32, 32, 3), dtype=np.float32)
    return {
        "unet_model": unet_model, "model": unet_model((32, 32, 3)),
        "x_train": batch, "y_train": rng.random((4, 32, 32, 3), dtype=np.float32),
        "x_test": batch[:2], "content_images": batch,
        "style_image": rng.random((32, 32, 3), dtype=np.float32),
    }


def clips() -> dict[str, Any]:
    """Video clips ``(N, T, C, H, W)`` in ``[0, 1]``; the prediction records gradients."""
    return {"prediction": _rand(1, 4, 3, 32, 32, seed=30, grad=True),
            "target": _rand(1, 4, 3, 32, 32, seed=31)}


NAMESPACES = {"tensors": tensors, "volumes": volumes, "keras": keras_data, "clips": clips}


def write_image_files(folder: Path) -> None:
    """Every image file and folder the documented commands read, small (64x64 or 48x48)."""
    rng = np.random.default_rng(0)

    def save(name: str, side: int = IMAGE_SIDE, gray: bool = False) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (side, side) if gray else (side, side, 3)
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)

    for name in ("ref.png", "out.png", "a.png", "b.png", "photo.png", "photo.jpg",
                 "content.jpg", "style.jpg", "starry.jpg", "starry-night.jpg", "painting.jpg"):
        save(name)
    save("ct.png", gray=True)
    for index in range(3):
        save(f"refs/img{index:02d}.png")
        save(f"outputs/img{index:02d}.png")
        save(f"photos/photo{index}.png", 48)
        save(f"more_photos/photo{index}.png", 48)
        save(f"coco_subset/image{index}.jpg", 48)
        save(f"DIV2K_train_HR/{index:04d}.png", 64)
        save(f"Set5/image{index}.png", 64)
        save(f"ct_slices/slice{index}.png", 48, gray=True)


# ------------------------------------------------------------------------- weight stand-ins
def registry_key(name: str) -> str:
    """``vgg16`` -> ``vgg16/imagenet``; keys and medical network names are kept."""
    return name if "/" in name or name.startswith(("medicalnet", "radimagenet")) \
        else f"{name}/imagenet"


def _digest(path: Path, algorithm: str) -> str:
    return hashlib.new(algorithm, path.read_bytes()).hexdigest()


def write_weight_standin(name: str, folder: Path) -> tuple[str, str] | None:
    """Write a random-weight file for ``name`` into ``folder`` under its official file name.

    Returns:
        ``(registry key, digest)`` for files the registry hash-checks; ``None`` for the
        local-only medical files.
    """
    from perceptual_loss.medical import MEDICAL_NETWORKS

    key = registry_key(name)
    if key in MEDICAL_NETWORKS:
        preset = MEDICAL_NETWORKS[key]
        key = preset.spec.weights[preset.backbone_weights]
    spec = get_weight_spec(key)
    if spec.local_only:
        path = folder / spec.filename
        if not path.exists():
            trunk = build_random(get_backbone(spec.backbone).build_features)
            torch.save(trunk.state_dict(), path)
        return None
    path = folder / spec.filename
    if not path.exists():
        if spec.file_format == "keras_h5":
            from keras_helpers import write_legacy_vgg16_h5

            if spec.backbone != "vgg16":
                raise ValueError(f"no Keras stand-in for {key}; only vgg16/keras-imagenet")
            write_legacy_vgg16_h5(path)
        else:
            trunk = build_random(get_backbone(spec.backbone).build_features)
            torch.save(trunk.state_dict(), path)
    return key, _digest(path, spec.hash_algorithm)


def accept_standins(monkeypatch: Any, digests: dict[str, str]) -> None:
    """Replace the registry entries of ``digests`` by copies holding the stand-ins' digests."""
    items = weights_module._REGISTRY._items
    for key, digest in digests.items():
        monkeypatch.setitem(items, key, dataclasses.replace(items[key], hash_value=digest))
