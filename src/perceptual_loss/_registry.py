"""A small registry of named specs that refuses duplicates and lists its keys in errors."""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named items of one kind (backbones, weight files).

    Args:
        kind: What the items are, for messages (``"backbone"``, ``"weights"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, key: str, item: T) -> T:
        """Register ``item`` under ``key``.

        Raises:
            ValueError: If ``key`` is already registered.
        """
        if key in self._items:
            raise ValueError(f"{self.kind} {key!r} is already registered")
        self._items[key] = item
        return item

    def get(self, key: str) -> T:
        """The item called ``key``.

        Raises:
            ValueError: If there is none; the message lists the registered keys.
        """
        try:
            return self._items[key]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {key!r}; choose one of: "
                             f"{', '.join(self.keys())}") from None

    def keys(self) -> list[str]:
        """Registered keys, sorted."""
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """Registered keys in the order they were added."""
        return list(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items
