"""The map interface (Postfix's dict layer): `lookup(key) -> str | None`, opened by `type:name`."""

from __future__ import annotations

import os
import time
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

    @property
    def spec(self) -> str: ...

    @property
    def fixed(self) -> bool: ...

    @property
    def fold_case(self) -> bool: ...

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


# Table types backed by one file, and the file a running server watches for changes.
WATCHED = {"texthash": "", "cidr": "", "regexp": "", "pcre": "", "hash": ".db", "btree": ".db",
           "lmdb": ".lmdb"}


class ReloadingMap:
    """A file-backed table that re-opens itself when its file changed (checked once a second).

    So a rebuilt `postmap` table or an edited texthash/cidr/regexp/pcre file is in use within
    a second, without a restart and without touching sessions in flight.
    """

    def __init__(self, table: Map, path: str, reopen: Callable[[], Map],
                 clock: Callable[[], float]) -> None:
        self.table = table
        self.path = path
        self.reopen = reopen
        self.clock = clock
        self.checked = clock()
        self.stamp = self._stamp()

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    @property
    def spec(self) -> str:
        return self.table.spec

    @property
    def fixed(self) -> bool:
        return self.table.fixed

    @property
    def fold_case(self) -> bool:
        return self.table.fold_case

    def lookup(self, key: str) -> str | None:
        now = self.clock()
        if now - self.checked >= 1.0:
            self.checked = now
            stamp = self._stamp()
            if stamp != self.stamp and stamp is not None:
                self.stamp = stamp
                try:
                    self.table = self.reopen()
                except MapConfigError as exc:
                    self.table = FailedMap(self.table.spec, str(exc))
        return self.table.lookup(key)


@dataclass
class MapList:
    """A parameter's list of tables (Postfix `maps`): the first table that has the key wins."""

    spec: str
    tables: list[Map]
    fold_case: bool = True

    @property
    def fixed(self) -> bool:
        return all(t.fixed for t in self.tables)

    def lookup(self, key: str) -> str | None:
        for table in self.tables:
            value = table.lookup(key)
            if value is not None:
                return value
        return None


@dataclass
class Registry:
    """Map types by name; `open(spec)` parses `type:name` and calls the type's opener."""

    openers: dict[str, Opener] = field(default_factory=dict)

    def register(self, type_name: str, opener: Opener) -> None:
        self.openers[type_name] = opener

    def open_reloading(self, spec: str, options: MapOptions | None = None,
                       clock: Callable[[], float] = time.monotonic) -> Map:
        """Open a table for a long-running server: file-backed tables follow their file."""
        table = self.open(spec, options)
        type_name, _, name = spec.partition(":")
        suffix = WATCHED.get(type_name.lower())
        if suffix is None or name.strip().startswith("{"):
            return table
        return ReloadingMap(table, name + suffix, lambda: self.open(spec, options), clock)

    def open(self, spec: str, options: MapOptions | None = None) -> Map:
        """Open `type:name`; raise MapConfigError for an unknown type or a broken table."""
        type_name, colon, name = spec.partition(":")
        if not colon:
            raise MapConfigError(f"table {spec}: need type:name")
        opener = self.openers.get(type_name.lower())
        if opener is None:
            raise MapConfigError(f"unsupported dictionary type: {type_name}")
        return opener(name, options or MapOptions())

    def open_list(self, specs: tuple[str, ...]) -> Map | None:
        """A server's table list parameter as one table (None when the list is empty)."""
        if not specs:
            return None
        tables = [self.open_or_failed(spec) for spec in specs]
        return tables[0] if len(tables) == 1 else MapList(" ".join(specs), tables)

    def open_or_failed(self, spec: str, options: MapOptions | None = None) -> Map:
        """Open a table for the server (reloading when its file changes); a table that fails
        to open answers every lookup with its error instead."""
        try:
            return self.open_reloading(spec, options)
        except MapConfigError as exc:
            failed = FailedMap(spec, str(exc))
            type_name, _, name = spec.partition(":")
            suffix = WATCHED.get(type_name.lower())
            if suffix is None or name.strip().startswith("{"):
                return failed
            # a missing file that appears later is picked up like a changed one
            return ReloadingMap(failed, name + suffix, lambda: self.open(spec, options),
                                time.monotonic)
