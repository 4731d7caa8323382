"""Train a Keras U-Net with a VGG16 perceptual loss plus pixel MSE, then predict with it.

The Keras workflow of the Qiita article "Kerasで学習済みVGGを使ったPerceptual Lossを導入する",
without its workarounds:

- no wrapper model (``Model(transfer_model.input, loss_model(transfer_model.output))``): the
  U-Net is compiled as it is, and the frozen VGG16 lives inside the loss;
- no precomputed target features (``loss_model.predict(y_train)``): ``fit`` takes the target
  images, and the loss sends them through VGG16 itself;
- no layer indices (``vgg_model.layers[i]`` for ``[2, 9, 18]``): the layers are named
  (``block1_conv2``, ``block3_conv3``, ``block5_pool``, the same three);
- the pixel MSE term the article could not add ("a model's input cannot be its output") is
  one argument, ``pixel_mse=1.0``, in the same ``compile``;
- no ``full_model.layers[50]`` to find the trained network: ``model.predict`` gives images.

The default task is denoising (noisy crop -> clean crop); any image-to-image pairs work.
``--task style`` is the style-conversion variant: the U-Net learns to repaint its input in
the colours and textures of one style image, with content layers against the input itself
and the style image's Gram matrices cached once (``loss.set_style_target``), so ``fit(x, x)``
is all it takes.

Usage (the Keras ImageNet VGG16 file is downloaded to ~/.keras/models or the torch hub cache
on first use; ``--weights`` also takes a local .h5/.weights.h5/.keras/.pth file, or ``none``
for random). Keras' own default backend is TensorFlow; without ``KERAS_BACKEND`` this example
takes TensorFlow, else JAX, else torch, whichever is installed::

    python examples/keras_unet.py --data path/to/images --epochs 5
    python examples/keras_unet.py --task style --style-image painting.jpg --epochs 5
    KERAS_BACKEND=jax python examples/keras_unet.py --size 32 --pairs 8 --epochs 1 --weights none
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from pathlib import Path

import numpy as np

if "KERAS_BACKEND" in os.environ:
    BACKEND_REASON = "KERAS_BACKEND is set"
else:  # Keras' default, TensorFlow, where it is installed; said aloud when it is not
    os.environ["KERAS_BACKEND"] = next(
        (name for name in ("tensorflow", "jax") if importlib.util.find_spec(name)), "torch")
    BACKEND_REASON = ("KERAS_BACKEND is not set: Keras' default" if os.environ["KERAS_BACKEND"]
                      == "tensorflow" else "KERAS_BACKEND is not set and TensorFlow is not "
                      "installed: the first installed of jax, torch")
print(f"Keras backend: {os.environ['KERAS_BACKEND']} ({BACKEND_REASON})", flush=True)

import keras  # noqa: E402

from perceptual_loss.keras import PerceptualLoss  # noqa: E402

# The article's select_layers = [2, 9, 18] of keras.applications.VGG16(include_top=False),
# by name.
ARTICLE_LAYERS = ("block1_conv2", "block3_conv3", "block5_pool")
# Style conversion (Johnson et al.): content at one layer, style at four.
STYLE_CONTENT_LAYERS = ("block3_conv3",)
STYLE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("denoise", "style"), default="denoise",
                        help="denoise noisy crops, or repaint crops in the style of one image")
    parser.add_argument("--style-image", type=Path, default=None,
                        help="--task style: the style image (default: synthetic stripes)")
    parser.add_argument("--style-weight", type=float, default=1e3,
                        help="--task style: weight of the Gram-matrix term")
    parser.add_argument("--data", type=Path, default=None,
                        help="folder of clean images (default: scikit-image's sample pictures, "
                             "or synthetic ones if scikit-image is absent)")
    parser.add_argument("--size", type=int, default=128, help="crop size in pixels")
    parser.add_argument("--pairs", type=int, default=32, help="training pairs (random crops)")
    parser.add_argument("--test-pairs", type=int, default=4, help="held-out pairs to predict")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--width", type=int, default=16, help="channels of the first U-Net level")
    parser.add_argument("--depth", type=int, default=3, help="U-Net levels (downsamplings + 1)")
    parser.add_argument("--noise", type=float, default=0.1, help="noise sigma in [0, 1] units")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="VGG16 content layers, Keras or our names (default: the article's "
                             "three for denoising, block3_conv3 for style)")
    parser.add_argument("--pixel-mse", type=float, default=1.0, help="weight of pixel MSE")
    parser.add_argument("--weights", default="keras-imagenet",
                        help="'keras-imagenet', 'imagenet' (torchvision), a .h5/.pth path, "
                             "or 'none' for random weights")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="save noisy | predicted | clean rows as a PNG here")
    args = parser.parse_args(argv)
    if args.size < 2 ** (args.depth - 1):
        parser.error(f"--size {args.size} is too small for a U-Net of --depth {args.depth}")
    if args.size % 2 ** (args.depth - 1):
        parser.error(f"--size must be a multiple of {2 ** (args.depth - 1)} for --depth "
                     f"{args.depth}")
    return args


def load_clean_images(folder: Path | None, rng: np.random.Generator) -> list[np.ndarray]:
    """RGB float32 images in [0, 1], (H, W, 3)."""
    if folder is not None:
        from PIL import Image

        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SystemExit(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
        return [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255.0
                for p in paths]
    try:
        from skimage import data as samples
    except ImportError:
        return [_synthetic_image(rng) for _ in range(4)]
    return [samples.astronaut() / 255.0, samples.coffee() / 255.0, samples.chelsea() / 255.0]


def _synthetic_image(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Smooth colour gradients with a few discs: edges and flat areas to denoise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.stack([xx, yy, 1 - xx * yy], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.random(3) * [size, size, size / 4]
        mask = (np.mgrid[0:size, 0:size][0] - cy) ** 2 + (np.mgrid[0:size, 0:size][1] - cx) ** 2
        image[mask < r * r] = rng.random(3)
    return image.astype(np.float32)


def make_pairs(images: list[np.ndarray], count: int, size: int, noise: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random crops: (noisy, clean), each ``(count, size, size, 3)`` in [0, 1]."""
    clean = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        image = images[int(rng.integers(len(images)))]
        if min(image.shape[:2]) < size:
            raise SystemExit(f"an image of {image.shape[1]}x{image.shape[0]} is smaller than "
                             f"--size {size}")
        top = int(rng.integers(image.shape[0] - size + 1))
        left = int(rng.integers(image.shape[1] - size + 1))
        clean[i] = image[top:top + size, left:left + size, :3]
    noisy = np.clip(clean + noise * rng.standard_normal(clean.shape), 0.0, 1.0)
    return noisy.astype(np.float32), clean


def unet_model(shape: tuple[int, int, int], width: int = 16, depth: int = 3) -> keras.Model:
    """A plain U-Net: (N, H, W, 3) in [0, 1] -> (N, H, W, 3) in [0, 1] (sigmoid output)."""
    layers = keras.layers
    inputs = keras.Input(shape=shape, name="noisy")
    x = inputs
    skips = []
    for level in range(depth):
        channels = width * 2 ** level
        x = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
        if level < depth - 1:
            skips.append(x)
            x = layers.MaxPooling2D(2)(x)
    for level in reversed(range(depth - 1)):
        channels = width * 2 ** level
        x = layers.Conv2DTranspose(channels, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skips[level]])
        x = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(channels, 3, padding="same", activation="relu")(x)
    outputs = layers.Conv2D(shape[-1], 1, activation="sigmoid", name="image")(x)
    return keras.Model(inputs, outputs, name="unet")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of images in [0, 1], in dB."""
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def style_image(path: Path | None, size: int) -> np.ndarray:
    """The style image, ``(1, H, W, 3)`` in [0, 1]: a file, or diagonal colour stripes."""
    if path is not None:
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"), np.float32)[None] / 255.0
    yy, xx = np.mgrid[0:size, 0:size]
    phase = 2 * np.pi * (xx + yy) / max(size / 4, 2)
    stripes = np.stack([0.5 + 0.5 * np.sin(phase + shift) for shift in (0, 2, 4)], axis=-1)
    return stripes[None].astype(np.float32)


def build_loss(args: argparse.Namespace) -> PerceptualLoss:
    """The perceptual loss of the task: one object for everything the article hand-built."""
    weights = None if args.weights.lower() == "none" else args.weights
    if args.task == "style":
        loss = PerceptualLoss("vgg16", layers=args.layers or STYLE_CONTENT_LAYERS,
                              style_layers=STYLE_LAYERS, style_weight=args.style_weight,
                              tv_weight=1e-2, weights=weights)
        # Cached once: every step compares against these Grams, whatever y_true is.
        loss.set_style_target(style_image(args.style_image, args.size))
        return loss
    return PerceptualLoss("vgg16", layers=args.layers or ARTICLE_LAYERS, weights=weights,
                          pixel_mse=args.pixel_mse)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    images = load_clean_images(args.data, rng)
    x_train, y_train = make_pairs(images, args.pairs, args.size, args.noise, rng)
    x_test, y_test = make_pairs(images, args.test_pairs, args.size, args.noise, rng)
    if args.task == "style":  # the content to repaint is the input itself: fit(x, x)
        x_train, x_test = y_train, y_test

    loss = build_loss(args)
    model = unet_model((args.size, args.size, 3), args.width, args.depth)
    # One compile: the feature loss (and pixel MSE, or the cached style) on the plain U-Net.
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=loss)

    loss_before = float(model.evaluate(x_test, y_test, verbose=0))
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        verbose=2)
    loss_after = float(model.evaluate(x_test, y_test, verbose=0))
    predicted = model.predict(x_test, verbose=0)  # the trained U-Net itself gives images
    parts = {name: float(keras.ops.convert_to_numpy(value))
             for name, value in loss.compute_parts(y_test, predicted).items()}

    print(f"backend {keras.backend.backend()}, task {args.task}, VGG16 weights "
          f"{loss.weights}, layers {loss.layers}")
    print(f"test loss {loss_before:.4f} before training, {loss_after:.4f} after "
          f"{args.epochs} epoch(s)")
    print("terms after training: " + ", ".join(f"{k} {v:.4f}" for k, v in parts.items()))
    if args.task == "denoise":
        print(f"PSNR noisy {psnr(x_test, y_test):.2f} dB, predicted "
              f"{psnr(predicted, y_test):.2f} dB")
    if args.out is not None:
        save_rows(args.out, x_test, predicted, y_test)
        print(f"saved {args.out}")
    return {"loss_before": loss_before, "loss_after": loss_after,
            "train_loss": list(history.history["loss"]), "parts": parts,
            "predicted": predicted, "model": model, "backend": keras.backend.backend()}


def save_rows(path: Path, *rows: np.ndarray) -> None:
    """Save image batches as rows of one PNG (one column per sample)."""
    from PIL import Image

    grid = np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


if __name__ == "__main__":
    from perceptual_loss import WeightsNotFoundError

    try:
        main(sys.argv[1:])
    except WeightsNotFoundError as err:  # offline without the file: say where to put it
        raise SystemExit(f"error: {err}") from None
