"""Reading Keras weight files for the torch trunks: legacy HDF5, ``.weights.h5`` and ``.keras``.

Three layouts are read, each into ``{layer: [kernel, bias, ...]}`` in the network's order:

- the legacy HDF5 layout of the Keras Applications files and of ``model.save("x.h5")``
  (``layer_names`` / ``weight_names`` attributes, layers under their own names);
- Keras 3's ``model.save_weights("x.weights.h5")`` (``layers/<class-based name>/vars/<i>``:
  ``conv2d``, ``conv2d_1``, ... in model order; recent Keras also stores the layer's own name
  as the ``name`` attribute of ``vars``);
- Keras 3's ``model.save("x.keras")``: a zip archive holding ``config.json`` (the layers in
  order, with their names) and ``model.weights.h5`` in the layout above.

The layers are then matched to the trunk's convolutions by their Keras Applications names
(``block3_conv2``) when the file has them, else by model order, and every kernel and bias is
checked against the shape the trunk expects, so the file of another network is refused with
a message that names the file. Nothing here imports Keras; h5py is needed.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perceptual_loss._weight_files import WeightsIntegrityError

__all__ = ["is_keras_file", "keras_to_state_dict", "read_keras_h5"]

KERAS_SUFFIXES = frozenset({".h5", ".hdf5", ".keras"})
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ARCHIVE_WEIGHTS = "model.weights.h5"


def is_keras_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Keras weights file (by suffix, else by its first bytes).

    A ``.h5``/``.hdf5``/``.keras`` suffix, an HDF5 signature, or a zip archive holding
    ``model.weights.h5`` (torch checkpoints are zip archives too, without that member).
    """
    path = Path(path)
    if path.suffix.lower() in KERAS_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_HDF5_SIGNATURE))
        if head == _HDF5_SIGNATURE:
            return True
        if head.startswith(b"PK\x03\x04"):
            with zipfile.ZipFile(path) as archive:
                return _ARCHIVE_WEIGHTS in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return False


def read_keras_h5(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Read the weights of a Keras file, layer by layer, in the network's order.

    Args:
        path: A legacy ``.h5`` (Keras Applications, ``model.save("x.h5")``), a Keras 3
            ``.weights.h5`` (``model.save_weights``) or a ``.keras`` archive (``model.save``).

    Returns:
        ``{layer name: [kernel, bias, ...]}`` as stored by Keras (kernels ``(kh, kw, in,
        out)``), only layers that hold weights, in model order. Layers are named by their own
        names where the file records them, else by Keras' class-based names (``conv2d_3``).

    Raises:
        ImportError: h5py is not installed; the message says how to install it.
        WeightsIntegrityError: The file cannot be read, is a sharded archive, or holds no
            weights; the message names it.
    """
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "reading Keras weights files needs h5py: pip install \"perceptual-loss[keras]\""
        ) from err
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            layers = _read_archive(path, h5py)
        else:
            with h5py.File(path, "r") as h5:
                layers = _read_h5(h5, None)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise WeightsIntegrityError(
            f"cannot read Keras weights file {path}: {err}. It is corrupt or not a Keras "
            "weights file (.h5, .weights.h5 or .keras)."
        ) from err
    if not layers:
        raise WeightsIntegrityError(f"Keras weights file {path} holds no layer weights")
    return layers


def keras_to_state_dict(layers: Mapping[str, Sequence[np.ndarray]], layer_names: Sequence[str],
                        aliases: Mapping[str, str], path: str | os.PathLike[str],
                        expected: Mapping[str, Sequence[int]], network: str = "the trunk"
                        ) -> dict[str, torch.Tensor]:
    """Convert Keras convolution weights to the trunk's state dict, with shape checks.

    The trunk's convolutions (modules whose ``weight`` is 4-D in ``expected``) take the
    file's convolution layers (4-D kernels): by their Keras Applications names
    (``block{b}_conv{i}``, the aliases of our ``relu{b}_{i}``) when the file has all of them,
    else in model order. Either way the file must hold exactly as many convolutions as the
    trunk (dense "top" layers are ignored), and each kernel ``(kh, kw, in, out)`` and bias
    ``(out,)`` must fit the trunk's ``(out, in, kh, kw)`` and ``(out,)``.

    Args:
        layers: From :func:`read_keras_h5`.
        layer_names: One name per module of the trunk (``spec.layer_names``).
        aliases: Keras names mapped to ours (``spec.aliases``).
        path: The file, for messages.
        expected: The trunk's state-dict shapes, ``{"0.weight": (64, 3, 3, 3), ...}``.
        network: The backbone's name, for messages.

    Returns:
        ``{"<index>.weight": (out, in, kh, kw), "<index>.bias": (out,)}`` for every
        convolution of the trunk, float32.

    Raises:
        WeightsIntegrityError: The file belongs to another network (missing names, another
            number of convolutions, a wrong shape, a convolution without bias).
    """
    convolutions = [index for index, _ in enumerate(layer_names)
                    if len(expected.get(f"{index}.weight", ())) == 4]
    keras_names = {ours: theirs for theirs, ours in aliases.items()}
    wanted = [keras_names.get("relu" + layer_names[i][4:], "") for i in convolutions]
    in_file = [name for name, values in layers.items() if values and np.ndim(values[0]) == 4]
    by_name = bool(wanted) and all(name in layers for name in wanted)
    chosen = wanted if by_name else in_file
    problem = ""
    if len(in_file) != len(convolutions):
        problem = (f"it holds {len(in_file)} convolution layers, {network} has "
                   f"{len(convolutions)}")
    state: dict[str, torch.Tensor] = {}
    for index, name in zip(convolutions, chosen, strict=False):
        if problem:
            break
        values = layers[name]
        out_channels, in_channels, kh, kw = expected[f"{index}.weight"]
        kernel_shape = (kh, kw, in_channels, out_channels)
        if len(values) < 2:
            problem = f"layer {name!r} has no bias"
        elif tuple(np.shape(values[0])) != kernel_shape or np.shape(values[1]) != (out_channels,):
            problem = (f"layer {name!r} has kernel {tuple(np.shape(values[0]))} and bias "
                       f"{tuple(np.shape(values[1]))}, {layer_names[index]} needs "
                       f"{kernel_shape} and ({out_channels},)")
        else:
            kernel, bias = (np.asarray(v, dtype=np.float32) for v in values[:2])
            state[f"{index}.weight"] = torch.from_numpy(
                np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))
            state[f"{index}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    if problem:
        missing = next((name for name in wanted if name not in layers), "")
        named = f"has no layer {missing!r} and " if missing else ""
        shown = ", ".join(list(layers)[:8]) + (" ..." if len(layers) > 8 else "")
        raise WeightsIntegrityError(
            f"Keras weights file {path} {named}does not fit backbone {network!r} "
            f"({'by layer name' if by_name else 'layers matched in model order'}): {problem} "
            f"(its layers with weights: {shown}). Is it the file of another network?"
        )
    return state


# ---------------------------------------------------------------------------- layouts
def _read_archive(path: Path, h5py: Any) -> dict[str, list[np.ndarray]]:
    """A ``.keras`` zip: the weights file inside, its layers named by ``config.json``."""
    with zipfile.ZipFile(path) as archive:
        members = set(archive.namelist())
        if _ARCHIVE_WEIGHTS not in members:
            sharded = any(m.endswith(".weights.json") for m in members)
            raise ValueError(
                "a sharded archive (save it unsharded: model.save('x.keras'))" if sharded
                else f"a zip archive without {_ARCHIVE_WEIGHTS} (holds "
                     f"{', '.join(sorted(members)[:5])})")
        order = _config_layers(archive.read("config.json")) if "config.json" in members else None
        data = archive.read(_ARCHIVE_WEIGHTS)
    with h5py.File(io.BytesIO(data), "r") as h5:
        return _read_h5(h5, order)


def _read_h5(h5: Any, order: list[tuple[str, str]] | None) -> dict[str, list[np.ndarray]]:
    root = h5["model_weights"] if "model_weights" in h5 else h5
    if "layer_names" in root.attrs:
        return dict(_legacy_layers(root))
    if "layers" in root:
        return _keras3_layers(root["layers"], order)
    raise ValueError("neither the legacy layout (layer_names) nor Keras 3's (layers/)")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _legacy_layers(root: Any) -> Iterator[tuple[str, list[np.ndarray]]]:
    """``layer_names`` in order; each layer's arrays in ``weight_names`` order."""
    for raw in root.attrs["layer_names"]:
        name = _text(raw)
        if name not in root:
            continue  # layers without weights may have no group
        group = root[name]
        names = [_text(n) for n in group.attrs.get("weight_names", [])]
        if names:
            yield name, [np.asarray(group[n]) for n in names]


def _keras3_layers(layers: Any, order: list[tuple[str, str]] | None
                   ) -> dict[str, list[np.ndarray]]:
    """``layers/<path>/vars/<i>``, renamed and ordered by the config (or by class counter)."""
    found: dict[str, tuple[str, list[np.ndarray]]] = {}
    for key, (own_name, values) in _walk_keras3(layers, ""):
        found[key] = (own_name, values)
    keys = sorted(found, key=_natural_key)
    names: dict[str, str] = {}
    if order is not None:
        class_based = _class_based_names(order)
        ranked = {path: rank for rank, path in enumerate(class_based)}
        keys.sort(key=lambda k: (ranked.get(k, len(ranked)), _natural_key(k)))
        names = {path: name for path, (_, name) in zip(class_based, order, strict=True)}
    result: dict[str, list[np.ndarray]] = {}
    for key in keys:
        own_name, values = found[key]
        result[own_name or names.get(key, key)] = values
    return result


def _walk_keras3(group: Any, prefix: str) -> Iterator[tuple[str, tuple[str, list[np.ndarray]]]]:
    for key in group:
        layer = group[key]
        path = f"{prefix}{key}"
        variables = layer.get("vars") if hasattr(layer, "get") else None
        if variables is not None and len(variables):
            own = _text(variables.attrs.get("name", "")) if not prefix else ""
            yield path, (own, [np.asarray(variables[k]) for k in sorted(variables, key=int)])
        if hasattr(layer, "keys") and "layers" in layer:  # a nested model
            yield from _walk_keras3(layer["layers"], f"{path}/")


def _config_layers(config: bytes) -> list[tuple[str, str]]:
    """``[(class name, layer name), ...]`` of the top-level model in ``config.json``."""
    parsed = json.loads(config)
    layers = parsed.get("config", {}).get("layers", []) if isinstance(parsed, dict) else []
    return [(str(layer.get("class_name", "")), str(layer.get("config", {}).get("name", "")))
            for layer in layers if isinstance(layer, dict)]


def _class_based_names(order: list[tuple[str, str]]) -> list[str]:
    """Keras 3's names in ``layers/``: the snake-case class name, ``_<k>`` from the second on."""
    seen: dict[str, int] = {}
    names = []
    for class_name, _ in order:
        base = _snake_case(class_name)
        count = seen.get(base, 0)
        seen[base] = count + 1
        names.append(base if count == 0 else f"{base}_{count}")
    return names


def _snake_case(name: str) -> str:
    """Keras' ``to_snake_case``: ``Conv2D`` -> ``conv2d``, ``MaxPooling2D`` -> ``max_pooling2d``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _natural_key(path: str) -> tuple[tuple[str, int], ...]:
    """Order ``conv2d``, ``conv2d_1``, ..., ``conv2d_10`` by their counters, not as text."""
    parts = []
    for piece in path.split("/"):
        match = re.fullmatch(r"(.*?)(?:_(\d+))?", piece)
        assert match is not None
        parts.append((match.group(1), int(match.group(2) or 0)))
    return tuple(parts)
