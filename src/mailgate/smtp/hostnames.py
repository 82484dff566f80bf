"""Host name and address syntax as Postfix's valid_hostname.c checks it."""

from __future__ import annotations

import ipaddress


def truncate_dot(name: str) -> str:
    """One trailing dot is dropped, but not from `..` (dup_if_truncate)."""
    if len(name) > 1 and name.endswith(".") and name[-2] != ".":
        return name[:-1]
    return name


def valid_hostname(name: str) -> bool:
    """Labels of letters, digits, `_` and inner `-`, 63 chars each, 255 in all; not numeric."""
    if not name or len(name) > 255:
        return False
    non_numeric = False
    for label in name.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if ch == "-" or ch == "_" or (ch.isascii() and ch.isalpha()):
                non_numeric = True
            elif not (ch.isascii() and ch.isdigit()):
                return False
    return non_numeric


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
