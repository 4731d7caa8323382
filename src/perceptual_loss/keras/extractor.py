"""Channels-last feature extraction for Keras: preprocessing plus the frozen Keras trunk.

Built from the PyTorch :class:`perceptual_loss.FeatureExtractor` with the same arguments, so
layer names, weights, value range, channel handling, normalisation and resize are resolved
and validated by one piece of code for both front ends; only the computation is Keras.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from perceptual_loss._checks import ValueRole, range_verdict, warn_once
from perceptual_loss.extractor import FeatureExtractor as TorchFeatureExtractor
from perceptual_loss.keras._compat import import_keras
from perceptual_loss.keras.backbone import keras_trunk
from perceptual_loss.preprocess import ChannelMode, Normalization
from perceptual_loss.recipe import Recipe

keras = import_keras()
ops = keras.ops

__all__ = ["FeatureExtractor", "check_range", "concrete_min_max"]

Tensor = Any  # a backend tensor (torch.Tensor, jax.Array, tf.Tensor)


class FeatureExtractor:
    """Frozen backbone, cut after the deepest requested layer, for channels-last images.

    Calling it maps ``(N, H, W, C)`` images in ``input_range`` to ``{layer: feature map}``
    with Keras ops only, on whichever Keras backend is active. The backbone is a
    non-trainable ``keras.Model`` (:attr:`model`); gradients flow to the input.

    Args:
        *args: The arguments of :class:`perceptual_loss.FeatureExtractor` (backbone,
            layers, weights), resolved and loaded by it: the same names, weight files and
            checks. ``check_values`` runs eagerly where tensors hold values and as part of
            compiled JAX and TensorFlow steps (see :func:`check_range`).
        **kwargs: Its keyword options (``input_range``, ``channel_mode``, ``resize``,
            ``normalization``, ``check_values``, ``progress``, ``pooling``).

    Shape:
        - Input: ``(N, H, W, C)``, ``C`` in {1, 3} (any ``C`` with ``"per_channel"``).
        - Output: ``{layer: (N', H_l, W_l, C_l)}`` with ``N' = N`` (``N * C`` per channel).

    Example:
        >>> import numpy as np
        >>> fx = FeatureExtractor("vgg11", layers=("relu1_1", "block2_pool"), weights=None)
        >>> images = np.random.default_rng(0).random((2, 32, 32, 3), dtype="float32")
        >>> {name: tuple(f.shape) for name, f in fx(images).items()}
        {'relu1_1': (2, 32, 32, 64), 'pool2': (2, 8, 8, 128)}
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("memory", "plain")
        self._init_from_torch(TorchFeatureExtractor(*args, **kwargs))

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> FeatureExtractor:
        """The extractor a recipe needs (layers, weights, range, channels, resize, pooling)."""
        return cls.from_torch(TorchFeatureExtractor.from_recipe(recipe, memory="plain"))

    @classmethod
    def from_torch(cls, extractor: TorchFeatureExtractor) -> FeatureExtractor:
        """Mirror an existing PyTorch extractor (its weights are copied, not shared)."""
        self = cls.__new__(cls)
        self._init_from_torch(extractor)
        return self

    def _init_from_torch(self, extractor: TorchFeatureExtractor) -> None:
        self.spec = extractor.spec
        self.backbone = extractor.spec.name
        self.layers: tuple[str, ...] = extractor.layers
        self.input_range: tuple[float, float] = extractor.input_range
        self.channel_mode: ChannelMode = extractor.channel_mode
        self.resize: tuple[int, int] | None = extractor.preprocess.resize
        self.normalization: Normalization = extractor.normalization
        self.check_values = extractor.check_values
        #: Names of the images already warned about (a prediction far outside the range).
        self.value_warnings: set[str] = set()
        self.min_input_size: int = extractor.min_input_size
        self.weights_source: str = extractor.weights_source
        # The fused affine map of the PyTorch preprocessor, in channels-last layout, so both
        # front ends round identically: (flip(x) - shift) / divisor.
        self._shift = extractor.preprocess.shift.detach().cpu().numpy().reshape(1, 1, 1, 3)
        self._divisor = extractor.preprocess.divisor.detach().cpu().numpy().reshape(1, 1, 1, 3)
        self.model = keras_trunk(extractor.body, self.spec.layer_names, self.layers,
                                 name=f"{self.backbone}_trunk")

    @property
    def deepest_layer(self) -> str:
        """The deepest requested layer, where the backbone is cut."""
        return max(self.layers, key=self.spec.layer_names.index)

    def __call__(self, images: Tensor, name: str = "input", role: ValueRole = "data"
                 ) -> dict[str, Tensor]:
        """Check, preprocess and run ``images``; see the class docstring for shapes.

        ``role`` says how values are judged (see :func:`check_range`): ``"data"``, or
        ``"training output"`` for a model's prediction.
        """
        images = ops.convert_to_tensor(images)
        self.check_input(images, name, role)
        return self.forward_preprocessed(self.preprocess(images))

    def check_input(self, images: Tensor, name: str = "input", role: ValueRole = "data"
                    ) -> None:
        """Validate rank, channel axis, size, dtype and (where possible) values of ``images``.

        Raises:
            TypeError: Integer or boolean images.
            ValueError: Wrong rank, channels-first layout, too small, NaN/Inf, or values
                outside ``input_range``; the message says how to fix it.
        """
        shape = tuple(images.shape)
        if len(shape) != 4:
            hint = ""
            if len(shape) == 3:
                hint = " Add a batch axis, e.g. images[None] or keras.ops.expand_dims(x, 0)."
            raise ValueError(
                f"{name} must be a channels-last batch (N, H, W, C); got shape {shape}.{hint}"
            )
        dtype = keras.backend.standardize_dtype(images.dtype)
        if not dtype.startswith(("float", "bfloat")):
            raise TypeError(
                f"{name} has dtype {dtype}; expected floating point. Convert it, e.g. "
                f"keras.ops.cast(x, 'float32') / 255 for 8-bit images (input_range=(0, 1))."
            )
        channels = shape[-1]
        if self.channel_mode == "repeat" and channels is not None and channels not in (1, 3):
            if shape[1] in (1, 3):
                raise ValueError(
                    f"{name} has shape {shape}, which looks channels-first (N, C, H, W); Keras "
                    "losses take channels-last images (N, H, W, C). Move the channel axis with "
                    "keras.ops.transpose(x, (0, 2, 3, 1)) or np.moveaxis(x, 1, -1)."
                )
            raise ValueError(
                f"{name} has {channels} channels (last axis of {shape}); expected 1 "
                "(grayscale) or 3 (RGB) on the last axis. For RGBA drop alpha (x[..., :3]); "
                "for other multi-channel images pass channel_mode='per_channel'."
            )
        size = self.resize or shape[1:3]
        if all(s is not None for s in size) and min(size) < self.min_input_size:
            raise ValueError(
                f"{name} of size {size[0]}x{size[1]} is too small for layer "
                f"{self.deepest_layer!r} of {self.backbone}: it needs at least "
                f"{self.min_input_size}x{self.min_input_size} pixels. Use shallower layers, "
                "larger images, or resize=..."
            )
        if self.check_values:
            check_range(images, name, self.input_range, role, self.value_warnings)

    def preprocess(self, images: Tensor) -> Tensor:
        """Map ``(N, H, W, C)`` images in ``input_range`` to normalised ``(N', H', W', 3)``."""
        x = ops.convert_to_tensor(images)
        if self.channel_mode == "per_channel":
            n, h, w, c = ops.shape(x)
            x = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, h, w, 1))
        if x.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        if self.normalization.bgr:
            x = ops.flip(x, axis=-1)
        x = (x - ops.cast(self._shift, x.dtype)) / ops.cast(self._divisor, x.dtype)
        if self.resize is not None and tuple(x.shape[1:3]) != self.resize:
            x = ops.image.resize(x, self.resize, interpolation="bilinear", antialias=False,
                                 data_format="channels_last")
        return x

    def forward_preprocessed(self, x: Tensor) -> dict[str, Tensor]:
        """Run the frozen trunk on already preprocessed ``(N, H, W, 3)`` input.

        Returns:
            ``{layer: (N, H_l, W_l, C_l)}`` in the order of :attr:`layers`.
        """
        outputs = self.model(x, training=False)
        return {layer: outputs[layer] for layer in self.layers}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(backbone={self.backbone!r}, layers={self.layers}, "
                f"weights={self.weights_source!r}, normalization={self.normalization.name!r}, "
                f"input_range={self.input_range}, channel_mode={self.channel_mode!r}, "
                f"resize={self.resize})")


def concrete_min_max(x: Tensor) -> tuple[float, float] | None:
    """``(min, max)`` of ``x`` as Python floats, or ``None`` inside a compiled function.

    Values can be read only where the tensor holds them: always on the torch backend, in
    eager TensorFlow, and for JAX arrays outside ``jax.jit`` tracing.
    """
    if keras.backend.is_keras_tensor(x):
        return None
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        tracer = getattr(jax.core, "Tracer", None)
        if tracer is not None and isinstance(x, tracer):
            return None
    elif backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return None
    stats = ops.stack([ops.min(x), ops.max(x)])
    low, high = (float(v) for v in np.asarray(ops.convert_to_numpy(ops.cast(stats, "float32"))))
    return low, high


def check_range(x: Tensor, name: str, input_range: tuple[float, float],
                role: ValueRole = "data", warned: set[str] | None = None) -> None:
    """Judge the values of ``x`` by the value rule, eagerly or inside compiled steps.

    The same rule and tolerances as the PyTorch side
    (:func:`perceptual_loss._checks.range_verdict`): ``"data"`` (``y_true``, cached targets)
    must lie in ``input_range`` up to the overshoot of resampling; a ``"training output"``
    (``y_pred``: Keras cannot tell a training step from evaluation inside a compiled step, so
    the model's output is always judged as one) is checked for NaN/Inf only and warned about
    once when it lies far outside the range. Where ``x`` holds values (torch backend, eager
    TensorFlow and JAX) the check runs at once. Inside a compiled step it is part of the step,
    run on the host when the step runs (``jax.debug.callback`` on JAX, ``tf.numpy_function``
    on TensorFlow): a refused value raises the same ``ValueError`` (on JAX surfacing as a
    ``JaxRuntimeError``, on TensorFlow as an ``InvalidArgumentError``, each ending with its
    message).
    XLA cannot call the host from a compiled step (TensorFlow with ``jit_compile=True``,
    Keras' default on GPUs): there the check is dropped with a warning at tracing time.

    Args:
        x: The images.
        name: What they are called in messages (``"y_true"``, ``"y_pred"``).
        input_range: The declared ``(low, high)``.
        role: ``"data"``, ``"output"`` or ``"training output"`` (see above).
        warned: Names already warned about, updated here (warn once per loss).

    Raises:
        ValueError: NaN or Inf, or values the rule refuses (with the observed min and max).
    """
    warned = set() if warned is None else warned
    observed = concrete_min_max(x)
    if observed is not None:
        _judge(name, role, observed[0], observed[1], input_range, warned)
    elif not keras.backend.is_keras_tensor(x):
        _check_range_in_step(x, name, input_range, role, warned)


def _judge(name: str, role: ValueRole, low: float, high: float,
           input_range: tuple[float, float], warned: set[str]) -> None:
    error, warning = range_verdict(name, role, low, high, input_range)
    if error is not None:
        raise ValueError(error)
    if warning is not None:
        warn_once(warning, warned, name)


def _check_range_in_step(x: Tensor, name: str, input_range: tuple[float, float],
                         role: ValueRole, warned: set[str]) -> None:
    """The value check as part of a compiled JAX or TensorFlow step (see :func:`check_range`)."""
    x = ops.cast(x, "float32")
    low, high = ops.min(x), ops.max(x)
    finite = ops.all(ops.isfinite(x))

    def host_check(low: Any, high: Any, finite: Any) -> Any:
        observed_low = float(low) if bool(finite) else math.nan
        _judge(name, role, observed_low, float(high), input_range, warned)
        return np.bool_(True)

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax.debug.callback(host_check, low, high, finite)
    elif backend == "tensorflow":
        import tensorflow as tf

        if _in_xla_context():
            warnings.warn(
                f"check_values: the value check of {name} cannot run inside an XLA-compiled "
                "TensorFlow step (jit_compile=True, Keras' default on GPUs); compile with "
                "jit_compile=False to keep it, or pass check_values=False to silence this.",
                RuntimeWarning, stacklevel=4)
            return
        # A stateful host call: tf.function runs it in order even though nothing reads it.
        tf.numpy_function(host_check, [low, high, finite], Tout=tf.bool, stateful=True)


def _in_xla_context() -> bool:
    """Whether TensorFlow is tracing a function compiled by XLA (``jit_compile=True``)."""
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - a TensorFlow without this module
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
