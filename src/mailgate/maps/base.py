"""The map interface (Postfix's dict layer): `lookup(key) -> str | None`, opened by `type:name`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mailgate.errors import MapConfigError
from mailgate.maps.casefold import valid_utf8

if TYPE_CHECKING:
    from mailgate.config.config import Config


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
    """How a table is opened: case folding (postmap -f turns it off) and `utf8`, which is
    `smtputf8_enable`: keys are then checked for valid UTF-8 and folded with Unicode case
    folding instead of ASCII lowercasing (Postfix dict_utf8_activate())."""

    fold_case: bool = True
    utf8: bool = True

    @classmethod
    def from_config(cls, cfg: Config) -> MapOptions:
        """The options a server opens its tables with (smtputf8_enable)."""
        return cls(utf8=cfg.get_bool("smtputf8_enable"))


def dict_name(spec: str) -> str:
    """The table's name as Postfix's messages show it: `hash:FILE.db`, `btree:FILE.db`,
    otherwise the `type:name` given."""
    type_name = spec.partition(":")[0]
    return f"{spec}.db" if type_name.lower() in ("hash", "btree") else spec


class NonUtf8Value(MapConfigError):
    """A lookup found a value that is not valid UTF-8 while smtputf8_enable is on (Postfix
    reports a configuration error: DICT_ERR_CONFIG, `table NAME: query error`)."""


def _no_warning(text: str) -> None:
    return None


class _Wrapper:
    """A table around another table (`self.table`): it answers for the inner one's spec,
    fixed-key nature and folding."""

    table: Map

    @property
    def spec(self) -> str:
        return self.table.spec

    @property
    def fixed(self) -> bool:
        return self.table.fixed

    @property
    def fold_case(self) -> bool:
        return self.table.fold_case


class Utf8Map(_Wrapper):
    """Postfix's dict_utf8 wrapper around every table when smtputf8_enable is on: a key that is
    not valid UTF-8 is "not found" with a warning; a value that is not valid UTF-8 is a
    configuration error with a warning. (Folding is the table's own, see casefold.fold.)"""

    __slots__ = ("name", "table", "warn")

    def __init__(self, table: Map, name: str, warn: Callable[[str], None]) -> None:
        self.table = table
        self.name = name
        self.warn = warn

    def __getattr__(self, attr: str) -> object:  # warnings, entries, items() of the table
        return getattr(self.table, attr)

    def lookup(self, key: str) -> str | None:
        if not key.isascii() and not valid_utf8(key):
            self.warn(f'{self.name}: non-UTF-8 key "{key}": malformed UTF-8 or invalid '
                      "codepoint")
            return None
        value = self.table.lookup(key)
        if value is not None and not value.isascii() and not valid_utf8(value):
            self.warn(f'{self.name}: key "{key}": non-UTF-8 value "{value}": malformed UTF-8 '
                      "or invalid codepoint")
            raise NonUtf8Value(f"table {self.name}: query error")
        return value


# Table types backed by one file, and the file a running server watches for changes.
WATCHED = {"texthash": "", "cidr": "", "regexp": "", "pcre": "", "hash": ".db", "btree": ".db",
           "lmdb": ".lmdb"}


class ReloadingMap(_Wrapper):
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
    options: MapOptions = field(default_factory=MapOptions)
    warn: Callable[[str], None] = _no_warning  # where lookup-time warnings go

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
        options = options or self.options
        table = opener(name, options)
        return Utf8Map(table, dict_name(spec), self.warn) if options.utf8 else table

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
