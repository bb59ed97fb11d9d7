"""Name -> factory tables, so configs and search spaces can name methods and backbones.

(Not "registry": that is MLflow's model registry, which `wsol promote` writes to.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Factories(Generic[T]):
    def __init__(self, kind: str, discover: Callable[[], None] | None = None):
        """discover: imports the modules that register here, run before every look-up, so
        that a table fills itself and no list of its modules is kept anywhere."""
        self.kind = kind
        self._items: dict[str, T] = {}
        self._discover = discover

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = item
            return item

        return decorate

    def get(self, name: str) -> T:
        if name not in self._items and name not in self.names():
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        if self._discover is not None:
            self._discover()
        return sorted(self._items)
