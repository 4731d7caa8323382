"""How alike are two images, or two folders of image pairs.

For each pair this computes, on images in ``[0, 1]``:

- ``mse``: mean squared error over all pixels and channels;
- ``psnr``: ``10 * log10(1 / mse)`` in dB (``inf`` for identical images);
- ``ssim``: structural similarity (Gaussian window 11, sigma 1.5, ``data_range=1``, averaged
  over channels), from ``pytorch_msssim``;
- ``perceptual``: the :class:`~perceptual_loss.PerceptualLoss` value (each layer's distance a
  mean over its elements, summed over layers) and ``perceptual/<layer>`` per layer;
- ``lpips``: the LPIPS distance of :mod:`perceptual_loss.metrics`, when asked for;
- ``dists``: the DISTS distance of :mod:`perceptual_loss.dists`, when asked for.

With ``--video`` the two sides are clips: folders of frames, or numbered sequences such as
``clip/frame_%04d.png``. Frames are matched by name (by number for a sequence) and put in
frame order; every frame gets the values above, and the clips get TecoGAN's tLP
(:func:`perceptual_loss.temporal_lpips`), which also appears per frame as ``tlp``: frame
``t``'s term ``|LPIPS(b_t, b_{t-1}) - LPIPS(a_t, a_{t-1})|`` (none for the first frame), whose
mean over the frames is the clip's tLP (see :func:`compare_videos`).

Folders are matched by file name without suffix (``a/img01.png`` pairs with ``b/img01.jpg``),
read with a ``torch.utils.data.DataLoader``, and can be sharded over processes: launched with
``torchrun --nproc_per_node=K``, each rank scores every K-th pair and rank 0 gathers the results
and writes the files once.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from perceptual_loss.apps.compare_output import summarize, write_csv, write_json
from perceptual_loss.apps.image_metrics import SSIM_WINDOW, psnr_from_mse
from perceptual_loss.apps.image_metrics import ssim as ssim_per_sample
from perceptual_loss.apps.io import list_images, load_image
from perceptual_loss.apps.runtime import progress_bar, setup_distributed
from perceptual_loss.dists import DISTS
from perceptual_loss.functional import import_ssim
from perceptual_loss.losses import PerceptualLoss
from perceptual_loss.metrics import LPIPS
from perceptual_loss.recipe import Recipe
from perceptual_loss.video import temporal_lpips
from perceptual_loss.weights import WeightsIntegrityError, is_random

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "FolderComparison",
    "ImagePairDataset",
    "ImageScorer",
    "PairScore",
    "VideoComparison",
    "compare_folders",
    "compare_images",
    "compare_videos",
    "is_sequence_pattern",
    "match_frames",
    "match_folders",
    "pair_channels",
    "parse_metrics",
    "psnr_from_mse",
    "summarize",
    "write_csv",
    "write_json",
]

ALL_METRICS: tuple[str, ...] = ("mse", "psnr", "ssim", "perceptual", "lpips", "dists")
#: Images larger than this (pixels a side) are scored in overlapping tiles by default.
AUTO_TILE_SIZE = 512
DEFAULT_METRICS: tuple[str, ...] = ("mse", "psnr", "ssim", "perceptual")


def parse_metrics(names: Iterable[str] | None) -> tuple[str, ...]:
    """Validate metric names; ``None``/empty gives :data:`DEFAULT_METRICS`, ``"all"`` all.

    Args:
        names: Metric names from :data:`ALL_METRICS`, or ``"all"``.

    Returns:
        The metrics in the canonical order of :data:`ALL_METRICS`, without duplicates.

    Raises:
        ValueError: For an unknown name; the message lists the valid ones.
    """
    chosen = [name.strip().lower() for name in (names or ()) if name.strip()]
    if not chosen:
        return DEFAULT_METRICS
    if "all" in chosen:
        return ALL_METRICS
    unknown = [name for name in chosen if name not in ALL_METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric {unknown[0]!r}: choose from {', '.join(ALL_METRICS)} or all"
        )
    return tuple(name for name in ALL_METRICS if name in chosen)


@dataclass
class PairScore:
    """The scores of one image pair.

    Attributes:
        name: The pair's name (file name without suffix, relative to the folder).
        path_a: First image (the reference).
        path_b: Second image (the one judged).
        height: Image height in pixels.
        width: Image width in pixels.
        values: Metric name -> value; per-layer perceptual distances as
            ``"perceptual/<layer>"``. PSNR is ``inf`` for identical images.
    """

    name: str
    path_a: str
    path_b: str
    height: int
    width: int
    values: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """A flat dict: name, paths, size, then the values (for CSV and JSON)."""
        return {
            "name": self.name,
            "a": self.path_a,
            "b": self.path_b,
            "height": self.height,
            "width": self.width,
            **self.values,
        }


@dataclass
class FolderComparison:
    """The result of :func:`compare_folders`.

    Attributes:
        scores: One entry per matched pair, in name order.
        only_in_a: Names in the first folder without a partner (skipped).
        only_in_b: Names in the second folder without a partner (skipped).
        world_size: How many processes shared the work (1 without ``torchrun``).
    """

    scores: list[PairScore]
    only_in_a: list[str]
    only_in_b: list[str]
    world_size: int = 1


class ImageScorer:
    """Scores batches of image pairs with the chosen metrics; the networks are built once.

    Args:
        metrics: Names from :data:`ALL_METRICS` (default :data:`DEFAULT_METRICS`).
        backbone: Backbone of the perceptual distance (``vgg16``, ``vgg19``, ...).
        layers: Layers of the perceptual distance; ``None`` for the library's default
            (relu1_2, relu2_2, relu3_3, relu4_3).
        weights: ``"imagenet"``, ``None`` (random), a checkpoint path or a registry key, for
            the perceptual backbone. LPIPS uses ImageNet weights for its own trunk, or random
            ones when ``weights`` is ``None``.
        criterion: Feature distance of the perceptual term: ``"l1"`` or ``"mse"``.
        resize: Resize both images to this size before the backbone, or ``None``.
        lpips_net: LPIPS trunk: ``"alex"``, ``"vgg"`` or ``"squeeze"``.
        tile_size: Largest tile side for the perceptual and LPIPS metrics: images larger than
            this are evaluated in overlapping tiles (bounded memory, same values up to float
            rounding). ``None``: :data:`AUTO_TILE_SIZE`.
        device: Where the networks run.
        progress: Show a progress bar over the tiles of a large image.
    """

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        *,
        backbone: str = "vgg16",
        layers: Sequence[str] | None = None,
        weights: str | os.PathLike[str] | None = "imagenet",
        criterion: str = "l1",
        resize: int | None = None,
        lpips_net: str = "alex",
        tile_size: int | None = None,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ) -> None:
        self.metrics = parse_metrics(metrics)
        self.progress = progress
        tile_size = AUTO_TILE_SIZE if tile_size is None else tile_size
        self._tile_size = tile_size
        self._options: dict[str, Any] = {"lpips_net": lpips_net, "weights": weights}
        self._temporal: LPIPS | None = None
        self.device = torch.device(device)
        self.perceptual: PerceptualLoss | None = None
        self.lpips: LPIPS | None = None
        self.dists: DISTS | None = None
        self.layers: tuple[str, ...] = ()
        self.notes: list[str] = []
        if "ssim" in self.metrics:
            try:
                import_ssim()
            except ImportError as error:
                raise ImportError(f"{error} (or leave ssim out with --metric)") from error
        if "perceptual" in self.metrics:
            self.recipe = Recipe.create(backbone, tuple(layers) if layers else None, weights,
                                        criterion=criterion, resize=resize, reduction="none")
            self.perceptual = PerceptualLoss.from_recipe(self.recipe, tile_size=tile_size
                                                         ).to(self.device)
            self.layers = self.recipe.layers
        lpips_weights = None
        if "lpips" in self.metrics:
            self.lpips, lpips_weights = self._lpips(lpips_net, weights, tile_size)
            self.lpips.to(self.device)
        if "dists" in self.metrics:
            self.dists = self._dists(weights).to(self.device)
        self.config: dict[str, Any] = {
            "metrics": list(self.metrics),
            "backbone": backbone if self.perceptual is not None else None,
            "layers": list(self.layers),
            "weights": "random" if is_random(weights) else str(weights),
            "criterion": criterion,
            "resize": resize,
            "lpips_net": lpips_net if self.lpips is not None else None,
            "lpips_weights": lpips_weights,
            "notes": self.notes,
        }

    @contextlib.contextmanager
    def _tile_progress(self, size: Sequence[int]) -> Iterator[None]:
        """A progress bar over the tiles of one large image (nothing for small ones)."""
        modules = [m for m in (self.perceptual, self.lpips) if m is not None]
        tiles = sum(m.tiler.tile_count(*size) for m in modules if m.tiler is not None)
        if not self.progress or tiles <= len(modules):
            yield
            return
        bar = progress_bar(tiles, description=f"tiles of {size[1]}x{size[0]}", unit="tile",
                           leave=False)
        for module in modules:
            module.tile_callback = bar.update
        try:
            yield
        finally:
            for module in modules:
                module.tile_callback = None
            bar.close()

    def _dists(self, weights: str | os.PathLike[str] | None) -> DISTS:
        """DISTS with ``weights`` on its VGG16 trunk where they fit, else ImageNet's."""
        if is_random(weights):
            return DISTS(weights=None)
        if weights not in ("imagenet", None):
            try:
                return DISTS(weights=weights)
            except (WeightsIntegrityError, ValueError) as error:
                self.notes.append(f"dists uses the ImageNet weights of its vgg16 trunk: "
                                  f"--weights {weights} does not fit it ({error})")
        return DISTS(weights="imagenet")

    def _lpips(self, net: str, weights: str | os.PathLike[str] | None, tile_size: int | None
               ) -> tuple[LPIPS, str | None]:
        """The LPIPS metric with ``weights`` on its trunk where they fit, else ImageNet's."""
        if is_random(weights):
            return LPIPS(net, weights=None, reduction="none", tile_size=tile_size), "random"
        if weights not in ("imagenet", None):
            try:
                metric = LPIPS(net, weights=weights, reduction="none", tile_size=tile_size)
                return metric, str(weights)
            except (WeightsIntegrityError, ValueError) as error:
                self.notes.append(f"lpips uses the ImageNet weights of its {net} trunk: "
                                  f"--weights {weights} does not fit it ({error})")
        return LPIPS(net, weights="imagenet", reduction="none", tile_size=tile_size), "imagenet"

    def temporal_metric(self) -> LPIPS:
        """The LPIPS of tLP: the lpips metric when chosen, else one built the same way once."""
        if self.lpips is not None:
            return self.lpips
        if self._temporal is None:
            net = str(self._options["lpips_net"])
            self._temporal, used = self._lpips(net, self._options["weights"], self._tile_size)
            self._temporal.to(self.device)
            self.config["tlp_lpips"] = f"{net} ({used} weights)"
        return self._temporal

    def value_names(self) -> list[str]:
        """Names of the values each pair gets, in output order."""
        names: list[str] = []
        for metric in self.metrics:
            names.append(metric)
            if metric == "perceptual":
                names.extend(f"perceptual/{layer}" for layer in self.layers)
        return names

    @torch.no_grad()
    def score(self, image_a: torch.Tensor, image_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Score a batch of pairs.

        Args:
            image_a: Reference images ``(N, C, H, W)``, float, values in ``[0, 1]``.
            image_b: Judged images, same shape as ``image_a``.

        Returns:
            Value name -> ``(N,)`` float64 tensor on the CPU (names from
            :meth:`value_names`).

        Raises:
            ValueError: For mismatched shapes, values outside ``[0, 1]``, or images smaller
                than the SSIM window (11 pixels) when SSIM is asked for.
        """
        if image_a.shape != image_b.shape:
            raise ValueError(
                f"the two images must have the same shape, got {tuple(image_a.shape)} and "
                f"{tuple(image_b.shape)}"
            )
        if image_a.ndim != 4:
            raise ValueError(f"expected batches (N, C, H, W), got shape {tuple(image_a.shape)}")
        image_a = image_a.to(self.device, torch.float32)
        image_b = image_b.to(self.device, torch.float32)
        for label, image in (("first", image_a), ("second", image_b)):
            low, high = float(image.min()), float(image.max())
            if not (0.0 <= low and high <= 1.0):
                raise ValueError(
                    f"the {label} images have values in [{low:.4g}, {high:.4g}], expected [0, 1]"
                )
        out: dict[str, torch.Tensor] = {}
        difference = image_a.double() - image_b.double()
        mse = difference.pow(2).flatten(1).mean(dim=1)
        if "mse" in self.metrics:
            out["mse"] = mse.cpu()
        if "psnr" in self.metrics:
            out["psnr"] = psnr_from_mse(mse.cpu())
        if "ssim" in self.metrics:
            height, width = image_a.shape[-2:]
            if min(height, width) < SSIM_WINDOW:
                raise ValueError(
                    f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
                    f"{height}x{width}; leave ssim out (e.g. --metric mse,psnr,perceptual)"
                )
            out["ssim"] = ssim_per_sample(image_a, image_b).double().cpu()
        with self._tile_progress(image_a.shape[-2:]):
            if self.perceptual is not None:
                total, parts = self.perceptual(image_b, image_a, return_parts=True)
                out["perceptual"] = total.double().cpu()
                for layer in self.layers:
                    out[f"perceptual/{layer}"] = parts[f"content/{layer}"].double().cpu()
            if self.lpips is not None:
                out["lpips"] = self.lpips(image_b, image_a).double().cpu()
        if self.dists is not None:
            out["dists"] = self.dists(image_b, image_a).double().cpu()
        return {name: out[name] for name in self.value_names()}


def pair_channels(image_a: torch.Tensor, image_b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Repeat a 1-channel image to 3 channels when its partner is RGB."""
    if image_a.shape[0] == 1 and image_b.shape[0] == 3:
        image_a = image_a.expand(3, -1, -1)
    elif image_b.shape[0] == 1 and image_a.shape[0] == 3:
        image_b = image_b.expand(3, -1, -1)
    return image_a, image_b


def load_pair(path_a: str | Path, path_b: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read two images as ``(C, H, W)`` in ``[0, 1]`` with the same channel count.

    Raises:
        ValueError: When the two images differ in size (the message gives both sizes).
    """
    image_a, image_b = pair_channels(load_image(path_a), load_image(path_b))
    if image_a.shape[-2:] != image_b.shape[-2:]:
        raise ValueError(
            f"{path_a} is {image_a.shape[-1]}x{image_a.shape[-2]} pixels but {path_b} is "
            f"{image_b.shape[-1]}x{image_b.shape[-2]} (width x height); compare images of the "
            "same size"
        )
    return image_a, image_b


def _stem_key(path: Path, folder: Path) -> str:
    return path.relative_to(folder).with_suffix("").as_posix()


def match_folders(
    folder_a: str | Path, folder_b: str | Path, recursive: bool = False
) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair the images of two folders by file name without suffix.

    Args:
        folder_a: Folder of reference images.
        folder_b: Folder of images to judge.
        recursive: Also match files in subfolders (by relative path).

    Returns:
        ``(pairs, only_in_a, only_in_b)``: ``pairs`` is a sorted list of
        ``(name, path_a, path_b)``; the other two list names that have no partner.

    Raises:
        FileNotFoundError: When a folder does not exist.
        ValueError: When a folder holds two images with the same name (``x.png``, ``x.jpg``),
            or when no pair matches.
    """
    folder_a, folder_b = Path(folder_a), Path(folder_b)
    indexed: list[dict[str, Path]] = []
    for folder in (folder_a, folder_b):
        by_name: dict[str, Path] = {}
        for path in list_images(folder, recursive=recursive):
            key = _stem_key(path, folder)
            if key in by_name:
                raise ValueError(
                    f"{folder} holds two images named {key!r} ({by_name[key].name} and "
                    f"{path.name}); pairs are matched by name, so keep one"
                )
            by_name[key] = path
        if not by_name:
            raise ValueError(f"no images found in {folder}")
        indexed.append(by_name)
    names_a, names_b = indexed
    common = sorted(set(names_a) & set(names_b))
    if not common:
        raise ValueError(
            f"no file names match between {folder_a} ({len(names_a)} images) and {folder_b} "
            f"({len(names_b)} images); pairs are matched by name without suffix"
        )
    pairs = [(name, names_a[name], names_b[name]) for name in common]
    return pairs, sorted(set(names_a) - set(names_b)), sorted(set(names_b) - set(names_a))


class ImagePairDataset(Dataset):
    """Pairs of images read from disk, for a ``DataLoader``.

    Args:
        pairs: ``(name, path_a, path_b)`` triples, e.g. from :func:`match_folders`.

    Each item is ``(index, image_a, image_b)`` with images ``(C, H, W)`` in ``[0, 1]``.
    """

    def __init__(self, pairs: Sequence[tuple[str, Path, Path]]) -> None:
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        _, path_a, path_b = self.pairs[index]
        image_a, image_b = load_pair(path_a, path_b)
        return index, image_a, image_b


def _keep_list(
    batch: list[tuple[int, torch.Tensor, torch.Tensor]],
) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """Collate: keep the items as a list (images of different sizes cannot be stacked)."""
    return batch


def _same_shape_groups(
    items: list[tuple[int, torch.Tensor, torch.Tensor]],
) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Stack the items of a batch that share a shape; yields (indices, batch_a, batch_b)."""
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
    for item in items:
        groups.setdefault(tuple(item[1].shape), []).append(item)
    for group in groups.values():
        yield (
            [index for index, _, _ in group],
            torch.stack([a for _, a, _ in group]),
            torch.stack([b for _, _, b in group]),
        )


def compare_images(
    path_a: str | Path, path_b: str | Path, scorer: ImageScorer, name: str | None = None
) -> PairScore:
    """Score one pair of image files.

    Args:
        path_a: Reference image.
        path_b: Image to judge; same size as ``path_a``.
        scorer: The metrics to compute.
        name: Name of the pair (default: the file name of ``path_b`` without suffix).

    Returns:
        The pair's scores.
    """
    image_a, image_b = load_pair(path_a, path_b)
    values = scorer.score(image_a[None], image_b[None])
    return PairScore(
        name=name if name is not None else Path(path_b).stem,
        path_a=str(path_a),
        path_b=str(path_b),
        height=int(image_a.shape[-2]),
        width=int(image_a.shape[-1]),
        values={key: float(value[0]) for key, value in values.items()},
    )


def compare_folders(
    folder_a: str | Path,
    folder_b: str | Path,
    scorer: ImageScorer,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    recursive: bool = False,
    progress: bool = True,
) -> FolderComparison | None:
    """Score every pair of two folders (matched by name), sharded under ``torchrun``.

    Args:
        folder_a: Folder of reference images.
        folder_b: Folder of images to judge.
        scorer: The metrics to compute (built once per process).
        batch_size: Pairs per batch; pairs of equal size in a batch go through the networks
            together.
        num_workers: ``DataLoader`` worker processes reading the images.
        recursive: Also match files in subfolders.
        progress: Show a progress bar on stderr (rank 0 only).

    Returns:
        On rank 0 (and without ``torchrun``): the scores of all pairs in name order and the
        unmatched names. On the other ranks: ``None``.

    Raises:
        ValueError: For ``batch_size < 1`` or ``num_workers < 0``, and the errors of
            :func:`match_folders` and :meth:`ImageScorer.score`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    pairs, only_a, only_b = match_folders(folder_a, folder_b, recursive=recursive)
    context = setup_distributed(scorer.device)
    rank, world_size = context.rank, context.world_size
    try:
        shard = list(range(rank, len(pairs), world_size))
        dataset = ImagePairDataset(pairs)
        loader = DataLoader(
            torch.utils.data.Subset(dataset, shard),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=_keep_list,
        )
        bar = progress_bar(len(pairs), enabled=progress and rank == 0, unit="pair",
                           description="comparing", leave=False)
        local: list[PairScore] = []
        failure: BaseException | None = None
        try:
            for items in loader:
                local.extend(_score_items(items, pairs, scorer))
                bar.update(len(items) * world_size)
        except Exception as error:  # shared with the other ranks below, then re-raised
            if world_size == 1:
                raise
            failure = error
        finally:
            bar.close()
        gathered = _gather(local, failure, rank, world_size)
    finally:
        context.close()
    if gathered is None:
        return None
    order = {name: position for position, (name, _, _) in enumerate(pairs)}
    gathered.sort(key=lambda score: order[score.name])
    return FolderComparison(gathered, only_a, only_b, world_size)


def _score_items(
    items: list[tuple[int, torch.Tensor, torch.Tensor]],
    pairs: Sequence[tuple[str, Path, Path]],
    scorer: ImageScorer,
) -> list[PairScore]:
    """Score one DataLoader batch; an error names the pairs it happened on."""
    scores: list[PairScore] = []
    for indices, batch_a, batch_b in _same_shape_groups(items):
        try:
            values = scorer.score(batch_a, batch_b)
        except ValueError as error:
            names = ", ".join(pairs[i][0] for i in indices)
            raise ValueError(f"pair {names}: {error}") from error
        for row, index in enumerate(indices):
            name, path_a, path_b = pairs[index]
            scores.append(
                PairScore(
                    name=name,
                    path_a=str(path_a),
                    path_b=str(path_b),
                    height=int(batch_a.shape[-2]),
                    width=int(batch_a.shape[-1]),
                    values={key: float(value[row]) for key, value in values.items()},
                )
            )
    return scores


def _gather(
    local: list[PairScore], failure: BaseException | None, rank: int, world_size: int
) -> list[PairScore] | None:
    """Collect every rank's scores on rank 0 (others get None).

    Every rank learns whether any rank failed, so none waits forever for a dead peer: the
    failing rank re-raises its error, the others raise one that names it.
    """
    if world_size == 1:
        return local
    message = None if failure is None else f"{type(failure).__name__}: {failure}"
    received: list[tuple[list[PairScore], str | None] | None] = [None] * world_size
    dist.all_gather_object(received, ([] if failure is not None else local, message))
    if failure is not None:
        raise failure
    for other_rank, part in enumerate(received):
        if part is not None and part[1] is not None:
            raise ValueError(f"process {other_rank} of {world_size} failed: {part[1]}")
    if rank != 0:
        return None
    return [score for part in received if part is not None for score in part[0]]


# --------------------------------------------------------------------------------------------
# video: two clips of frames
# --------------------------------------------------------------------------------------------
_PATTERN = re.compile(r"%(0?)(\d*)d")


def is_sequence_pattern(path: str | Path) -> bool:
    """Whether ``path`` names a numbered sequence such as ``clip/frame_%04d.png``."""
    return bool(_PATTERN.search(Path(path).name))


def _natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that puts ``frame2`` before ``frame10``."""
    return tuple(int(part) if part.isdigit() else part
                 for part in re.split(r"(\d+)", name))


def _frames_of(source: Path) -> dict[str, Path]:
    """``{frame key: path}`` of a folder of frames or a numbered sequence."""
    if is_sequence_pattern(source):
        folder = source.parent
        if not folder.is_dir():
            raise ValueError(f"folder not found for the sequence {source}")
        match = _PATTERN.search(source.name)
        assert match is not None
        prefix, suffix = source.name[:match.start()], source.name[match.end():]
        width = int(match.group(2) or 0) if match.group(1) else 0
        digits = rf"\d{{{width}}}" if width else r"\d+"
        rule = re.compile(re.escape(prefix) + f"({digits})" + re.escape(suffix) + "$")
        found = {}
        for path in folder.iterdir():
            number = rule.match(path.name)
            if number and path.is_file():
                found[str(int(number.group(1)))] = path
        if not found:
            raise ValueError(f"no frames match {source} (e.g. {source.name % 1})")
        return found
    paths = list_images(source)
    if not paths:
        raise ValueError(f"no images found in {source}")
    return {_stem_key(path, source): path for path in paths}


def match_frames(source_a: str | Path, source_b: str | Path
                 ) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair the frames of two clips, in frame order.

    Args:
        source_a: Reference clip: a folder of frames, or a numbered sequence such as
            ``ref/%04d.png`` (``%d`` for any number of digits).
        source_b: Clip to judge, in the same form.

    Returns:
        ``(frames, only_in_a, only_in_b)``: ``(name, path_a, path_b)`` in natural order of the
        names (``f2`` before ``f10``; by number for sequences), and the unmatched names.

    Raises:
        ValueError: No frames, fewer than two matching frames, or names that match nothing.
    """
    frames_a, frames_b = _frames_of(Path(source_a)), _frames_of(Path(source_b))
    common = sorted(set(frames_a) & set(frames_b), key=_natural_key)
    if len(common) < 2:
        raise ValueError(
            f"{len(common)} frame(s) match between {source_a} ({len(frames_a)} frames) and "
            f"{source_b} ({len(frames_b)} frames); a video comparison needs at least 2 frames "
            "matched by name (by number for %d sequences)")
    frames = [(name, frames_a[name], frames_b[name]) for name in common]
    return (frames, sorted(set(frames_a) - set(frames_b), key=_natural_key),
            sorted(set(frames_b) - set(frames_a), key=_natural_key))


@dataclass
class VideoComparison:
    """The result of :func:`compare_videos`.

    Attributes:
        scores: One entry per frame, in frame order; ``values["tlp"]`` is the frame's tLP
            term (NaN for the first frame).
        tlp: TecoGAN's tLP of the clip pair (papers report it x100).
        changes_a: ``LPIPS(a_t, a_{t-1})`` for ``t = 1..T-1``.
        changes_b: ``LPIPS(b_t, b_{t-1})``.
        only_in_a: Frame names without a partner in B (skipped).
        only_in_b: Frame names without a partner in A.
    """

    scores: list[PairScore]
    tlp: float
    changes_a: list[float]
    changes_b: list[float]
    only_in_a: list[str]
    only_in_b: list[str]


def compare_videos(source_a: str | Path, source_b: str | Path, scorer: ImageScorer, *,
                   frames_per_chunk: int = 8, progress: bool = True) -> VideoComparison:
    """Score two clips frame by frame and compute their tLP.

    Frames are read ``frames_per_chunk`` at a time (memory does not grow with the clip's
    length); each chunk is scored by ``scorer`` as one batch, and the LPIPS change between
    consecutive frames of each clip (tLP's inputs) is taken with
    :func:`~perceptual_loss.temporal_lpips` on the chunk plus the frame before it.

    Args:
        source_a: Reference clip: a folder of frames or a numbered sequence (``%04d``).
        source_b: Clip to judge.
        scorer: The per-frame metrics; its LPIPS (or one built like it, see
            :meth:`ImageScorer.temporal_metric`) gives tLP.
        frames_per_chunk: Frames read and scored together, ``>= 1``.
        progress: Show a progress bar on stderr.

    Returns:
        The per-frame scores and the clip's tLP.

    Raises:
        ValueError: The errors of :func:`match_frames`, frames of different sizes, and the
            errors of :meth:`ImageScorer.score`.
    """
    if frames_per_chunk < 1:
        raise ValueError(f"frames_per_chunk must be >= 1, got {frames_per_chunk}")
    frames, only_a, only_b = match_frames(source_a, source_b)
    metric = scorer.temporal_metric()
    scores: list[PairScore] = []
    changes_a: list[float] = []
    changes_b: list[float] = []
    before: tuple[torch.Tensor, torch.Tensor] | None = None
    bar = progress_bar(len(frames), enabled=progress, unit="frame", description="comparing",
                       leave=False)
    try:
        for first in range(0, len(frames), frames_per_chunk):
            chunk = frames[first:first + frames_per_chunk]
            loaded = [load_pair(path_a, path_b) for _, path_a, path_b in chunk]
            size = loaded[0][0].shape
            for (name, path_a, _), (image_a, _) in zip(chunk, loaded, strict=True):
                expected = before[0].shape if before is not None else size
                if image_a.shape != expected:
                    raise ValueError(
                        f"frame {name} ({path_a}) is {image_a.shape[-1]}x{image_a.shape[-2]} "
                        f"with {image_a.shape[0]} channel(s) but the clip's frames are "
                        f"{expected[-1]}x{expected[-2]} with {expected[0]}; a clip's frames "
                        "must all have one size")
            batch_a = torch.stack([a for a, _ in loaded])
            batch_b = torch.stack([b for _, b in loaded])
            try:
                values = scorer.score(batch_a, batch_b)
            except ValueError as error:
                raise ValueError(f"frames {chunk[0][0]}..{chunk[-1][0]}: {error}") from error
            clip_a, clip_b = batch_a, batch_b
            if before is not None:
                clip_a = torch.cat([before[0][None], batch_a])
                clip_b = torch.cat([before[1][None], batch_b])
            tlp_terms = [math.nan] * len(chunk)
            if clip_a.shape[0] > 1:
                with torch.no_grad():
                    _, step_b, step_a = temporal_lpips(
                        clip_b[None].to(scorer.device), clip_a[None].to(scorer.device), metric,
                        return_frames=True)
                step_a, step_b = step_a[0].double().cpu(), step_b[0].double().cpu()
                changes_a.extend(step_a.tolist())
                changes_b.extend(step_b.tolist())
                terms = (step_b - step_a).abs().tolist()
                tlp_terms[len(chunk) - len(terms):] = terms
            before = (batch_a[-1], batch_b[-1])
            for row, (name, path_a, path_b) in enumerate(chunk):
                frame_values = {key: float(value[row]) for key, value in values.items()}
                frame_values["tlp"] = tlp_terms[row]
                scores.append(PairScore(name=name, path_a=str(path_a), path_b=str(path_b),
                                        height=int(size[-2]), width=int(size[-1]),
                                        values=frame_values))
            bar.update(len(chunk))
    finally:
        bar.close()
    tlp = sum(abs(b - a) for a, b in zip(changes_a, changes_b, strict=True)) / len(changes_a)
    return VideoComparison(scores, tlp, changes_a, changes_b, only_a, only_b)
