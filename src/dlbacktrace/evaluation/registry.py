"""A registry of named extension objects (attribution methods, metrics).

The objects describe themselves (their traits are attributes), so a registry only has to keep
them by name and in registration order: whatever loops over a registry picks up an object
registered once, with no table elsewhere to update.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    """Anything a registry can hold: an object with a ``name``."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class Registry(Mapping[str, T], Generic[T]):
    """Objects by name, in registration order (a read-only mapping plus ``register``).

    Parameters
    ----------
    kind
        What the registry holds ("method", "metric"): used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, item: T, *, replace: bool = False) -> T:
        """Add ``item`` under ``item.name`` and return it (so it can be used as a decorator).

        Parameters
        ----------
        item
            The object to register.
        replace
            Allow replacing an object registered under the same name (otherwise an error, so
            that two extensions cannot silently shadow each other).
        """
        name = item.name
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._items and not replace:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._items[name] = item
        return item

    def unregister(self, name: str) -> T:
        """Remove and return the object registered as ``name``.

        Parameters
        ----------
        name
            The registered name.
        """
        return self._items.pop(name)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self._items)
            raise KeyError(f"unknown {self.kind} {name!r}; choose from {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"


__all__ = ["Named", "Registry"]
