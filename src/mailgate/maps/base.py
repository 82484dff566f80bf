"""The map interface (Postfix's dict layer): `lookup(key) -> str | None`, opened by `type:name`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailgate.errors import MapConfigError


class Map(Protocol):
    """A lookup table. `lookup` returns the value, None for "not found", or raises MapError.

    `fixed` is True for tables that match whole keys (hash, texthash, inline, static): they
    also receive Postfix's partial keys (parent domains, `user@`, IP prefixes); pattern tables
    (regexp, pcre, cidr) see only the full string.
    """

    spec: str
    fixed: bool
    fold_case: bool

    def lookup(self, key: str) -> str | None: ...


@dataclass
class FailedMap:
    """A table that could not be opened: every lookup raises its error (daemon behaviour)."""

    spec: str
    error: str
    fixed: bool = True
    fold_case: bool = True

    def lookup(self, key: str) -> str | None:
        raise MapConfigError(self.error)


Opener = Callable[[str, "MapOptions"], Map]


@dataclass(frozen=True)
class MapOptions:
    """How a table is opened: case folding (postmap -f turns it off)."""

    fold_case: bool = True


@dataclass
class Registry:
    """Map types by name; `open(spec)` parses `type:name` and calls the type's opener."""

    openers: dict[str, Opener] = field(default_factory=dict)

    def register(self, type_name: str, opener: Opener) -> None:
        self.openers[type_name] = opener

    def open(self, spec: str, options: MapOptions | None = None) -> Map:
        """Open `type:name`; raise MapConfigError for an unknown type or a broken table."""
        type_name, colon, name = spec.partition(":")
        if not colon:
            raise MapConfigError(f"table {spec}: need type:name")
        opener = self.openers.get(type_name.lower())
        if opener is None:
            raise MapConfigError(f"unsupported dictionary type: {type_name}")
        return opener(name, options or MapOptions())

    def open_or_failed(self, spec: str, options: MapOptions | None = None) -> Map:
        """Open a table; a table that fails answers every lookup with its error instead."""
        try:
            return self.open(spec, options)
        except MapConfigError as exc:
            return FailedMap(spec, str(exc))
