"""Host name and address syntax (Postfix valid_hostname.c) and the restrictions on the HELO
argument and on the client's name lookup status."""

from __future__ import annotations

import ipaddress

from mailgate.engine.context import NAME_OK, NAME_PERM
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.reply import Status


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


def _invalid_hostaddr(ev: Evaluation, addr: str, frame: Frame) -> Status:
    inner = addr[1:-1] if len(addr) > 2 and addr[0] == "[" and addr[-1] == "]" else addr
    if valid_mailhost_literal(inner):
        return Status.DUNNO
    return ev.reject(ev.settings.code("invalid_hostname_reject_code"), "5.5.2",
                     f"<{frame.name}>: {frame.cls} rejected: invalid ip address")


@restriction("reject_invalid_helo_hostname", "reject_invalid_hostname")
def reject_invalid_helo_hostname(ev: Evaluation, frame: Frame, args: Args) -> Status:
    helo = ev.st.helo
    if helo is None:
        return Status.DUNNO
    if helo.startswith("["):
        return _invalid_hostaddr(ev, helo, Frame(helo, "Helo command", frame.acl))
    name = truncate_dot(helo)
    if valid_hostname(name) or valid_hostaddr(name):
        return Status.DUNNO
    return ev.reject(ev.settings.code("invalid_hostname_reject_code"), "5.5.2",
                     f"<{helo}>: Helo command rejected: Invalid name")


@restriction("reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname")
def reject_non_fqdn_helo_hostname(ev: Evaluation, frame: Frame, args: Args) -> Status:
    helo = ev.st.helo
    if helo is None:
        return Status.DUNNO
    if helo.startswith("["):
        return _invalid_hostaddr(ev, helo, Frame(helo, "Helo command", frame.acl))
    name = truncate_dot(helo)
    if valid_hostname(name) and "." in name:
        return Status.DUNNO
    return ev.reject(ev.settings.code("non_fqdn_reject_code"), "5.5.2",
                     f"<{helo}>: Helo command rejected: need fully-qualified hostname")


@restriction("reject_unknown_client_hostname", "reject_unknown_client")
def reject_unknown_client_hostname(ev: Evaluation, frame: Frame, args: Args) -> Status:
    client = ev.st.client
    if client.name_status == NAME_OK:
        return Status.DUNNO
    code = ev.settings.code("unknown_client_reject_code") \
        if client.name_status >= NAME_PERM else 450
    return ev.reject(code, "4.7.25",
                     f"Client host rejected: cannot find your hostname, [{client.addr}]")


@restriction("reject_unknown_reverse_client_hostname")
def reject_unknown_reverse_client_hostname(ev: Evaluation, frame: Frame, args: Args) -> Status:
    client = ev.st.client
    if client.reverse_status == NAME_OK:
        return Status.DUNNO
    code = ev.settings.code("unknown_client_reject_code") \
        if client.reverse_status >= NAME_PERM else 450
    return ev.reject(code, "4.7.1",
                     f"Client host rejected: cannot find your reverse hostname, [{client.addr}]")
