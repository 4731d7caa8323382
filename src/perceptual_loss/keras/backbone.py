"""The VGG trunk as a frozen Keras model, built from the same registry as the PyTorch side.

The architecture comes from :mod:`perceptual_loss.backbones` (the torchvision layout and its
layer names) and the weights from :mod:`perceptual_loss.weights` (registry keys, local
``.pth``/``.h5`` files, the same offline rules and strict checks). The loaded trunk is copied
into Keras layers once: convolution kernels ``(out, in, kh, kw)`` become Keras'
``(kh, kw, in, out)``, batch-norm statistics go to ``BatchNormalization`` with the same
epsilon. Every Keras layer is named after the module it mirrors (``conv3_3``, ``relu3_3``,
``pool3``), so ``model.get_layer("relu3_3")`` is the tap the losses use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from perceptual_loss.backbones import get_backbone
from perceptual_loss.extractor import FeatureExtractor as TorchFeatureExtractor
from perceptual_loss.keras._compat import import_keras

keras = import_keras()

__all__ = ["build_backbone", "keras_trunk"]

WeightsArg = str | os.PathLike[str] | None


def build_backbone(backbone: str = "vgg16",
                   weights: WeightsArg = "imagenet",
                   outputs: Sequence[str] | None = None,
                   *, name: str | None = None) -> tuple[Any, str]:
    """A frozen Keras model of the trunk, truncated after the deepest requested layer.

    Args:
        backbone: Registry name (``"vgg16"``, ``"vgg19_bn"``, ...).
        weights: ``"imagenet"`` (the torchvision file), ``"keras-imagenet"`` (the Keras
            Applications "notop" file, VGG16/VGG19), a registry key, a path to a torchvision
            ``.pth`` or Keras ``.h5`` file, or ``None`` for random weights (torchvision's
            initialisation, seeded by ``torch.manual_seed``), which must be asked for.
        outputs: Layer names to return, ours (``relu3_3``, ``conv3_3``, ``pool3``) or Keras
            aliases (``block3_conv3``, ``block3_pool``); ``None`` returns every layer of the
            whole trunk. Duplicates (an alias and its name) are merged.
        name: Name of the Keras model; defaults to the backbone's name.

    Returns:
        ``(model, normalisation)``. ``model`` maps an already normalised channels-last batch
        ``(N, H, W, 3)`` to ``{canonical layer name: (N, H_l, W_l, C_l)}`` and is not
        trainable. ``normalisation`` is the name of the input normalisation its weights were
        trained with (``"imagenet"`` or ``"caffe"``, see :mod:`perceptual_loss.preprocess`).

    Raises:
        ValueError: An unknown backbone or layer name; the message lists the valid ones.
        WeightsNotFoundError: The weights file is missing; the message names it and where to
            put it.
        WeightsIntegrityError: The file is corrupt or belongs to another network.
    """
    spec = get_backbone(backbone)
    layers = spec.layer_names if outputs is None else _check_layer_names(outputs)
    extractor = TorchFeatureExtractor(spec.name, layers=layers, weights=weights,
                                      check_values=False)
    model = keras_trunk(extractor.body, spec.layer_names, extractor.layers,
                        name=name or spec.name)
    return model, extractor.normalization.name


def keras_trunk(body: nn.Sequential, layer_names: Sequence[str], taps: Sequence[str],
                *, name: str = "trunk") -> Any:
    """Copy a truncated PyTorch trunk into a frozen functional Keras model.

    Args:
        body: The trunk's modules in order (``Conv2d``, ``BatchNorm2d``, ``ReLU``,
            ``MaxPool2d``), e.g. ``FeatureExtractor.body`` of the PyTorch side.
        layer_names: One name per module of the full trunk (``spec.layer_names``); the Keras
            layers get these names.
        taps: Canonical names of the layers to output, all within ``body``.
        name: Name of the Keras model.

    Returns:
        A non-trainable ``keras.Model`` mapping ``(N, H, W, 3)`` to ``{tap: (N, H_l, W_l,
        C_l)}``, its weights equal to ``body``'s (kernels ``(out, in, kh, kw)`` permuted to
        ``(kh, kw, in, out)``).

    Raises:
        ValueError: A module has no Keras equivalent here, or a tap lies outside ``body``.
    """
    modules = list(body)
    missing = [tap for tap in taps if tap not in layer_names[: len(modules)]]
    if missing:
        raise ValueError(f"layers {missing} are not within the {len(modules)} modules given")
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = inputs
    outputs: dict[str, Any] = {}
    transfers: list[tuple[Any, list[np.ndarray]]] = []
    for module, layer_name in zip(modules, layer_names, strict=False):
        layer, values = _keras_layer(module, layer_name)
        x = layer(x)
        if values:
            transfers.append((layer, values))
        if layer_name in taps:
            outputs[layer_name] = x
    model = keras.Model(inputs, {tap: outputs[tap] for tap in taps}, name=name)
    for layer, values in transfers:
        layer.set_weights(values)
    model.trainable = False
    return model


def _check_layer_names(layers: Sequence[str]) -> tuple[str, ...]:
    if isinstance(layers, str):
        raise TypeError(
            f"outputs must be a sequence of layer names such as ('relu3_3',), got the "
            f"string {layers!r}; wrap it: ({layers!r},)"
        )
    for layer in layers:
        if not isinstance(layer, str):
            raise TypeError(f"layer names must be strings, got {layer!r}")
    return tuple(layers)


def _keras_layer(module: nn.Module, layer_name: str) -> tuple[Any, list[np.ndarray]]:
    """The Keras layer equivalent to ``module`` and the weights to give it (Keras layout)."""
    if isinstance(module, nn.Conv2d):
        if (module.stride != (1, 1) or module.dilation != (1, 1) or module.groups != 1
                or module.padding != (module.kernel_size[0] // 2, module.kernel_size[1] // 2)):
            raise ValueError(
                f"layer {layer_name!r}: only stride-1 'same' convolutions have a Keras "
                f"equivalent here, got {module}"
            )
        kernel = module.weight.detach().cpu().numpy().transpose(2, 3, 1, 0)
        values = [np.ascontiguousarray(kernel, dtype=np.float32)]
        if module.bias is not None:
            values.append(module.bias.detach().cpu().numpy().astype(np.float32))
        layer = keras.layers.Conv2D(module.out_channels, module.kernel_size, padding="same",
                                    use_bias=module.bias is not None, name=layer_name)
        return layer, values
    if isinstance(module, nn.BatchNorm2d):
        values = [tensor.detach().cpu().numpy().astype(np.float32) for tensor in
                  (module.weight, module.bias, module.running_mean, module.running_var)]
        layer = keras.layers.BatchNormalization(epsilon=module.eps, name=layer_name)
        return layer, values
    if isinstance(module, nn.ReLU):
        return keras.layers.ReLU(name=layer_name), []
    if isinstance(module, nn.MaxPool2d):
        size = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        if _pair(module.padding) != (0, 0) or module.ceil_mode or _pair(module.dilation) != (1, 1):
            raise ValueError(
                f"layer {layer_name!r}: only unpadded, floor-mode max-pooling has a Keras "
                f"equivalent here, got {module}"
            )
        return keras.layers.MaxPooling2D(size, stride, padding="valid", name=layer_name), []
    if isinstance(module, nn.AvgPool2d):
        size = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        if _pair(module.padding) != (0, 0) or module.ceil_mode:
            raise ValueError(f"layer {layer_name!r}: only unpadded, floor-mode average pooling "
                             f"has a Keras equivalent here, got {module}")
        return keras.layers.AveragePooling2D(size, stride, padding="valid", name=layer_name), []
    raise ValueError(
        f"layer {layer_name!r}: no Keras equivalent for {type(module).__name__} yet "
        "(supported: Conv2d, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d; DISTS' L2 pooling is "
        "torch only)"
    )


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])
