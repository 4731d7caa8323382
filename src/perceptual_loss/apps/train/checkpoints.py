"""Training checkpoints: written atomically, read safely, checked for what a resume needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "REQUIRED_KEYS", "load_checkpoint",
           "save_checkpoint"]

#: File name of the checkpoint inside the output folder.
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "perceptual-loss/train-checkpoint-v1"
#: Keys a checkpoint must hold to rebuild and resume a run.
REQUIRED_KEYS: tuple[str, ...] = ("task", "model_config", "model", "optimizer", "step",
                                  "history")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint written by :func:`perceptual_loss.apps.train.loop.fit`.

    Only tensors and plain data are unpickled (``weights_only=True``): a file crafted to run
    code is refused, never executed.

    Args:
        path: ``checkpoint.pt`` file (or the output folder that holds it).
        map_location: Where to put the tensors.

    Returns:
        The checkpoint dict: ``task``, ``model_config``, ``model`` (state dict),
        ``optimizer``, ``step``, ``history`` (and ``train``).

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If the file is not a checkpoint of this package or lacks a key a resume
            needs (the message names the file and the key).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable training checkpoint: {error}") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a checkpoint written by 'perceptual train' "
            f"(expected format {CHECKPOINT_FORMAT!r})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {', '.join(repr(k) for k in missing)}: it "
                         "is incomplete or damaged; start afresh with overwrite (--overwrite)")
    if not isinstance(checkpoint["model_config"], dict) or not isinstance(
            checkpoint["model"], dict) or not isinstance(checkpoint["step"], int):
        raise ValueError(f"checkpoint {path} is damaged: 'model_config', 'model' or 'step' has "
                         "the wrong type; start afresh with overwrite (--overwrite)")
    return checkpoint


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` through a temporary file, so a kill never leaves half."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, temporary)
    os.replace(temporary, path)
