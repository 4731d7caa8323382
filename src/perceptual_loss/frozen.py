"""Frozen networks stay out of checkpoints: their weights come from their weight files.

A loss held by a user's model (``self.loss = PerceptualLoss()``, the usual Lightning pattern)
would otherwise write its frozen trunk (7-15 M numbers) into every checkpoint of that model.
The modules of this library that hold a frozen network (the feature extractor of
:class:`~perceptual_loss.PerceptualLoss`, :class:`~perceptual_loss.LPIPS`,
:class:`~perceptual_loss.DISTS` and the video loss; the network of
:class:`~perceptual_loss.MedicalPerceptualLoss`) mark it with :func:`keep_out_of_state_dict`:

- ``state_dict()`` leaves it out (LPIPS heads and DISTS ``alpha``/``beta`` are non-persistent
  buffers, also left out), so a user model's checkpoint holds only the user's parameters.
- ``load_state_dict()`` accepts a checkpoint without those keys (the network keeps the
  weights it was built with), and a checkpoint written before this rule, with them: each such
  tensor is **checked** against the network's own and must be equal; a different tensor is
  an error naming the key (the frozen network is defined by ``weights=``, never by the
  checkpoint, so a silent mismatch cannot happen).
- :func:`copy_frozen_weights` copies the frozen networks of one module into another of the
  same layout, for the rare case that needs it (two modules built from different files).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["copy_frozen_weights", "frozen_state_dict", "keep_out_of_state_dict"]

_ATTRIBUTE = "_frozen_children"


def keep_out_of_state_dict(module: nn.Module, *children: str) -> None:
    """Leave the frozen submodules ``children`` of ``module`` out of its ``state_dict()``.

    Old checkpoints that hold them still load: each tensor must equal the network's own.

    Args:
        module: The module that owns the frozen networks.
        children: Attribute names of its frozen submodules (e.g. ``"body"``).
    """
    setattr(module, _ATTRIBUTE, tuple(children))
    module.register_state_dict_post_hook(_drop_frozen)
    module.register_load_state_dict_pre_hook(_check_frozen)


def _frozen_tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """The frozen children's state (parameters and persistent buffers), keyed under ``prefix``."""
    tensors: dict[str, torch.Tensor] = {}
    for child in getattr(module, _ATTRIBUTE, ()):
        sub = getattr(module, child)
        for key, value in sub.state_dict(keep_vars=True).items():
            tensors[f"{prefix}{child}.{key}"] = value
    return tensors


def _drop_frozen(module: nn.Module, state_dict: dict[str, Any], prefix: str,
                 local_metadata: dict[str, Any]) -> None:
    for child in getattr(module, _ATTRIBUTE, ()):
        start = f"{prefix}{child}."
        for key in [k for k in state_dict if k.startswith(start)]:
            del state_dict[key]


def _check_frozen(module: nn.Module, state_dict: dict[str, Any], prefix: str,
                  local_metadata: dict[str, Any], strict: bool, missing_keys: list[str],
                  unexpected_keys: list[str], error_msgs: list[str]) -> None:
    for key, own in _frozen_tensors(module, prefix).items():
        saved = state_dict.get(key)
        if saved is not None and isinstance(saved, torch.Tensor):
            same = (saved.shape == own.shape and torch.equal(
                saved.detach().to(device=own.device, dtype=own.dtype), own.detach()))
            if not same:
                raise ValueError(
                    f"checkpoint key {key!r} holds frozen weights that differ from this "
                    f"module's own (its weights= file); frozen networks are not loaded from "
                    "checkpoints. Build the module with the weights the checkpoint was trained "
                    "with, or drop the key (checkpoints written since this rule leave it out)"
                )
        # The network keeps its own tensors: loading copies each onto itself.
        state_dict[key] = own.detach()


def frozen_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every frozen tensor inside ``module``, keyed as ``state_dict()`` keyed them before.

    Args:
        module: Any module, e.g. a user model holding losses of this library.

    Returns:
        ``{key: tensor}`` (detached, not copied) of the frozen networks of every submodule.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, sub in module.named_modules():
        if getattr(sub, _ATTRIBUTE, None):
            prefix = f"{name}." if name else ""
            tensors.update({k: v.detach() for k, v in _frozen_tensors(sub, prefix).items()})
    return tensors


def copy_frozen_weights(source: nn.Module, destination: nn.Module) -> None:
    """Copy the frozen networks of ``source`` into ``destination`` (same layout), strictly.

    ``load_state_dict`` no longer carries them (see the module docstring); this is the
    explicit way, e.g. to give two losses built with different ``weights=`` the same trunk.

    Args:
        source: The module whose frozen weights are copied.
        destination: A module of the same layout (same classes, options and layers).

    Raises:
        ValueError: The two hold different frozen networks (keys or shapes named).
    """
    wanted = frozen_state_dict(source)
    mine: Mapping[str, torch.Tensor] = frozen_state_dict(destination)
    if set(wanted) != set(mine):
        missing = sorted(set(wanted) ^ set(mine))[:3]
        raise ValueError(f"source and destination hold different frozen networks (e.g. "
                         f"{', '.join(missing)}); build both with the same options")
    with torch.no_grad():
        for key, value in wanted.items():
            if value.shape != mine[key].shape:
                raise ValueError(f"frozen tensor {key!r} has shape {tuple(value.shape)} in the "
                                 f"source but {tuple(mine[key].shape)} in the destination")
            mine[key].copy_(value)
