"""Postfix's access-table lookup order (smtpd_check.c check_*_access; spec §c.3).

Full keys go to every table; partial keys (parent domains, `user@`, address prefixes) only to
fixed-key tables (hash, texthash, inline, ...), never to regexp/pcre/cidr. The first key found
ends the search, whatever its value (DUNNO included).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from mailgate.maps.addr_find import split_extension
from mailgate.maps.base import Map


@dataclass(frozen=True, slots=True)
class Found:
    value: str
    key: str  # the key that matched (for `mailgate check` and logs)


def _first(table: Map, keys: Iterator[tuple[str, bool]]) -> Found | None:
    """Look up (key, is_partial) pairs in order; raises MapError from the table."""
    for key, partial in keys:
        if partial and not table.fixed:
            continue
        value = table.lookup(key)
        if value is not None:
            return Found(value, key)
    return None


def _parents(domain: str, parent_matches: bool) -> Iterator[tuple[str, bool]]:
    name = domain
    while "." in name:
        name = name.split(".", 1)[1]
        if not name:
            break
        yield (name if parent_matches else "." + name), True


def host_keys(name: str, parent_matches: bool = True) -> Iterator[tuple[str, bool]]:
    """A host name: the name, then its parent domains. A name that is an IP address (a HELO
    `1.2.3.4`) or an address literal `[...]` gets the exact lookup only."""
    name = name.lower() if name else name
    yield name, False
    if name.startswith("["):
        return
    try:
        ipaddress.ip_address(name)
        return
    except ValueError:
        pass
    yield from _parents(name, parent_matches)


def address_keys(addr: str) -> Iterator[tuple[str, bool]]:
    """A client address: IPv4 `1.2.3.4`, `1.2.3`, `1.2`, `1`; IPv6 compressed, then cut at the
    last `:` repeatedly (`2001:db8:0:2::9`, `2001:db8:0:2:`, `2001:db8:0:2`, ...)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        yield addr, False
        return
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    text = str(ip)
    yield text, False
    if ip.version == 4:
        parts = text.split(".")
        for n in (3, 2, 1):
            yield ".".join(parts[:n]), True
        return
    while ":" in text:
        text = text[: text.rindex(":")]
        if text:
            yield text, True


def email_keys(address: str, delimiter: str = "", parent_matches: bool = True
               ) -> Iterator[tuple[str, bool]]:
    """An e-mail address: `user+ext@domain`, `user@domain`, `domain` and its parents,
    `user+ext@`, `user@` (the `user@domain` and `user@` forms only with an extension)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    domain = domain.lower()
    yield f"{local}@{domain}" if at else local, False
    base = local
    if local.lower() not in ("postmaster", "mailer-daemon"):
        base = split_extension(local, delimiter)[0]
    if at and base != local:
        yield f"{base}@{domain}", True
    if domain:
        yield domain, True
        if not domain.startswith("["):
            yield from _parents(domain, parent_matches)
    yield f"{local}@", True
    if base != local:
        yield f"{base}@", True


def find_host(table: Map, name: str, parent_matches: bool = True) -> Found | None:
    return _first(table, host_keys(name, parent_matches))


def find_client(table: Map, name: str, addr: str, parent_matches: bool = True) -> Found | None:
    """check_client_access: the name part first (any hit ends it), then the address part."""
    found = _first(table, host_keys(name, parent_matches))
    if found is not None:
        return found
    return _first(table, address_keys(addr))


def find_email(table: Map, address: str, delimiter: str = "", parent_matches: bool = True,
               null_key: str = "<>") -> Found | None:
    """check_sender_access / check_recipient_access; the null sender uses `null_key` only."""
    if address == "":
        return _first(table, iter([(null_key, False)]))
    return _first(table, email_keys(address, delimiter, parent_matches))
