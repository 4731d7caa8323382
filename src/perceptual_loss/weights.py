"""Pretrained weights: a registry of files, where to find them, and how to read them.

Weights are data. Each :class:`WeightSpec` names the official file of one trunk, its URL, its
hash, and the input normalisation it was trained with. A registry key such as
``"vgg16/imagenet"`` is resolved, in this order, to:

1. ``$PERCEPTUAL_LOSS_WEIGHTS_DIR/<file>`` (an offline folder you fill yourself);
2. the torch hub cache, ``$TORCH_HOME/hub/checkpoints/<file>`` (the same file names
   torchvision uses, so an existing torchvision cache is reused); Keras files are also looked
   for in ``$KERAS_HOME/models`` (``~/.keras/models``);
3. a download from the official URL (or ``$PERCEPTUAL_LOSS_MIRROR/<file>``) into the torch hub
   cache, its hash checked before the file is used, unless ``PERCEPTUAL_LOSS_OFFLINE=1``.

A file that is missing, corrupt or of the wrong network is refused with an error that names
it; random weights are used only when asked for with ``weights=None``.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

__all__ = [
    "ENV_MIRROR",
    "ENV_OFFLINE",
    "ENV_WEIGHTS_DIR",
    "WeightSpec",
    "WeightsIntegrityError",
    "WeightsNotFoundError",
    "get_weight_spec",
    "list_weights",
    "load_weights_into",
    "read_keras_h5",
    "read_state_dict",
    "register_weights",
    "resolve_weight_file",
    "search_folders",
]

ENV_WEIGHTS_DIR = "PERCEPTUAL_LOSS_WEIGHTS_DIR"
ENV_OFFLINE = "PERCEPTUAL_LOSS_OFFLINE"
ENV_MIRROR = "PERCEPTUAL_LOSS_MIRROR"
DOWNLOAD_TIMEOUT_S = 15.0


class WeightsNotFoundError(FileNotFoundError):
    """A weights file could not be found or downloaded; the message says where to put it."""


class WeightsIntegrityError(ValueError):
    """A weights file exists but is corrupt, fails its hash, or belongs to another network."""


@dataclass(frozen=True)
class WeightSpec:
    """One official weights file.

    Attributes:
        key: Registry key, ``"<backbone>/<name>"``, e.g. ``"vgg16/imagenet"``.
        backbone: Backbone registry name the file is for.
        filename: File name, the same as the official one (torchvision, Keras).
        url: Official download URL.
        file_format: ``"torch"`` (a torchvision state dict) or ``"keras_h5"``.
        hash_algorithm: ``"sha256"`` (``hash_value`` is a hex prefix, as torch hub checks) or
            ``"md5"`` (the full hex digest Keras checks).
        hash_value: Expected digest or digest prefix, lower-case hex.
        normalization: Input normalisation the weights were trained with: ``"imagenet"``
            (RGB, mean/std) or ``"caffe"`` (BGR, 0-255, mean subtraction).
        license: Licence of the weights as published.
    """

    key: str
    backbone: str
    filename: str
    url: str
    file_format: Literal["torch", "keras_h5"]
    hash_algorithm: Literal["sha256", "md5"]
    hash_value: str
    normalization: str
    license: str


_REGISTRY: dict[str, WeightSpec] = {}


def register_weights(spec: WeightSpec) -> WeightSpec:
    """Add ``spec`` to the registry.

    Raises:
        ValueError: If the key is already registered.
    """
    if spec.key in _REGISTRY:
        raise ValueError(f"weights {spec.key!r} are already registered")
    _REGISTRY[spec.key] = spec
    return spec


def get_weight_spec(key: str) -> WeightSpec:
    """The registered weights called ``key`` (e.g. ``"vgg16/imagenet"``).

    Raises:
        ValueError: If the key is unknown; the message lists the registered keys.
    """
    try:
        return _REGISTRY[key]
    except KeyError:
        raise ValueError(
            f"unknown weights {key!r}; registered: {', '.join(list_weights())}"
        ) from None


def list_weights() -> list[str]:
    """Registered weight keys, sorted."""
    return sorted(_REGISTRY)


_TORCHVISION_URL = "https://download.pytorch.org/models/"
_TORCHVISION_LICENSE = "BSD-3-Clause (torchvision); trained on ImageNet-1k, see its terms"
for _backbone, _file in (
    ("vgg11", "vgg11-8a719046.pth"),
    ("vgg13", "vgg13-19584684.pth"),
    ("vgg16", "vgg16-397923af.pth"),
    ("vgg19", "vgg19-dcbb9e9d.pth"),
    ("vgg11_bn", "vgg11_bn-6002323d.pth"),
    ("vgg13_bn", "vgg13_bn-abd245e5.pth"),
    ("vgg16_bn", "vgg16_bn-6c64b313.pth"),
    ("vgg19_bn", "vgg19_bn-c79401a0.pth"),
    ("alexnet", "alexnet-owt-7be5be79.pth"),
    ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
):
    register_weights(WeightSpec(
        key=f"{_backbone}/imagenet",
        backbone=_backbone,
        filename=_file,
        url=_TORCHVISION_URL + _file,
        file_format="torch",
        hash_algorithm="sha256",
        hash_value=_file.rsplit("-", 1)[1].split(".")[0],
        normalization="imagenet",
        license=_TORCHVISION_LICENSE,
    ))

_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
for _backbone, _md5 in (
    ("vgg16", "6d6bbae143d832006294945121d1f1fc"),
    ("vgg19", "253f8cb515780f3b799900260a226db6"),
):
    _file = f"{_backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    register_weights(WeightSpec(
        key=f"{_backbone}/keras-imagenet",
        backbone=_backbone,
        filename=_file,
        url=f"{_KERAS_URL}{_backbone}/{_file}",
        file_format="keras_h5",
        hash_algorithm="md5",
        hash_value=_md5,
        normalization="caffe",
        license="CC BY 4.0 (Keras Applications); trained on ImageNet-1k, see its terms",
    ))


def search_folders(spec: WeightSpec) -> list[Path]:
    """Folders searched for ``spec.filename``, in order, before any download."""
    folders: list[Path] = []
    if os.environ.get(ENV_WEIGHTS_DIR):
        folders.append(Path(os.environ[ENV_WEIGHTS_DIR]).expanduser())
    folders.append(_hub_checkpoints())
    if spec.file_format == "keras_h5":
        keras_home = os.environ.get("KERAS_HOME", str(Path("~/.keras").expanduser()))
        folders.append(Path(keras_home) / "models")
    return folders


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def download_url(spec: WeightSpec) -> str:
    """Where ``spec`` is downloaded from: the official URL or the mirror in the environment."""
    mirror = os.environ.get(ENV_MIRROR)
    return f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url


def resolve_weight_file(spec: WeightSpec | str, *, download: bool = True,
                        progress: bool = True) -> Path:
    """Find, verify or download the file of ``spec``.

    Args:
        spec: A :class:`WeightSpec` or its registry key.
        download: Whether to download when no local copy exists (also turned off by
            ``PERCEPTUAL_LOSS_OFFLINE=1``).
        progress: Show a progress bar on stderr while downloading.

    Returns:
        Path of a verified file.

    Raises:
        WeightsNotFoundError: No local copy and no download possible; the message names the
            file, the URL and the folders it may be put in.
        WeightsIntegrityError: A file was found or downloaded but fails its hash check.
    """
    if isinstance(spec, str):
        spec = get_weight_spec(spec)
    folders = search_folders(spec)
    for folder in folders:
        candidate = folder / spec.filename
        if candidate.is_file():
            verify_file(candidate, spec)
            return candidate
    url = download_url(spec)
    reason = ""
    if download and not _offline():
        target = _hub_checkpoints() / spec.filename
        try:
            _download(url, target, spec, progress=progress)
            return target
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason = f" Download failed: {err}."
    elif _offline():
        reason = f" Downloads are off ({ENV_OFFLINE} is set)."
    places = "\n".join(f"  - {folder / spec.filename}" for folder in folders)
    raise WeightsNotFoundError(
        f"weights file {spec.filename!r} for {spec.key!r} not found.{reason}\n"
        f"Download it from {spec.url}\nand put it at one of:\n{places}\n"
        f"(or point {ENV_WEIGHTS_DIR} at a folder that holds it). "
        "For random weights, pass weights=None explicitly."
    )


_VERIFIED: set[tuple[str, int, int]] = set()


def verify_file(path: Path, spec: WeightSpec) -> None:
    """Check ``path`` against the hash of ``spec`` (memoised per file, size and mtime).

    Raises:
        WeightsIntegrityError: The digest does not match; the message names the file.
    """
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo in _VERIFIED:
        return
    digest = _file_digest(path, spec.hash_algorithm)
    if not digest.startswith(spec.hash_value):
        raise WeightsIntegrityError(
            f"weights file {path} fails its {spec.hash_algorithm} check for {spec.key!r} "
            f"(expected {spec.hash_value}..., got {digest[:len(spec.hash_value)]}...): it is "
            f"corrupt or a different file. Delete it and download it again from {spec.url}"
        )
    _VERIFIED.add(memo)


def _file_digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _download(url: str, target: Path, spec: WeightSpec, *, progress: bool) -> None:
    """Stream ``url`` to ``target`` through a temporary file, checking the hash on the way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.new(spec.hash_algorithm)
    request = urllib.request.Request(url, headers={"User-Agent": "perceptual-loss"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = _progress_bar(total, spec.filename) if progress else None
        handle, tmp_name = tempfile.mkstemp(dir=target.parent, suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as out:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    out.write(chunk)
                    hasher.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            digest = hasher.hexdigest()
            if not digest.startswith(spec.hash_value):
                raise WeightsIntegrityError(
                    f"download of {url} fails its {spec.hash_algorithm} check for "
                    f"{spec.key!r} (expected {spec.hash_value}..., got "
                    f"{digest[:len(spec.hash_value)]}...); nothing was saved"
                )
            os.replace(tmp_name, target)
        finally:
            if bar is not None:
                bar.close()
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    stat = target.stat()
    _VERIFIED.add((str(target.resolve()), stat.st_size, stat.st_mtime_ns))


def _progress_bar(total: int | None, name: str):  # noqa: ANN202 - tqdm is optional
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(f"downloading {name} ...", file=sys.stderr)
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a torch checkpoint of tensors safely (``weights_only=True``).

    Accepts a plain state dict, or a dict holding one under ``"state_dict"`` or ``"model"``.

    Raises:
        WeightsIntegrityError: The file cannot be read as a state dict; the message names it.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise WeightsIntegrityError(
            f"cannot read weights file {path}: {type(err).__name__}: {err}. "
            "It is corrupt or not a torch checkpoint."
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsIntegrityError(
            f"weights file {path} does not hold a state dict of tensors (got {type(obj).__name__})"
        )
    return dict(obj)


def read_keras_h5(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Read the weights of a Keras HDF5 file, layer by layer.

    Reads both the legacy format of the Keras Applications files (``layer_names`` and
    ``weight_names`` attributes) and Keras 3's ``.weights.h5`` (``layers/<name>/vars/<i>``).

    Returns:
        ``{layer name: [kernel, bias, ...]}`` as stored by Keras (kernels ``(kh, kw, in, out)``).

    Raises:
        ImportError: h5py is not installed; the message says how to install it.
        WeightsIntegrityError: The file cannot be read; the message names it.
    """
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            "reading Keras .h5 weights needs h5py: pip install \"perceptual-loss[keras-weights]\""
        ) from err
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            root = h5["model_weights"] if "model_weights" in h5 else h5
            layers: dict[str, list[np.ndarray]] = {}
            if "layer_names" in root.attrs:
                for raw in root.attrs["layer_names"]:
                    name = raw.decode() if isinstance(raw, bytes) else str(raw)
                    if name not in root:
                        continue  # layers without weights may have no group
                    group = root[name]
                    names = [n.decode() if isinstance(n, bytes) else str(n)
                             for n in group.attrs.get("weight_names", [])]
                    if names:
                        layers[name] = [np.asarray(group[n]) for n in names]
            elif "layers" in root:
                for name, group in root["layers"].items():
                    if "vars" in group and len(group["vars"]):
                        keys = sorted(group["vars"], key=int)
                        layers[name] = [np.asarray(group["vars"][k]) for k in keys]
    except (OSError, KeyError) as err:
        raise WeightsIntegrityError(
            f"cannot read Keras weights file {path}: {err}. It is corrupt or not HDF5."
        ) from err
    if not layers:
        raise WeightsIntegrityError(f"Keras weights file {path} holds no layer weights")
    return layers


def keras_to_state_dict(layers: Mapping[str, list[np.ndarray]], layer_names: tuple[str, ...],
                        aliases: Mapping[str, str], path: Path) -> dict[str, torch.Tensor]:
    """Convert Keras VGG layer weights to a torchvision ``features`` state dict.

    Keras ``block{b}_conv{i}`` (kernel ``(3, 3, in, out)``, bias) becomes the convolution
    before our ``relu{b}_{i}``, kernel permuted to ``(out, in, 3, 3)``.
    """
    state: dict[str, torch.Tensor] = {}
    for keras_name, ours in aliases.items():
        if not ours.startswith("relu"):
            continue
        if keras_name not in layers:
            raise WeightsIntegrityError(
                f"Keras weights file {path} has no layer {keras_name!r}; it holds "
                f"{', '.join(sorted(layers))}. Is it the file of another network?"
            )
        kernel, bias = layers[keras_name][:2]
        conv_index = layer_names.index("conv" + ours[4:])
        state[f"{conv_index}.weight"] = torch.from_numpy(
            np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))).float()
        state[f"{conv_index}.bias"] = torch.from_numpy(np.asarray(bias)).float()
    return state


def load_weights_into(features: nn.Sequential, backbone, weights: str | os.PathLike[str],  # noqa: ANN001
                      *, progress: bool = True) -> tuple[str, str]:
    """Load ``weights`` into the full (untruncated) trunk ``features`` of ``backbone``.

    Args:
        features: The trunk built by ``backbone.build_features()``.
        backbone: The :class:`~perceptual_loss.backbones.BackboneSpec` of the trunk.
        weights: A name of the backbone's weights (``"imagenet"``, ``"keras-imagenet"``), a
            registry key (``"vgg16/imagenet"``), or a path to a torchvision ``.pth`` file (full
            model or ``features`` only) or a Keras ``.h5`` file.
        progress: Show a progress bar if a download happens.

    Returns:
        ``(description of the source, normalisation name)``; the normalisation is the one
        the weights were trained with (``"imagenet"`` or ``"caffe"``).

    Raises:
        WeightsNotFoundError: The file is missing (see :func:`resolve_weight_file`).
        WeightsIntegrityError: The file is corrupt or belongs to another network.
        ValueError: ``weights`` is neither a known name nor an existing file.
    """
    spec: WeightSpec | None = None
    text = os.fspath(weights)
    if text in backbone.weights:
        spec = get_weight_spec(backbone.weights[text])
    elif text in _REGISTRY:
        spec = _REGISTRY[text]
        if spec.backbone != backbone.name:
            raise ValueError(
                f"weights {text!r} are for backbone {spec.backbone!r}, not {backbone.name!r}"
            )
    if spec is not None:
        path = resolve_weight_file(spec, progress=progress)
        file_format, normalization, source = spec.file_format, spec.normalization, spec.key
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            known = ", ".join(backbone.weights) or "none"
            raise WeightsNotFoundError(
                f"weights {text!r}: no such file, and not a weights name of {backbone.name!r} "
                f"(known: {known}). Pass an existing .pth/.h5 path, a known name, or "
                "weights=None for random weights."
            )
        is_h5 = path.suffix.lower() in {".h5", ".hdf5", ".keras"}
        file_format = "keras_h5" if is_h5 else "torch"
        normalization = "caffe" if is_h5 else "imagenet"
        source = str(path)
    if file_format == "keras_h5":
        state = keras_to_state_dict(read_keras_h5(path), backbone.layer_names,
                                    backbone.aliases, path)
    else:
        state = _features_state(read_state_dict(path), backbone, path)
    _load_strict(features, state, path, backbone.name)
    return source, normalization


def _features_state(state: dict[str, torch.Tensor], backbone, path: Path  # noqa: ANN001
                    ) -> dict[str, torch.Tensor]:
    """Check a full-model or trunk-only state dict strictly; return the trunk's part."""
    prefix = backbone.features_prefix
    if not any(key.startswith(prefix) for key in state):
        return state  # trunk only: checked strictly when loaded
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in backbone.build().state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or unexpected or wrong:
        raise WeightsIntegrityError(_mismatch_message(path, backbone.name, missing,
                                                      unexpected, wrong, got, expected))
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _load_strict(features: nn.Sequential, state: dict[str, torch.Tensor], path: Path,
                 backbone_name: str) -> None:
    expected = {k: tuple(v.shape) for k, v in features.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or unexpected or wrong:
        raise WeightsIntegrityError(_mismatch_message(path, backbone_name, missing,
                                                      unexpected, wrong, got, expected))
    features.load_state_dict(state, strict=True)


def _mismatch_message(path: Path, backbone_name: str, missing: list[str], unexpected: list[str],
                      wrong: list[str], got: Mapping[str, tuple], expected: Mapping[str, tuple]
                      ) -> str:
    parts = [f"weights file {path} does not fit backbone {backbone_name!r}"]
    if missing:
        parts.append(f"missing keys: {', '.join(missing[:6])}"
                     + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        parts.append(f"unexpected keys: {', '.join(unexpected[:6])}"
                     + (" ..." if len(unexpected) > 6 else ""))
    if wrong:
        parts.append("wrong shapes: " + ", ".join(
            f"{k} {got[k]} (expected {expected[k]})" for k in wrong[:4]))
    return "; ".join(parts) + ". Is it the file of another network?"
