"""Postfix's access-table keys for host names and client addresses (spec §c.3).

Each key comes with "is partial": partial keys (parent domains, address prefixes) go only to
fixed-key tables (hash, texthash, inline, ...), never to regexp/pcre/cidr. E-mail addresses
use mail_addr_find's order (maps/addr_find.py). engine/access.py does the lookups.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterator

from mailgate.maps.casefold import ascii_lower

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=65536)
def parse_ip(text: str) -> IPAddress | None:
    """An address (an IPv4-mapped IPv6 address as IPv4), or None; cached: the same client
    addresses are parsed by every table of every request."""
    try:  # inet_pton is the fast path for IPv4; ipaddress gives the same answers
        return ipaddress.IPv4Address(int.from_bytes(socket.inet_pton(socket.AF_INET, text)))
    except (OSError, ValueError):
        pass
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parents(domain: str, parent_matches: bool) -> Iterator[tuple[str, bool]]:
    name = domain
    while "." in name:
        name = name.split(".", 1)[1]
        if not name:
            break
        yield (name if parent_matches else "." + name), True


def host_keys(name: str, parent_matches: bool = True) -> Iterator[tuple[str, bool]]:
    """A host name: the name, then its parent domains. A name that is an IP address (a HELO
    `1.2.3.4`) or an address literal `[...]` gets the exact lookup only. Like Postfix, only
    ASCII is lowercased here; a table folds the rest itself (casefold.fold)."""
    name = ascii_lower(name) if name else name
    yield name, False
    if name.startswith("["):
        return
    if parse_ip(name) is not None:
        return
    yield from _parents(name, parent_matches)


def address_keys(addr: str) -> Iterator[tuple[str, bool]]:
    """A client address: IPv4 `1.2.3.4`, `1.2.3`, `1.2`, `1`; IPv6 compressed, then cut at the
    last `:` repeatedly (`2001:db8:0:2::9`, `2001:db8:0:2:`, `2001:db8:0:2`, ...)."""
    ip = parse_ip(addr)
    if ip is None:
        yield addr, False
        return
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
