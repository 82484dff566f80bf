"""Postfix match lists: domain lists (mydestination, relay_domains) and host/address lists.

A list holds patterns, `!pattern`, `/file/name` (the file's words) and `type:table` lookups;
the first matching pattern decides (a `!` match means "no"). Domain patterns match exactly,
and also subdomains when the parameter is in `parent_domain_matches_subdomains`; a `.domain`
pattern always matches subdomains.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError, MapError, MapTempError
from mailgate.maps.base import FailedMap, Map, Registry
from mailgate.maps.casefold import fold
from mailgate.maps.cidr import PatternError, parse_network
from mailgate.smtp.hostnames import address_value


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
    origin: str = ""
    warn: Callable[[str], None] = field(default=lambda text: None, repr=False)
    utf8: bool = True  # smtputf8_enable: fold with Unicode case folding (Postfix casefold)

    @classmethod
    def build(cls, patterns: Iterable[str], registry: Registry,
              parent_matches: bool = False, origin: str = "",
              warn: Callable[[str], None] = lambda text: None) -> DomainList:
        utf8 = registry.options.utf8
        items: list[tuple[bool, str | Map]] = []
        for pattern in _expand_files(patterns):
            neg = pattern.startswith("!")
            bare = pattern[1:] if neg else pattern
            if ":" in bare and not bare.startswith("["):
                items.append((neg, registry.open_or_failed(bare)))
            else:
                items.append((neg, fold(bare, utf8)))
        return cls(items, parent_matches, origin, warn, utf8)

    def match(self, domain: str) -> bool:
        """True if `domain` matches; raises MapError when a table lookup fails (warned about
        as Postfix does: `ORIGIN: TABLE: table lookup problem`)."""
        domain = fold(domain, self.utf8).rstrip(".")
        for neg, pattern in self.patterns:
            if isinstance(pattern, str):
                hit = self._match_name(pattern, domain)
            else:
                try:
                    hit = self._match_table(pattern, domain)
                except MapError:
                    self.warn(f"warning: {self.origin}: {pattern.spec}: table lookup problem")
                    raise
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


class ListError(Exception):
    """A pattern or table of a host/address list failed: Postfix's match result ERROR."""


@dataclass
class HostAddrList:
    """A host/address list such as `mynetworks` (Postfix namadr_list / match_list).

    Patterns are checked in order; `!` (repeatable) inverts; `/file` expands to its words;
    `type:table` is looked up with the host name, then the address. Address patterns are
    parsed when first compared, as Postfix does: a bad pattern or a failing table makes the
    whole match an ERROR (`match()` raises MapTempError) and is warned about via `warn`.
    """

    items: list[tuple[bool, str | Map | ListError]] = field(default_factory=list)
    origin: str = "mynetworks"
    parent_matches: bool = True
    warn: Callable[[str], None] = field(default=lambda text: None, repr=False)
    utf8: bool = True  # smtputf8_enable: fold with Unicode case folding (Postfix casefold)

    @classmethod
    def build(cls, patterns: Iterable[str], registry: Registry, origin: str = "mynetworks",
              parent_matches: bool = True,
              warn: Callable[[str], None] = lambda text: None) -> HostAddrList:
        out = cls(origin=origin, parent_matches=parent_matches, warn=warn,
                  utf8=registry.options.utf8)
        for pattern in patterns:
            neg = False
            while pattern.startswith("!"):
                neg, pattern = not neg, pattern[1:]
            if pattern.startswith("/"):
                try:
                    with open(pattern, encoding="utf-8") as f:
                        words = split_list(" ".join(line for line in f.read().splitlines()
                                                    if not line.lstrip().startswith("#")))
                except OSError as exc:
                    reason = f"open file {pattern}: {exc.strerror}"
                    out.items.append((neg, out._unavailable(f"non-existent:{pattern}", reason)))
                    continue
                for word in words:
                    wneg = neg
                    while word.startswith("!"):
                        wneg, word = not wneg, word[1:]
                    out.items.append((wneg, fold(word, out.utf8)))
            elif ":" in pattern and not pattern.startswith("["):
                try:
                    out.items.append((neg, registry.open(pattern)))
                except MapConfigError as exc:
                    out.items.append((neg, out._unavailable(pattern, str(exc))))
            else:
                out.items.append((neg, fold(pattern, out.utf8)))
        return out

    def _unavailable(self, spec: str, reason: str) -> Map:
        """A table that cannot be opened: reported now, an ERROR at every match."""
        self.warn(f"error: {reason}")
        self.warn(f"warning: {spec} is unavailable. {reason}")
        return FailedMap(spec, reason)

    def match(self, name: str, addr: str) -> bool:
        """True if the client matches; raises MapTempError for a bad pattern or table failure."""
        if addr.lower().startswith("::ffff:") and "." in addr:
            addr = addr[7:]
        name = fold(name, self.utf8)
        for neg, item in self.items:
            try:
                if isinstance(item, ListError):
                    raise item
                if isinstance(item, str):
                    hit = self._match_name(item, name) or _match_addr(item, addr)
                else:
                    hit = self._match_table(item, name, addr)
            except ListError as exc:
                self.warn(f"warning: {self.origin}: {exc}")
                raise MapTempError(str(exc)) from exc
            if hit:
                return not neg
        return False

    def _match_name(self, pattern: str, name: str) -> bool:
        if not name or pattern.startswith("[") or _is_address_pattern(pattern):
            return False
        if name == pattern:
            return True
        if pattern.startswith("."):
            return name.endswith(pattern)
        return self.parent_matches and name.endswith("." + pattern)

    def _match_table(self, table: Map, name: str, addr: str) -> bool:
        try:
            return (bool(name) and table.lookup(name) is not None) or \
                table.lookup(addr) is not None
        except MapError as exc:
            raise ListError(f"{table.spec}: table lookup problem") from exc


def _is_address_pattern(pattern: str) -> bool:
    return all(c in "0123456789./" for c in pattern) and any(c.isdigit() for c in pattern)


def _match_addr(pattern: str, addr: str) -> bool:
    """Postfix match_hostaddr(): exact text, then (same family, net/mask or IPv6) CIDR match."""
    if not pattern.startswith("["):
        if addr.lower() == pattern:
            return True
    elif pattern == f"[{addr.lower()}]":
        return True
    if (":" in addr) != (":" in pattern) or not any(c in pattern for c in ":/"):
        return False
    if pattern.startswith("["):  # match_hostaddr() drops the brackets before parsing
        close = pattern.find("]")
        if close > 0:
            pattern = pattern[1:close] + pattern[close + 1 :]
    network = _network(pattern)
    if isinstance(network, str):
        raise ListError(network)
    ip = address_value(addr)
    return ip is not None and ip[0] == network[0] and ip[1] & network[2] == network[1]


@functools.lru_cache(maxsize=1024)
def _network(pattern: str) -> tuple[int, int, int] | str:
    """A parsed pattern as (version, network, mask) integers, or why it is bad; patterns come
    from the configuration."""
    try:
        net = parse_network(pattern)
    except PatternError as why:
        return str(why)
    return net.version, int(net.network_address), int(net.netmask)
