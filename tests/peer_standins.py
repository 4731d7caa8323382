"""Import a peer package that declares torchvision, with a stand-in built from our networks.

lpips and piq import ``torchvision.models`` for their trunks; this project never installs
torchvision (it has no CPU build here). For the conformance tests only, ``torchvision`` is a
stand-in module whose ``models`` hold the factories the test gives (this package's networks,
with torchvision's state-dict keys); every other attribute exists as an empty stand-in. The
peer and the stand-in are removed from ``sys.modules`` afterwards, and what was there before
is put back.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Callable, Iterator

import torch


class StubModule(types.ModuleType):
    """A torchvision stand-in: any attribute exists (classes for capitalised names)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if name[0].isupper():
            return type(name, (torch.nn.Module,), {})
        sub = StubModule(f"{self.__name__}.{name}")
        setattr(self, name, sub)
        sys.modules[sub.__name__] = sub
        return sub


@contextlib.contextmanager
def imported_with_torchvision_standin(package: str, models: dict[str, Callable[..., object]]
                                      ) -> Iterator[types.ModuleType]:
    """Import ``package`` with ``torchvision.models.<name>`` = ``models[name]``; yield it."""
    prefixes = ("torchvision.", package)
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith(prefixes)}
    stub = StubModule("torchvision")
    sys.modules["torchvision"] = stub
    sys.modules["torchvision.models"] = stub.models
    for name, factory in models.items():
        setattr(stub.models, name, factory)
    for name in [k for k in sys.modules if k.startswith(package)]:
        del sys.modules[name]
    try:
        yield importlib.import_module(package)
    finally:
        for name in [k for k in sys.modules if k == "torchvision" or k.startswith(prefixes)]:
            del sys.modules[name]
        sys.modules.update(saved)
