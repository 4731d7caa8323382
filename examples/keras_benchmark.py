"""Time one training step: this package's Keras loss against a hand-written VGG16 feature loss.

Both losses do the same work per step, the Keras article's: VGG16 features at
``block1_conv2``, ``block3_conv3`` and ``block5_pool`` of the target and of the prediction
(Caffe preprocessing, the same weights file), the mean squared difference per layer, plus a
pixel MSE, on the same U-Net, optimizer, batch and backend. The hand-written one is what the
article builds by hand: ``keras.applications.VGG16`` cut at those layers, frozen, called
inside a loss function. Each measurement runs in a fresh process, and the implementations
alternate (in a rotating order) so a busy machine shows in every median alike.

Usage::

    python examples/keras_benchmark.py                  # TensorFlow, 3 rounds
    KERAS_BACKEND=jax python examples/keras_benchmark.py --rounds 5 --size 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAYERS = ("block1_conv2", "block3_conv3", "block5_pool")
IMPLEMENTATIONS = ("handwritten", "perceptual_loss", "perceptual_loss_no_check")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per implementation")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (tracing) first")
    parser.add_argument("--size", type=int, default=96, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--backend", default=os.environ.get("KERAS_BACKEND", "tensorflow"))
    parser.add_argument("--child", choices=("weights", *IMPLEMENTATIONS), help=argparse.SUPPRESS)
    parser.add_argument("--weights-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------- one process
def child(args: argparse.Namespace) -> dict[str, object]:
    """Run in a fresh interpreter: write the weights, or time one implementation."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    if args.child == "weights":
        keras.applications.VGG16(include_top=False, weights=None).save_weights(
            args.weights_file)
        return {}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from keras_unet import unet_model

    if args.child == "handwritten":
        loss = handwritten_loss(args.weights_file, args.size)
    else:
        from perceptual_loss.keras import PerceptualLoss

        loss = PerceptualLoss("vgg16", layers=LAYERS, weights=args.weights_file,
                              criterion="mse", pixel_mse=1.0,
                              check_values=args.child == "perceptual_loss")
    model = unet_model((args.size, args.size, 3), 16, 3)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.size, args.size, 3)
    x, y = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
    for _ in range(args.warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        value = model.train_on_batch(x, y)  # returns the loss as a number: the step is done
        times.append(time.perf_counter() - start)
    return {"implementation": args.child, "median_s": statistics.median(times),
            "backend": keras.backend.backend(), "loss": float(np.asarray(value))}


def handwritten_loss(weights_file: Path, size: int):  # noqa: ANN201 - a Keras loss function
    """The article's loss by hand: a frozen ``keras.applications.VGG16`` cut at ``LAYERS``."""
    import keras

    ops = keras.ops
    vgg = keras.applications.VGG16(include_top=False, weights=None,
                                   input_shape=(size, size, 3))
    vgg.load_weights(weights_file)
    vgg.trainable = False
    features = keras.Model(vgg.input, [vgg.get_layer(name).output for name in LAYERS])
    features.trainable = False
    preprocess = keras.applications.vgg16.preprocess_input

    def loss(y_true, y_pred):  # noqa: ANN001, ANN202
        target = features(preprocess(y_true * 255.0))
        predicted = features(preprocess(y_pred * 255.0))
        total = ops.mean(ops.square(y_pred - y_true), axis=(1, 2, 3))
        for p, t in zip(predicted, target, strict=True):
            total = total + ops.mean(ops.square(p - ops.stop_gradient(t)), axis=(1, 2, 3))
        return total

    return loss


# ---------------------------------------------------------------------------- the driver
def run_child(args: argparse.Namespace, kind: str, weights_file: Path) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", kind, "--weights-file", str(weights_file),
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--size", str(args.size), "--batch-size", str(args.batch_size)]
    environment = {**os.environ, "KERAS_BACKEND": args.backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment,
                            timeout=1800, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()}"


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return {}
    with tempfile.TemporaryDirectory() as folder:
        weights_file = Path(folder) / "vgg16_random.weights.h5"
        run_child(args, "weights", weights_file)
        medians: dict[str, list[float]] = {kind: [] for kind in IMPLEMENTATIONS}
        for round_index in range(args.rounds):
            shift = round_index % len(IMPLEMENTATIONS)
            for kind in IMPLEMENTATIONS[shift:] + IMPLEMENTATIONS[:shift]:
                report = run_child(args, kind, weights_file)
                medians[kind].append(float(report["median_s"]))
                print(f"round {round_index + 1}: {kind:26s} {report['median_s'] * 1e3:8.1f} ms "
                      f"per step (loss {report['loss']:.4g})", flush=True)
    summary = {kind: statistics.median(values) for kind, values in medians.items()}
    base = summary["handwritten"]
    print(f"\n{args.backend}, {args.batch_size}x{args.size}x{args.size} images, "
          f"{args.rounds} fresh processes each, {args.steps} timed steps per process; "
          f"{machine()}")
    for kind, value in summary.items():
        print(f"  {kind:26s} {value * 1e3:8.1f} ms per step  ({value / base:.3f}x handwritten)")
    return {"medians": medians, "summary": summary, "machine": machine()}


if __name__ == "__main__":
    main()
