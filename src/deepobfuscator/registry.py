"""One registry shape for everything looked up by name: methods, attackers, models, datasets,
presets and CLI commands.

A :class:`Registry` maps a name to a factory (or any object), rejects unknown names with a
did-you-mean hint, and lists its entries with one-line descriptions for ``--help`` texts.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown name was looked up; the message lists the known names and a suggestion."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the plain message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the object (usually a factory) and a one-line description."""

    name: str
    obj: T
    description: str = ""


class Registry(Generic[T]):
    """Name -> object, with did-you-mean errors and a listing for help texts."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, obj: T, description: str = "", *, replace: bool = False) -> T:
        """Register ``obj`` under ``name``; a second registration of a name needs ``replace=True``."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        if not description:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, obj, description)
        return obj

    def register(self, name: str, description: str = "", *, replace: bool = False) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        def deco(obj: T) -> T:
            return self.add(name, obj, description, replace=replace)
        return deco

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises :class:`UnknownNameError`."""
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            hint = difflib.get_close_matches(name, list(self._entries), n=1)
            raise UnknownNameError(f"unknown {self.kind} '{name}' (known: {known})"
                                   + (f"; did you mean '{hint[0]}'?" if hint else ""))
        return self._entries[name].obj

    def entry(self, name: str) -> Entry[T]:
        """The full entry (name, object, description) for ``name``."""
        self.get(name)
        return self._entries[name]

    def pop(self, name: str) -> T:
        """Unregister ``name`` and return its object (e.g. a test's temporary entry)."""
        self.get(name)
        return self._entries.pop(name).obj

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def snapshot(self) -> dict[str, Entry[T]]:
        """The entries as they are now (see :meth:`changes_since`)."""
        return dict(self._entries)

    def changes_since(self, snapshot: dict[str, Entry[T]]) -> dict[str, Entry[T]]:
        """Entries added, or replaced, after ``snapshot`` was taken (e.g. a caller's own registrations, which a
        spawned worker process does not have until :meth:`restore` adds them)."""
        return {name: entry for name, entry in self._entries.items()
                if name not in snapshot or snapshot[name].obj is not entry.obj}

    def restore(self, entries: dict[str, Entry[T]]) -> None:
        """Register ``entries`` (from :meth:`changes_since` in another process), replacing same-named ones."""
        for name, entry in entries.items():
            self._entries[name] = entry

    def describe(self) -> str:
        """One line per entry, ``name: description``, for ``--help`` texts."""
        return "\n".join(f"{e.name}: {e.description}" if e.description else e.name
                         for e in self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
