"""A tiny name → entry registry that fails with "did you mean …".

sclzoo keeps one registry each for objectives, attribution methods, metrics and datasets (architectures live
in timm's own registry). Names are data: ``sclzoo ls`` prints them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from sclzoo.errors import ConfigError, UnknownNameError

T = TypeVar("T")


def check_params(kind: str, name: str, params: Mapping[str, object], allowed: Iterable[str]) -> None:
    """Raises ConfigError when ``params`` names a parameter that ``kind`` ``name`` does not have.

    Args:
        kind: What ``name`` is ("metric", "attribution method"), for the message.
        name: The entry's registry name.
        params: Given parameters.
        allowed: The entry's parameter names (its defaults' keys).
    """
    allowed = list(allowed)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        listed = ", ".join(allowed) or "none"
        raise ConfigError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for {kind} {name!r}; "
            f"its parameters are: {listed}."
        )


class Registry(Generic[T]):
    """An ordered mapping of names to entries.

    Args:
        kind: What the entries are, used in error messages ("attribution method", "metric", …).
        list_command: The CLI command that lists the names, used in error messages.
    """

    def __init__(self, kind: str, list_command: str) -> None:
        self.kind = kind
        self.list_command = list_command
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Registers ``entry`` under ``name``; a duplicate name is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(entry: T) -> T:
            return self.add(name, entry)

        return deco

    def get(self, name: str) -> T:
        """Returns the entry called ``name``.

        Raises:
            UnknownNameError: with the closest known names and the command that lists them all.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Run `{self.list_command}` to list them."

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())
