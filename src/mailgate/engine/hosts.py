"""Restrictions on the HELO argument and on the client's name lookup status."""

from __future__ import annotations

from mailgate.engine.context import NAME_OK, NAME_PERM
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.reply import Status
from mailgate.smtp.hostnames import (
    truncate_dot,
    valid_hostaddr,
    valid_hostname,
    valid_mailhost_literal,
    valid_utf8_hostname,
)


def invalid_hostaddr(ev: Evaluation, addr: str, frame: Frame) -> Status:
    inner = addr[1:-1] if len(addr) > 2 and addr[0] == "[" and addr[-1] == "]" else addr
    if valid_mailhost_literal(inner):
        return Status.DUNNO
    return ev.reject(ev.settings.code("invalid_hostname_reject_code"), "5.5.2",
                     f"<{frame.name}>: {frame.cls} rejected: invalid ip address")


def valid_name(ev: Evaluation, name: str) -> bool:
    """valid_utf8_hostname(SMTPUTF8 requested, name): non-ASCII only with SMTPUTF8, converted
    by smtpd's midna cache (its warning logged)."""
    if name.isascii():
        return valid_hostname(name)
    return ev.st.smtputf8 and valid_utf8_hostname(
        name, lambda n: ev.tables.idna.to_ascii(n, ev.warn))


@restriction("reject_invalid_helo_hostname", "reject_invalid_hostname")
def reject_invalid_helo_hostname(ev: Evaluation, frame: Frame, args: Args) -> Status:
    helo = ev.helo
    if helo is None:
        return Status.DUNNO
    if helo.startswith("["):
        return invalid_hostaddr(ev, helo, Frame(helo, "Helo command", frame.acl))
    name = truncate_dot(helo)
    if valid_hostname(name) or valid_hostaddr(name):
        return Status.DUNNO
    return ev.reject(ev.settings.code("invalid_hostname_reject_code"), "5.5.2",
                     f"<{helo}>: Helo command rejected: Invalid name")


@restriction("reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname")
def reject_non_fqdn_helo_hostname(ev: Evaluation, frame: Frame, args: Args) -> Status:
    helo = ev.helo
    if helo is None:
        return Status.DUNNO
    if helo.startswith("["):
        return invalid_hostaddr(ev, helo, Frame(helo, "Helo command", frame.acl))
    name = truncate_dot(helo)
    if valid_name(ev, name) and "." in name:
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


@restriction("permit_naked_ip_address")
def permit_naked_ip_address(ev: Evaluation, frame: Frame, args: Args) -> Status:
    """Deprecated (removed in 3.9): OK for a HELO that is a bare, valid IP address."""
    ev.warn("restriction permit_naked_ip_address is deprecated. "
            "Use permit_mynetworks or permit_sasl_authenticated instead")
    helo = ev.helo
    if helo is None or helo.strip("0123456789.:"):
        return Status.DUNNO
    if invalid_hostaddr(ev, helo, Frame(helo, "Helo command", frame.acl)) is Status.DUNNO:
        return ev.permit("permit_naked_ip_address", Frame(helo, "Helo command", frame.acl))
    return Status.REJECT
