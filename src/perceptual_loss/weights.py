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

Files without a published hash (RadImageNet's, MedicalNet's) are *local-only* specs: they are
listed and looked for in the same folders (and in the hub folders MONAI and MedicalNet use, see
:attr:`WeightSpec.hub_folders`), but never downloaded.

A file that is missing, corrupt or of the wrong network is refused with an error that names
it; random weights are used only when asked for with ``weights=None``. They are drawn from a
fixed seed, :data:`RANDOM_WEIGHTS_SEED`, so every build, every process of a ``torchrun`` job
and every run gets the same network, and the caller's random state is left as it was.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import torch
from torch import nn

from perceptual_loss._keras_files import is_keras_file, keras_to_state_dict, read_keras_h5
from perceptual_loss._registry import Registry
from perceptual_loss._weight_files import (
    WeightsIntegrityError,
    WeightsNotFoundError,
    check_shapes,
    check_state,
    check_tensor_values,
    read_state_dict,
)
from perceptual_loss.backbones import BackboneSpec, get_backbone, list_backbones

__all__ = [
    "ENV_MIRROR",
    "ENV_OFFLINE",
    "ENV_WEIGHTS_DIR",
    "RANDOM_WEIGHTS_SEED",
    "RANDOM_WORDS",
    "WeightSpec",
    "WeightsChoice",
    "WeightsIntegrityError",
    "WeightsNotFoundError",
    "build_random",
    "build_trunk",
    "candidate_paths",
    "check_tensor_values",
    "find_weight_spec",
    "get_weight_spec",
    "list_weights",
    "load_weights_into",
    "parse_weights",
    "read_keras_h5",
    "read_state_dict",
    "register_weights",
    "resolve_weight_file",
    "resolve_weights",
    "search_folders",
]

ENV_WEIGHTS_DIR = "PERCEPTUAL_LOSS_WEIGHTS_DIR"
ENV_OFFLINE = "PERCEPTUAL_LOSS_OFFLINE"
ENV_MIRROR = "PERCEPTUAL_LOSS_MIRROR"
DOWNLOAD_TIMEOUT_S = 15.0
#: Words that ask for random weights explicitly (``weights=None`` does too).
RANDOM_WORDS: frozenset[str] = frozenset({"random", "none"})
#: Seed of every random initialisation (``weights=None``, ``--weights random``): the same
#: network in every process and every run, given the same torch version.
RANDOM_WEIGHTS_SEED = 0
#: File suffixes that make a ``--weights`` value a path even when no such file exists.
CHECKPOINT_SUFFIXES: frozenset[str] = frozenset(
    {".pth", ".pt", ".ckpt", ".bin", ".h5", ".hdf5", ".keras", ".tar"}
)


@dataclass(frozen=True)
class WeightSpec:
    """One official weights file.

    Attributes:
        key: Registry key, ``"<backbone>/<name>"``, e.g. ``"vgg16/imagenet"``.
        backbone: Backbone registry name the file is for.
        filename: File name, the same as the official one (torchvision, Keras).
        url: Official download URL.
        file_format: ``"torch"`` (a torchvision state dict) or ``"keras_h5"``.
        hash_algorithm: ``"sha256"`` (``hash_value`` is a hex prefix, as torch hub checks),
            ``"md5"`` (the full hex digest Keras checks) or ``"none"`` (no published hash: a
            local-only file, never downloaded).
        hash_value: Expected digest or digest prefix, lower-case hex (``""`` for ``"none"``).
        normalization: Input normalisation the weights were trained with, a name in
            :data:`perceptual_loss.preprocess.NORMALIZATIONS`: ``"imagenet"`` (RGB,
            mean/std), ``"caffe"`` (BGR, 0-255, mean subtraction), ``"radimagenet"``,
            ``"zscore"``.
        license: Licence of the weights as published.
        other_filenames: Other names the same file is published under (looked for too).
        hub_folders: Folders of the torch hub directory searched besides ``checkpoints``
            (``monai_checkpoints``: where MONAI keeps its downloads).
    """

    key: str
    backbone: str
    filename: str
    url: str
    file_format: Literal["torch", "keras_h5"]
    hash_algorithm: Literal["sha256", "md5", "none"]
    hash_value: str
    normalization: str
    license: str
    other_filenames: tuple[str, ...] = ()
    hub_folders: tuple[str, ...] = ()

    @property
    def local_only(self) -> bool:
        """Whether the file has no published hash, so it is never downloaded."""
        return self.hash_algorithm == "none"

    @property
    def filenames(self) -> tuple[str, ...]:
        """Every name the file is looked for under, the registered one first."""
        return (self.filename, *self.other_filenames)


_REGISTRY: Registry[WeightSpec] = Registry("weights")


def register_weights(spec: WeightSpec) -> WeightSpec:
    """Add ``spec`` to the registry (a second spec with the same key is a ValueError)."""
    return _REGISTRY.add(spec.key, spec)


def get_weight_spec(key: str) -> WeightSpec:
    """The registered weights called ``key``, e.g. ``"vgg16/imagenet"`` (unknown: ValueError)."""
    return _REGISTRY.get(key)


def list_weights() -> list[str]:
    """Registered weight keys, sorted."""
    return _REGISTRY.keys()


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
    # ResNet50: IMAGENET1K_V1, and V2 (torchvision's default, what MONAI's resnet50 loads)
    # under "imagenet-v2".
    ("resnet50", "resnet50-0676ba61.pth"),
    ("resnet50", "resnet50-11ad3fa6.pth"),
):
    register_weights(WeightSpec(
        key=f"{_backbone}/imagenet" + ("-v2" if _file == "resnet50-11ad3fa6.pth" else ""),
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


_HF_CHECKPOINTS = "https://huggingface.co/MONAI/checkpoints"
_MEDICALNET = "https://github.com/Tencent/MedicalNet"
_LOCAL_ONLY_LICENSE = "see the publisher (not downloaded: no published hash)"
_MEDICAL_HUB_FOLDERS = ("monai_checkpoints", "medicalnet")
# Files without a published hash: listed and looked for, never downloaded. (backbone, name,
# file names, normalisation, where they are published)
_LOCAL_ONLY: list[tuple[str, str, tuple[str, ...], str, str]] = [
    ("radimagenet_resnet50", "radimagenet", ("RadImageNet-ResNet50_notop.pth",), "radimagenet",
     f"{_HF_CHECKPOINTS} (RadImageNet-ResNet50_notop.pth)"),
]
for _depth, _monai_file in ((10, "medicalnet_resnet_10_23dataset.pth"),
                            (50, "medicalnet_resnet50_23datasets.pth")):
    # MedicalNet's own files, and its 23-dataset files under MONAI's and MedicalNet's names
    _LOCAL_ONLY.append((f"medicalnet_resnet{_depth}", "medicalnet", (f"resnet_{_depth}.pth",),
                        "zscore", f"{_MEDICALNET} (pretrain/resnet_{_depth}.pth)"))
    _LOCAL_ONLY.append((f"medicalnet_resnet{_depth}", "medicalnet-23datasets",
                        (_monai_file, f"resnet_{_depth}_23dataset.pth"), "zscore",
                        f"{_HF_CHECKPOINTS} ({_monai_file}) or {_MEDICALNET} "
                        f"(pretrain/resnet_{_depth}_23dataset.pth)"))
for _backbone, _name, _files, _normalization, _where in _LOCAL_ONLY:
    register_weights(WeightSpec(
        key=f"{_backbone}/{_name}", backbone=_backbone, filename=_files[0], url=_where,
        file_format="torch", hash_algorithm="none", hash_value="", normalization=_normalization,
        license=_LOCAL_ONLY_LICENSE, other_filenames=_files[1:], hub_folders=_MEDICAL_HUB_FOLDERS,
    ))


def search_folders(spec: WeightSpec) -> list[Path]:
    """Folders searched for ``spec.filename``, in order, before any download."""
    folders: list[Path] = []
    if os.environ.get(ENV_WEIGHTS_DIR):
        folders.append(Path(os.environ[ENV_WEIGHTS_DIR]).expanduser())
    folders.append(_hub_checkpoints())
    folders += [Path(torch.hub.get_dir()) / name for name in spec.hub_folders]
    if spec.file_format == "keras_h5":
        keras_home = os.environ.get("KERAS_HOME", str(Path("~/.keras").expanduser()))
        folders.append(Path(keras_home) / "models")
    return folders


def candidate_paths(spec: WeightSpec) -> list[Path]:
    """Every path ``spec``'s file is looked for at, in order: each folder, each of its names."""
    return [folder / name for folder in search_folders(spec) for name in spec.filenames]


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
    for candidate in candidate_paths(spec):
        if candidate.is_file():
            verify_file(candidate, spec)
            return candidate
    if spec.local_only:
        places = "; ".join(str(folder) for folder in folders)
        raise WeightsNotFoundError(
            f"weights of {spec.backbone!r} ({spec.key!r}) not found: no "
            f"{' or '.join(spec.filenames)} in {places}. They are not downloaded automatically "
            f"(no published hash): get the file from {spec.url}, put it in one of those folders "
            f"(or point {ENV_WEIGHTS_DIR} at it) or pass its path; weights=None gives random "
            "weights.",
            key=spec.key, weights_file=spec.filename, url=spec.url, folders=tuple(folders),
            reason="absent",
        )
    url = download_url(spec)
    reason, why = "", "absent"
    if download and not _offline():
        target = _hub_checkpoints() / spec.filename
        try:
            _download(url, target, spec, progress=progress)
            return target
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            reason, why = f" Download failed: {err}.", "download-failed"
    elif _offline():
        reason, why = f" Downloads are off ({ENV_OFFLINE} is set).", "offline"
    places = "\n".join(f"  - {folder / spec.filename}" for folder in folders)
    raise WeightsNotFoundError(
        f"weights file {spec.filename!r} for {spec.key!r} not found.{reason}\n"
        f"Download it from {spec.url}\nand put it at one of:\n{places}\n"
        f"(or point {ENV_WEIGHTS_DIR} at a folder that holds it). "
        "For random weights, pass weights=None explicitly.",
        key=spec.key, weights_file=spec.filename, url=spec.url, folders=tuple(folders),
        reason=why,
    )


_VERIFIED: set[tuple[str, int, int]] = set()


def verify_file(path: Path, spec: WeightSpec) -> None:
    """Check ``path`` against the hash of ``spec`` (memoised per file, size and mtime).

    Raises:
        WeightsIntegrityError: The digest does not match; the message names the file.
    """
    if spec.local_only:
        return  # no published hash to check against; the keys and values are checked on load
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


def partial_path(target: Path, pid: int | None = None) -> Path:
    """Where a download of ``target`` by process ``pid`` is written before it is verified."""
    return target.with_name(f"{target.name}.{os.getpid() if pid is None else pid}.partial")


def remove_stale_partials(target: Path) -> list[Path]:
    """Delete partial downloads of ``target`` left by processes that no longer run.

    A download killed midway (``kill -9``, a power cut) cannot delete its own partial file;
    the next attempt at the same file does. Partials of live processes (a concurrent
    download) are left alone.

    Returns:
        The files removed.
    """
    removed = []
    for partial in target.parent.glob(f"{target.name}.*.partial"):
        pid_text = partial.name[len(target.name) + 1:-len(".partial")]
        if pid_text.isdigit() and _process_alive(int(pid_text)):
            continue
        try:
            partial.unlink()
            removed.append(partial)
        except FileNotFoundError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _download(url: str, target: Path, spec: WeightSpec, *, progress: bool) -> None:
    """Stream ``url`` to ``target`` through a partial file, checking the hash on the way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    hasher = hashlib.new(spec.hash_algorithm)
    request = urllib.request.Request(url, headers={"User-Agent": "perceptual-loss"})
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = _progress_bar(total, spec.filename) if progress else None
        tmp_name = partial_path(target)
        try:
            with open(tmp_name, "wb") as out:
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




# ------------------------------------------------------------------ one resolver for every caller
@dataclass(frozen=True)
class WeightsChoice:
    """What a ``weights`` value means for one backbone.

    Attributes:
        kind: ``"random"`` (asked for explicitly), ``"registry"`` (an official file) or
            ``"file"`` (a local path).
        spec: The registry entry (``kind == "registry"``).
        path: The local file (``kind == "file"``).
    """

    kind: Literal["random", "registry", "file"]
    spec: WeightSpec | None = None
    path: Path | None = None

    @property
    def label(self) -> str:
        """How the choice is shown to users: ``random``, a registry key, or a path."""
        if self.kind == "random":
            return "random"
        return self.spec.key if self.spec is not None else str(self.path)


def find_weight_spec(name: str) -> WeightSpec:
    """A registry key (``"vgg16/imagenet"``) or a backbone name (its ImageNet file).

    Raises:
        ValueError: Neither; the message lists the keys.
    """
    if name in _REGISTRY:
        return _REGISTRY.get(name)
    if name in list_backbones() and "imagenet" in get_backbone(name).weights:
        return get_weight_spec(get_backbone(name).weights["imagenet"])
    raise ValueError(f"unknown weights {name!r}; use a key ({', '.join(list_weights())}) or "
                     "a backbone name")


def is_random(weights: object) -> bool:
    """Whether ``weights`` asks for random initialisation (``None``, ``"random"``, ``"none"``)."""
    return weights is None or (isinstance(weights, str)
                               and weights.strip().lower() in RANDOM_WORDS)


def resolve_weights(weights: str | os.PathLike[str] | None, backbone: BackboneSpec
                    ) -> WeightsChoice:
    """Interpret a ``weights`` value for ``backbone``, without reading any file.

    Args:
        weights: ``None``/``"random"``/``"none"`` (random, explicit), a name the backbone
            knows (``"imagenet"``, ``"keras-imagenet"``), a registry key
            (``"vgg16/imagenet"``), or a path to a ``.pth``/``.h5`` file.
        backbone: The backbone the weights are for.

    Returns:
        The :class:`WeightsChoice`.

    Raises:
        ValueError: A registry key of another backbone.
        WeightsNotFoundError: Neither a known name nor an existing file.
    """
    if is_random(weights):
        return WeightsChoice("random")
    text = os.fspath(weights)  # type: ignore[arg-type]
    if text in backbone.weights:
        return WeightsChoice("registry", spec=get_weight_spec(backbone.weights[text]))
    if text in _REGISTRY:
        spec = _REGISTRY.get(text)
        if spec.backbone != backbone.name:
            raise ValueError(
                f"weights {text!r} are for another network, {spec.backbone!r}, not "
                f"{backbone.name!r}: use one of its names ({', '.join(backbone.weights)}), a file "
                "path or None"
            )
        return WeightsChoice("registry", spec=spec)
    path = Path(text).expanduser()
    if not path.is_file():
        known = ", ".join(backbone.weights) or "none"
        raise WeightsNotFoundError(
            f"weights {text!r}: no such file, and not a weights name of {backbone.name!r} "
            f"(known: {known}). Pass an existing .pth/.h5 path, a known name, or "
            "weights=None for random weights.", weights_file=text, reason="no-such-file",
        )
    return WeightsChoice("file", path=path)


def parse_weights(value: str | os.PathLike[str] | None) -> str | Path | None:
    """Check a ``--weights`` value as typed on a command line, before any backbone is known.

    Args:
        value: ``"imagenet"`` (any case), ``"random"``/``"none"``, an existing file, a
            registry key (``"vgg16/keras-imagenet"``) or a name in one (``"keras-imagenet"``).

    Returns:
        ``"imagenet"``, ``None`` (random), a ``Path``, or the key/name.

    Raises:
        FileNotFoundError: A value that looks like a path but names no file.
        IsADirectoryError: A folder.
        ValueError: Empty, or neither a word, a file nor a registry key (the message lists
            the keys).
    """
    if value is None:
        return None
    if isinstance(value, Path):
        if not value.is_file():
            raise FileNotFoundError(f"weights file not found: {value}")
        return value
    if not isinstance(value, str):
        raise TypeError(f"weights must be a string or a path, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError("--weights is empty: expected imagenet, random, a file path or a key")
    if text.lower() == "imagenet":
        return "imagenet"
    if is_random(text):
        return None
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise IsADirectoryError(f"--weights {text!r} is a folder; expected a checkpoint file")
    keys = list_weights()
    if text in set(keys) | {key.split("/", 1)[1] for key in keys}:
        return text
    looks_like_path = (path.suffix.lower() in CHECKPOINT_SUFFIXES
                       or text.startswith((".", "~", os.sep))
                       or (os.altsep is not None and os.altsep in text)
                       or text.count("/") > 1)
    if looks_like_path:
        raise FileNotFoundError(f"weights file not found: {text}")
    raise ValueError(
        f"unknown weights {text!r}: expected imagenet, random, the path of an existing "
        f"checkpoint file, or a registry key ({', '.join(keys)})"
    )


def load_weights_into(features: nn.Sequential, backbone: BackboneSpec,
                      weights: str | os.PathLike[str], *, progress: bool = True
                      ) -> tuple[str, str]:
    """Load ``weights`` into the full (untruncated) trunk ``features`` of ``backbone``.

    Args:
        features: The trunk built by ``backbone.build_features()``.
        backbone: The :class:`~perceptual_loss.backbones.BackboneSpec` of the trunk.
        weights: See :func:`resolve_weights` (not random).
        progress: Show a progress bar if a download happens.

    Returns:
        ``(description of the source, normalisation name)``; the normalisation is the one
        the weights were trained with (``"imagenet"`` or ``"caffe"``).

    Raises:
        WeightsNotFoundError: The file is missing (see :func:`resolve_weight_file`).
        WeightsIntegrityError: The file is corrupt, holds non-finite or non-float tensors, or
            belongs to another network.
        ValueError: ``weights`` is neither a known name nor an existing file.
    """
    choice = resolve_weights(weights, backbone)
    if choice.kind == "random":
        raise ValueError("load_weights_into needs a weights file; random weights load nothing")
    if choice.spec is not None:
        path = resolve_weight_file(choice.spec, progress=progress)
        file_format, normalization = choice.spec.file_format, choice.spec.normalization
    else:
        assert choice.path is not None
        path = choice.path
        is_h5 = is_keras_file(path)  # .h5, .weights.h5, .keras (or their content)
        file_format = "keras_h5" if is_h5 else "torch"
        normalization = "caffe" if is_h5 else backbone.normalization
    if file_format == "keras_h5":
        expected = {key: tuple(value.shape) for key, value in features.state_dict().items()}
        state = keras_to_state_dict(read_keras_h5(path), backbone.layer_names,
                                    backbone.aliases, path, expected, backbone.name)
    else:
        state = _features_state(read_state_dict(path), backbone, path)
    check_state(features, state, path, backbone.name)
    features.load_state_dict(state, strict=True)
    return choice.label, normalization


_Built = TypeVar("_Built")


def build_random(build: Callable[[], _Built]) -> _Built:
    """Call ``build`` with torch's CPU generator seeded by :data:`RANDOM_WEIGHTS_SEED`.

    The random initialisation inside ``build`` is then the same in every call, in every
    process (each rank of a ``torchrun`` job builds the same network) and in every run; the
    caller's generator state is restored afterwards, so a user's ``torch.manual_seed`` stream
    is not disturbed.

    Args:
        build: Builds a module on the CPU, e.g. ``backbone.build_features``.

    Returns:
        What ``build`` returns.
    """
    # fork_rng(devices=[]) saves and restores the CPU generator only: the trunk is built on
    # the CPU, and touching CUDA here would initialise it in processes that never use it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return build()


def build_trunk(backbone: BackboneSpec, weights: str | os.PathLike[str] | None, *,
                progress: bool = True) -> tuple[nn.Sequential, str, str]:
    """The whole trunk of ``backbone`` with ``weights`` loaded (random only when asked for).

    Random weights are drawn by :func:`build_random`: the same trunk on every call.

    Returns:
        ``(trunk, source, normalisation)``: ``source`` describes the weights (a registry key,
        a path, or ``"random (weights=None)"``); ``normalisation`` names the preprocessing
        the weights were trained with.
    """
    if is_random(weights):
        return (build_random(backbone.build_features), "random (weights=None)",
                backbone.normalization)
    with torch.device("meta"):  # no random initialisation that the file overwrites anyway
        trunk = backbone.build_features()
    trunk = trunk.to_empty(device="cpu")
    source, normalization = load_weights_into(trunk, backbone, weights,  # type: ignore[arg-type]
                                              progress=progress)
    return trunk, source, normalization


def _features_state(state: dict[str, torch.Tensor], backbone: BackboneSpec, path: Path
                    ) -> dict[str, torch.Tensor]:
    """Check a full-model or trunk-only state dict strictly; return the trunk's part.

    A trunk-only file may keep the full model's ``features.`` prefix on every key (the
    trunk's part of a full state dict, saved alone): the prefix is dropped and the keys are
    checked strictly as a trunk's.
    """
    prefix = backbone.features_prefix
    if not prefix:
        return _own_keys_state(state, backbone, path)
    if not any(key.startswith(prefix) for key in state):
        return state  # trunk only: checked strictly when loaded
    if all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    with torch.device("meta"):
        reference = backbone.build().state_dict()
    check_shapes({k: tuple(v.shape) for k, v in reference.items()},
                 {k: tuple(v.shape) for k, v in state.items()}, path, backbone.name)
    check_tensor_values(state, path, {k: torch.is_floating_point(v) for k, v in reference.items()})
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _own_keys_state(state: dict[str, torch.Tensor], backbone: BackboneSpec, path: Path
                    ) -> dict[str, torch.Tensor]:
    """The trunk's part of a file whose keys are the network's own (ResNets).

    ``"module."`` prefixes (``DataParallel``, MedicalNet's files) are dropped; a full file's
    head (torchvision's ``fc``) is checked and left out, or may be absent altogether (a trunk
    file); batch-norm ``num_batches_tracked`` counters may be missing (old files), as torch
    allows, and are then zero.
    """
    state = {_without_module_prefix(key): value for key, value in state.items()}
    with torch.device("meta"):
        full = backbone.build().state_dict()
        trunk = backbone.build_features().state_dict()
    optional = {key for key in full if key.endswith("num_batches_tracked")}
    head = set(full) - set(trunk)
    if not any(key in state for key in head):
        optional |= head  # a trunk-only file
    check_shapes({k: tuple(v.shape) for k, v in full.items()},
                 {k: tuple(v.shape) for k, v in state.items()}, path, backbone.name,
                 optional=optional)
    check_tensor_values(state, path, {k: not k.endswith("num_batches_tracked") for k in state})
    return {key: state[key] if key in state else torch.zeros((), dtype=torch.long)
            for key in trunk}


def _without_module_prefix(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key
