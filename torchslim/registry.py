"""One small generic registry: register, get, list; a duplicate name is an error."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (models, criteria, strategies...).

    Names are case-insensitive; aliases map extra names onto a registered one.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, entry: T | None = None, *, aliases: tuple[str, ...] = ()):
        """Register ``entry`` under ``name``; without ``entry`` acts as a decorator."""
        if entry is None:

            def decorator(obj: T) -> T:
                self.register(name, obj, aliases=aliases)
                return obj

            return decorator
        key = name.lower()
        if key in self._entries or key in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        for alias in aliases:  # checked before anything is stored: a failed registration leaves no trace
            if alias.lower() != key and (alias.lower() in self._entries or alias.lower() in self._aliases):
                raise ValueError(f"{self.kind} alias {alias!r} is registered twice")
        self._entries[key] = entry
        for alias in aliases:
            self.add_alias(alias, name)
        return entry

    def add_alias(self, alias: str, name: str) -> None:
        key = alias.lower()
        if key == name.lower():
            return  # "ResNet34" is already "resnet34": names are case-insensitive
        if key in self._entries or key in self._aliases:
            raise ValueError(f"{self.kind} alias {alias!r} is registered twice")
        self._aliases[key] = name.lower()

    def canonical(self, name: str) -> str:
        """The registered name that ``name`` (or its alias) stands for."""
        key = name.lower()
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise KeyError(self.unknown_message(name))
        return key

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: str) -> bool:
        key = name.lower()
        return key in self._entries or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def list(self) -> list[str]:
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def unknown_message(self, name: str) -> str:
        known = self.list() + sorted(self._aliases)
        close = difflib.get_close_matches(name.lower(), known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.list())})"
