"""A small generic registry: names map to entries, with suggestions for unknown names.

Modelled on timm's ``register_model`` and lm-evaluation-harness's ``Registry``: an entry is keyed by
the decorated function's name (or an explicit name), a second registration under the same name is an
error, ``names()`` sorts naturally (``mlp2`` before ``mlp10``) and accepts fnmatch include filters, and
an unknown name raises :class:`~suite.errors.RegistryError` listing the valid names and the closest
matches.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from suite.errors import RegistryError

__all__ = ["Registry", "natural_key", "suggest", "unknown_name_message"]

T = TypeVar("T")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded integers numerically (``mlp2`` < ``mlp10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def suggest(name: str, valid: list[str], n: int = 3) -> list[str]:
    """Return up to ``n`` valid names close to ``name`` (difflib ratio >= 0.5)."""
    return difflib.get_close_matches(name, valid, n=n, cutoff=0.5)


def unknown_name_message(what: str, name: str, valid: list[str]) -> str:
    """``unknown <what> 'x' (did you mean 'y'?). Valid: a, b, c`` -- the one format for unknown names."""
    close = suggest(name, valid)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown {what} {name!r}{hint}. Valid: {', '.join(valid) or 'none registered'}"


@dataclass
class Registry(Generic[T]):
    """Name -> entry mapping for one kind of thing (``what`` names it in error messages)."""

    what: str
    _entries: dict[str, T] = field(default_factory=dict)
    _origins: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, entry: T, origin: Callable[..., Any] | None = None) -> T:
        """Register ``entry`` under ``name``; a name registered twice is a ``ValueError``."""
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered ({self._origins[name]})")
        self._entries[name] = entry
        if origin is not None:
            try:
                file = inspect.getsourcefile(origin) or "?"
                line = inspect.getsourcelines(origin)[1]
                self._origins[name] = f"{file}:{line}"
            except (OSError, TypeError):
                self._origins[name] = getattr(origin, "__module__", "?")
        else:
            self._origins[name] = "?"
        return entry

    def decorator(self, make: Callable[[str, Callable[..., Any], str], T], name: str | None = None):
        """A decorator registering ``fn`` as ``make(key, fn, first docstring line)`` under ``name or fn.__name__``."""

        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            key = name or fn.__name__
            doc = (fn.__doc__ or "").strip().splitlines()[0] if (fn.__doc__ or "").strip() else ""
            self.add(key, make(key, fn, doc), origin=fn)
            return fn

        return wrap

    def get(self, name: str) -> T:
        """Return the entry registered as ``name`` or raise ``RegistryError`` with the valid names."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """The message for an unknown ``name``: valid names, and close matches when there are any."""
        return unknown_name_message(self.what, name, self.names())

    def origin(self, name: str) -> str:
        """``file:line`` where ``name`` was registered."""
        self.get(name)
        return self._origins[name]

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, naturally sorted, optionally filtered by an fnmatch ``pattern``."""
        names = sorted(self._entries, key=natural_key)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
