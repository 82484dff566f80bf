"""Host name and address syntax as Postfix's valid_hostname.c checks it."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable


def truncate_dot(name: str) -> str:
    """One trailing dot is dropped, but not from `..` (dup_if_truncate)."""
    if len(name) > 1 and name.endswith(".") and name[-2] != ".":
        return name[:-1]
    return name


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NUMERIC = re.compile(r"[0-9.]*")


@functools.lru_cache(maxsize=4096)
def valid_hostname(name: str) -> bool:
    """Labels of letters, digits, `_` and inner `-`, 63 chars each, 255 in all; not numeric."""
    return (0 < len(name) <= 255 and _HOSTNAME.fullmatch(name) is not None
            and _NUMERIC.fullmatch(name) is None)


def valid_ipv4(addr: str) -> bool:
    parts = addr.split(".")
    if len(parts) != 4 or any(not p.isascii() or not p.isdigit() for p in parts):
        return False
    if any(int(p) > 255 for p in parts):
        return False
    return not (int(parts[0]) == 0 and any(int(p) for p in parts[1:]))


def valid_ipv6(addr: str) -> bool:
    if "%" in addr or not addr or any(c not in "0123456789abcdefABCDEF:." for c in addr):
        return False
    try:
        ipaddress.IPv6Address(addr)
    except ValueError:
        return False
    return True


def valid_hostaddr(addr: str) -> bool:
    return valid_ipv6(addr) if ":" in addr else valid_ipv4(addr)


def valid_mailhost_literal(text: str) -> bool:
    """The inside of `[...]`: an IPv4 address or `IPv6:` and an IPv6 address."""
    if text[:5].lower() == "ipv6:":
        return valid_ipv6(text[5:])
    return valid_ipv4(text)


def valid_domain(domain: str) -> bool:
    """A mail domain: a host name or an address literal `[1.2.3.4]` / `[IPv6:...]`."""
    if domain.startswith("[") and domain.endswith("]"):
        return valid_mailhost_literal(domain[1:-1])
    return valid_hostname(domain)


def valid_utf8_hostname(name: str, to_ascii: Callable[[str], str | None]) -> bool:
    """valid_utf8_hostname() with EAI on: an ASCII name passes valid_hostname(); a non-ASCII
    one is valid when `to_ascii` (midna_domain_to_ascii(), which applies valid_hostname() to
    its result) converts it."""
    if not name:
        return False
    if name.isascii():
        return valid_hostname(name)
    return to_ascii(name) is not None


@functools.lru_cache(maxsize=4096)
def address_value(addr: str) -> tuple[int, int] | None:
    """(IP version, integer value) of an address as Python's ipaddress parses it, or None;
    IPv4 without the ipaddress module (the hot path: every client address)."""
    parts = addr.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3
                               and (len(p) == 1 or p[0] != "0") for p in parts):
        a, b, c, d = (int(p) for p in parts)
        if a < 256 and b < 256 and c < 256 and d < 256:
            return 4, a << 24 | b << 16 | c << 8 | d
        return None
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    return ip.version, int(ip)
