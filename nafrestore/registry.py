"""A name -> factory registry: a dict plus a decorator, with loud errors on duplicates and unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T", bound=Callable)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the choice closest to a misspelt ``name`` (difflib's ratio at least 0.6), else ``""``;
    to append to a message that refuses ``name``."""
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


class Registry(Generic[T]):
    """Maps names to factories (classes or functions).

    Args:
        kind: what the registry holds, used in error messages ("model", "loss", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator that registers a factory under ``name`` (default: its ``__name__``)."""

        def decorator(obj: T) -> T:
            key = name or obj.__name__
            if key in self._items:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The factory registered as ``name``; an unknown name raises KeyError listing the valid ones."""
        if name not in self._items:
            hint = did_you_mean(name, self._items)
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(sorted(self._items))}.")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
