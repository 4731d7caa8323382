"""Your own network as the backbone: taps by forward hooks on ``named_modules()`` names.

Any ``nn.Module`` that maps ``(N, 3, H, W)`` images to something can serve: a ResNet, a
ConvNeXt, a domain network trained on your data. Layers are named as the module names them
(``"layer1"``, ``"layer2.0.relu"``); each tapped module's output is taken by a forward hook
(cloned, so an in-place operation after it cannot change it), and the forward stops as soon
as every tap has been reached, so the rest of the network never runs. A module that is called
several times in one forward (torchvision's Bottleneck reuses its ``relu``) is tapped at its
last call, the block's output.

The module is used as given, not copied: :class:`HookedTrunk` sets ``requires_grad=False`` on
its parameters and keeps it in eval mode. Pass ``copy.deepcopy(net)`` to keep your own
network trainable.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["HookedTrunk", "ModuleSpec"]

_PROBE_SIZES = (512, 256)
_MAX_PROBE = 2048


@dataclass(frozen=True)
class ModuleSpec:
    """The layer names of a user's module, in the role a registered backbone's spec plays.

    Attributes:
        name: The module's class name.
        layer_names: ``named_modules()`` names, in registration order.
        aliases: Always empty (there are no other spellings).
        weights: Always empty (the module brings its own parameters).
        in_channels: 3: the module takes RGB images.
        spatial_dims: 2: the module takes ``(N, 3, H, W)`` images.
    """

    name: str
    layer_names: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    in_channels: int = 3
    spatial_dims: int = 2

    @classmethod
    def of(cls, module: nn.Module) -> ModuleSpec:
        """The spec of ``module``."""
        names = tuple(name for name, _ in module.named_modules() if name)
        return cls(type(module).__name__, names)

    def canonical(self, layer: str) -> str:
        """``layer`` itself if the module has it; else a ValueError with the nearest names."""
        if layer in self.layer_names:
            return layer
        close = difflib.get_close_matches(layer, self.layer_names, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(self.layer_names[:12]) + (" ..." if len(self.layer_names) > 12 else "")
        raise ValueError(f"unknown layer {layer!r} for your {self.name}.{hint} Layers are its "
                         f"named_modules() names: {shown}")


class _StopForward(Exception):
    """Raised by the last hook: every tap has its output, the rest need not run."""


class HookedTrunk(nn.Module):
    """A user's module, frozen, returning the outputs of named submodules.

    Args:
        module: The network; it is frozen and put in eval mode (not copied).
        layers: ``named_modules()`` names to tap.

    Attributes:
        min_input_size: Smallest square input side the network accepts up to the deepest
            tap, found on the meta device (1 when the network cannot run there).
        feature_info: ``{layer: {"channels": C, "stride": s}}`` where the meta probe could
            tell.
    """

    def __init__(self, module: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        self.module = module
        self.module.requires_grad_(False)
        self.module.eval()
        self.layers = tuple(layers)
        named = dict(module.named_modules())
        self._targets = {layer: named[layer] for layer in self.layers}
        self._calls: dict[str, int] | None = None  # calls per forward, from the first run
        self.min_input_size = 1
        self.feature_info: dict[str, dict[str, int]] = {}
        self._probe()

    def train(self, mode: bool = True) -> HookedTrunk:
        """Keep the frozen network in eval mode whatever the parent asks."""
        super().train(mode)
        self.module.eval()
        return self

    # ------------------------------------------------------------------ running
    def taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{layer: output}`` of one forward, stopped after the last tap is reached."""
        seen: dict[str, int] = {layer: 0 for layer in self.layers}
        found: dict[str, torch.Tensor] = {}
        expected = self._calls

        def hook(layer: str):  # noqa: ANN202
            def capture(_module: nn.Module, _inputs: object, output: object) -> object:
                if not isinstance(output, torch.Tensor):
                    raise TypeError(f"layer {layer!r} returns {type(output).__name__}, not a "
                                    "tensor; tap a module that outputs a feature map")
                seen[layer] += 1
                if expected is None or seen[layer] == expected[layer]:
                    found[layer] = output
                    output = output.clone()  # what runs on may change it in place
                if expected is not None and len(found) == len(self.layers) and all(
                        seen[name] == expected[name] for name in self.layers):
                    raise _StopForward
                return output
            return capture

        handles = [self._targets[layer].register_forward_hook(hook(layer))
                   for layer in self.layers]
        try:
            self.module(x)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        missing = [layer for layer in self.layers if layer not in found]
        if missing:
            raise ValueError(f"layers {missing} were not reached by the forward of your "
                             f"{type(self.module).__name__}; tap modules that run on every call")
        if expected is None:
            self._calls = dict(seen)
        return found

    def iter_features(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(layer, map)`` in the order the layers were given."""
        maps = self.taps(x)
        for layer in self.layers:
            yield layer, maps.pop(layer)

    # ------------------------------------------------------------------ shapes only
    def _meta_taps(self, size: int) -> dict[str, torch.Tensor] | None:
        """The taps of a ``size`` x ``size`` probe on the meta device, or None if it fails."""
        state = {name: torch.empty_like(t, device="meta")
                 for name, t in [*self.module.named_parameters(), *self.module.named_buffers()]}
        found: dict[str, torch.Tensor] = {}
        calls: dict[str, int] = {layer: 0 for layer in self.layers}

        def hook(layer: str):  # noqa: ANN202
            def capture(_module: nn.Module, _inputs: object, output: object) -> None:
                calls[layer] += 1
                if isinstance(output, torch.Tensor):
                    found[layer] = output
            return capture

        handles = [self._targets[layer].register_forward_hook(hook(layer))
                   for layer in self.layers]
        try:
            functional_call(self.module, state, (torch.empty(1, 3, size, size, device="meta"),))
        except Exception:  # the network cannot run at this size (or not on meta at all)
            return None
        finally:
            for handle in handles:
                handle.remove()
        if any(found.get(layer) is None or found[layer].ndim != 4 or min(found[layer].shape[-2:])
               < 1 for layer in self.layers):
            return None
        self._calls = self._calls or dict(calls)
        return found

    def _probe(self) -> None:
        """Minimum size, channels and stride of each tap, if the network runs on meta."""
        big, bigger = (self._meta_taps(size) for size in _PROBE_SIZES[::-1])
        if big is None or bigger is None:
            return  # not runnable on meta: sizes are checked when the network runs
        for layer in self.layers:
            grown = bigger[layer].shape[-1] - big[layer].shape[-1]
            self.feature_info[layer] = {"channels": int(big[layer].shape[1]),
                                        "stride": max(1, round(256 / grown)) if grown else 0}
        low, high = 1, _PROBE_SIZES[-1]
        while low < high:
            mid = (low + high) // 2
            if self._meta_taps(mid) is None:
                low = mid + 1
            else:
                high = mid
        self.min_input_size = high
