"""Postfix's access-table keys for host names and client addresses (spec §c.3).

Each key comes with "is partial": partial keys (parent domains, address prefixes) go only to
fixed-key tables (hash, texthash, inline, ...), never to regexp/pcre/cidr. E-mail addresses
use mail_addr_find's order (maps/addr_find.py). engine/access.py does the lookups.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator


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
