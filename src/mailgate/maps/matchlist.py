"""Postfix match lists: domain lists (mydestination, relay_domains) and host/address lists.

A list holds patterns, `!pattern`, `/file/name` (the file's words) and `type:table` lookups;
the first matching pattern decides (a `!` match means "no"). Domain patterns match exactly,
and also subdomains when the parameter is in `parent_domain_matches_subdomains`; a `.domain`
pattern always matches subdomains.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError, MapTempError
from mailgate.maps.base import Map, Registry

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _expand_files(patterns: Iterable[str]) -> list[str]:
    out: list[str] = []
    for pattern in patterns:
        bare = pattern.lstrip("!")
        if bare.startswith("/"):
            neg = pattern.startswith("!")
            try:
                with open(bare, encoding="utf-8") as f:
                    words = split_list(" ".join(
                        line for line in f.read().splitlines() if not line.lstrip().startswith("#")))
            except OSError as exc:
                raise MapConfigError(f"open {bare}: {exc.strerror}") from exc
            out.extend(("!" + w) if neg else w for w in words)
        else:
            out.append(pattern)
    return out


@dataclass
class DomainList:
    """A domain list (Postfix domain_list / match_list with the DOMAIN matcher)."""

    patterns: list[tuple[bool, str | Map]] = field(default_factory=list)
    parent_matches: bool = False

    @classmethod
    def build(cls, patterns: Iterable[str], registry: Registry,
              parent_matches: bool = False) -> DomainList:
        items: list[tuple[bool, str | Map]] = []
        for pattern in _expand_files(patterns):
            neg = pattern.startswith("!")
            bare = pattern[1:] if neg else pattern
            if ":" in bare and not bare.startswith("["):
                items.append((neg, registry.open_or_failed(bare)))
            else:
                items.append((neg, bare.lower()))
        return cls(items, parent_matches)

    def match(self, domain: str) -> bool:
        """True if `domain` matches; raises MapError when a table lookup fails."""
        domain = domain.lower().rstrip(".")
        for neg, pattern in self.patterns:
            if isinstance(pattern, str):
                hit = self._match_name(pattern, domain)
            else:
                hit = self._match_table(pattern, domain)
            if hit:
                return not neg
        return False

    def _match_name(self, pattern: str, domain: str) -> bool:
        if pattern == domain:
            return True
        if pattern.startswith("."):
            return domain.endswith(pattern)
        return self.parent_matches and domain.endswith("." + pattern)

    def _match_table(self, table: Map, domain: str) -> bool:
        if table.lookup(domain) is not None:
            return True
        if not self.parent_matches:
            return False
        name = domain
        while "." in name:
            name = name.split(".", 1)[1]
            if table.fixed and table.lookup(name) is not None:
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self.patterns)


def parse_network(pattern: str) -> Network | None:
    """`1.2.3.4`, `1.2.3.0/24`, `[::1]`, `[2001:db8::]/32`; None if not an address pattern.

    Raises ValueError for an address pattern with host bits set (Postfix refuses those).
    """
    text = pattern
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        text = text[1:close] + text[close + 1 :]
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise
        return None


@dataclass
class HostAddrList:
    """A host/address list such as `mynetworks`: networks, host names and tables."""

    items: list[tuple[bool, Network | str | Map]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, patterns: Iterable[str], registry: Registry) -> HostAddrList:
        out = cls()
        for pattern in _expand_files(patterns):
            neg = pattern.startswith("!")
            bare = pattern[1:] if neg else pattern
            try:
                net = parse_network(bare)
            except ValueError:
                out.errors.append(bare)
                out.items.append((neg, "\0error:" + bare))
                continue
            if net is not None:
                out.items.append((neg, net))
            elif ":" in bare and not bare.startswith("["):
                out.items.append((neg, registry.open_or_failed(bare)))
            else:
                out.items.append((neg, bare.lower()))
        return out

    def match(self, name: str, addr: str) -> bool:
        """True if the client matches; raises MapTempError for a bad pattern or table failure."""
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        name = name.lower()
        for neg, item in self.items:
            if isinstance(item, str):
                if item.startswith("\0error:"):
                    raise MapTempError(f"bad address pattern: {item[7:]}")
                hit = name == item or name.endswith("." + item.lstrip(".")) if name else False
            elif isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
                hit = ip is not None and ip.version == item.version and ip in item
            else:
                hit = item.lookup(name) is not None or item.lookup(addr) is not None
            if hit:
                return not neg
        return False
