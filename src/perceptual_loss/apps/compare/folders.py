"""Two folders of images compared pair by pair, sharded over processes under ``torchrun``.

Folders are matched by file name without suffix (``a/img01.png`` pairs with ``b/img01.jpg``),
read with a ``torch.utils.data.DataLoader``, and can be sharded over processes: launched with
``torchrun --nproc_per_node=K``, each rank scores every K-th pair and rank 0 gathers the results
and writes the files once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from perceptual_loss.apps.compare.results import PairScore
from perceptual_loss.apps.compare.scorer import ImageScorer, load_pair
from perceptual_loss.apps.images.io import list_images
from perceptual_loss.apps.runtime import progress_bar, setup_distributed

__all__ = [
    "FolderComparison",
    "ImagePairDataset",
    "compare_folders",
    "compare_images",
    "match_folders",
    "stem_key",
]


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


def stem_key(path: Path, folder: Path) -> str:
    """A file's name in its folder without the suffix: ``a/sub/x.png`` -> ``sub/x``."""
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
            key = stem_key(path, folder)
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
