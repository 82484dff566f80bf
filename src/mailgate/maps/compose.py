"""Tables built from tables: unionmap:{...}, pipemap:{...}; and unix:passwd.byname / group.byname."""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError
from mailgate.maps.base import Map, MapOptions, Registry
from mailgate.maps.casefold import fold


def _members(kind: str, name: str, registry: Registry, options: MapOptions) -> list[Map]:
    text = name.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise MapConfigError(f'{kind}:{name}: need "{kind}:{{type:name...}}"')
    specs = split_list(text[1:-1])
    if not specs:
        raise MapConfigError(f'{kind}:{name}: empty table: need "{kind}:{{type:name...}}"')
    return [registry.open(spec, options) for spec in specs]


@dataclass
class UnionMap:
    """unionmap: the results of every member that has the key, joined with commas.

    As in Postfix, the first member decides whether the union is a fixed-key table; if it is,
    the union folds the key before any member (a regexp member too) sees it."""

    spec: str
    members: list[Map]
    options: MapOptions = field(default_factory=MapOptions)

    @property
    def fixed(self) -> bool:
        return self.members[0].fixed

    @property
    def fold_case(self) -> bool:
        return self.options.fold_case and self.fixed

    def lookup(self, key: str) -> str | None:
        if self.fold_case:
            key = fold(key, self.options.utf8)
        found = [v for m in self.members if (v := m.lookup(key)) is not None]
        return ",".join(found) if found else None


@dataclass
class PipeMap:
    """pipemap: each member's result is the next member's key; not found if any misses."""

    spec: str
    members: list[Map]
    fold_case: bool = False

    @property
    def fixed(self) -> bool:
        return self.members[0].fixed

    def lookup(self, key: str) -> str | None:
        value: str | None = key
        for member in self.members:
            assert value is not None
            value = member.lookup(value)
            if value is None:
                return None
        return value


@dataclass
class UnixMap:
    """unix:passwd.byname and unix:group.byname (Postfix dict_unix)."""

    spec: str
    table: str
    fixed: bool = True
    fold_case: bool = False

    def lookup(self, key: str) -> str | None:
        try:
            if self.table == "passwd.byname":
                p = pwd.getpwnam(key)
                return (f"{p.pw_name}:{p.pw_passwd}:{p.pw_uid}:{p.pw_gid}:{p.pw_gecos}:"
                        f"{p.pw_dir}:{p.pw_shell}")
            g = grp.getgrnam(key)
            return f"{g.gr_name}:{g.gr_passwd}:{g.gr_gid}:{','.join(g.gr_mem)}"
        except KeyError:
            return None


def register(registry: Registry) -> None:
    def union(name: str, options: MapOptions) -> UnionMap:
        return UnionMap(f"unionmap:{name}", _members("unionmap", name, registry, options),
                        options)

    def pipe(name: str, options: MapOptions) -> PipeMap:
        return PipeMap(f"pipemap:{name}", _members("pipemap", name, registry, options))

    def unix(name: str, options: MapOptions) -> UnixMap:
        if name not in ("passwd.byname", "group.byname"):
            raise MapConfigError(f"unknown table: unix:{name}")
        return UnixMap(f"unix:{name}", name)

    registry.register("unionmap", union)
    registry.register("pipemap", pipe)
    registry.register("unix", unix)
