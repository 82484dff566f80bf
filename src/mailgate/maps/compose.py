"""Tables built from tables: unionmap:{...}, pipemap:{...}, proxy:; and unix:passwd.byname / group.byname."""

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
    fold_case: bool = True  # as dict_unix with DICT_FLAG_FOLD_FIX (postmap -q ROOT finds root)
    utf8: bool = True

    def lookup(self, key: str) -> str | None:
        if self.fold_case:
            key = fold(key, self.utf8)
        try:
            if self.table == "passwd.byname":
                p = pwd.getpwnam(key)
                return (f"{p.pw_name}:{p.pw_passwd}:{p.pw_uid}:{p.pw_gid}:{p.pw_gecos}:"
                        f"{p.pw_dir}:{p.pw_shell}")
            g = grp.getgrnam(key)
            return f"{g.gr_name}:{g.gr_passwd}:{g.gr_gid}:{','.join(g.gr_mem)}"
        except (KeyError, ValueError, UnicodeEncodeError):  # ValueError: an embedded NUL
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
        return UnixMap(f"unix:{name}", name, fold_case=options.fold_case, utf8=options.utf8)

    def proxy(name: str, options: MapOptions) -> Map:
        """proxy:TYPE:NAME is TYPE:NAME: Postfix's proxymap shares one open table between
        chrooted processes; mailgate's processes open their tables themselves. (Without it,
        local_recipient_maps' default `proxy:unix:passwd.byname` would fail every lookup.)"""
        if name.partition(":")[0].lower() == "proxy":
            raise MapConfigError(f"unsupported dictionary type: proxy:{name}")
        return registry.open(name, options)

    registry.register("unionmap", union)
    registry.register("pipemap", pipe)
    registry.register("unix", unix)
    registry.register("proxy", proxy)
