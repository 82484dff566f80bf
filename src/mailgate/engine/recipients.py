"""Address restrictions: relay control, unknown users (recipient tables) and non-FQDN
addresses (smtpd_check.c permit_auth_destination, check_rcpt_maps, reject_non_fqdn_address)."""

from __future__ import annotations

from mailgate.addressing import AddressClass, Resolved, find_address
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.hosts import valid_name
from mailgate.engine.reply import RECIPIENT, SENDER, Status, dsn_fix, dsn_split
from mailgate.errors import MapConfigError, MapError
from mailgate.maps.base import Map
from mailgate.smtp.hostnames import truncate_dot


def authorized_destination(ev: Evaluation, addr: str) -> bool:
    """Final destination or relay_domains, and no sender-specified routing (unless
    allow_untrusted_routing): the test behind permit_auth_destination."""
    resolved = ev.resolve(addr)
    if "@" not in resolved.address:
        return True
    if not ev.settings.allow_untrusted_routing and resolved.routed:
        return False
    return resolved.cls.final or resolved.cls is AddressClass.RELAY


@restriction("permit_auth_destination")
def permit_auth_destination(ev: Evaluation, frame: Frame, args: Args) -> Status:
    recipient = ev.recipient
    if recipient is not None and authorized_destination(ev, recipient):
        return ev.permit("permit_auth_destination", frame)
    return Status.DUNNO


def _unauth(ev: Evaluation, code: int, dsn: str) -> Status:
    recipient = ev.recipient
    if recipient is None or authorized_destination(ev, recipient):
        return Status.DUNNO
    return ev.reject(code, dsn, f"<{recipient}>: Relay access denied")


@restriction("reject_unauth_destination")
def reject_unauth_destination(ev: Evaluation, frame: Frame, args: Args) -> Status:
    return _unauth(ev, ev.settings.code("relay_domains_reject_code"), "5.7.1")


@restriction("defer_unauth_destination")
def defer_unauth_destination(ev: Evaluation, frame: Frame, args: Args) -> Status:
    return _unauth(ev, ev.settings.code("relay_domains_reject_code") - 100, "4.7.1")


@restriction("check_relay_domains")
def check_relay_domains(ev: Evaluation, frame: Frame, args: Args) -> Status:
    """Removed in Postfix 3.9: permit mynetworks clients and authorized destinations."""
    if "check_relay_domains" not in ev.tables.warned:  # once per process, as smtpd
        ev.tables.warned.add("check_relay_domains")
        ev.warn('support for restriction "check_relay_domains" will be removed from Postfix; '
                'use "reject_unauth_destination" instead')
    recipient = ev.recipient
    if recipient is None:
        return Status.DUNNO
    if authorized_destination(ev, recipient):
        return Status.OK
    client = ev.st.client
    try:
        if ev.tables.mynetworks.match(client.name, client.addr):
            return Status.OK
    except MapError:
        ev.dict_retry(frame.name)
    return ev.reject(ev.settings.code("relay_domains_reject_code"), "5.7.1",
                     f"<{recipient}>: {frame.cls} rejected: Relay access denied")


def _non_fqdn(ev: Evaluation, addr: str, cls: str) -> Status:
    domain = addr.rpartition("@")[2] if "@" in addr else ""
    if domain.startswith("[") and domain.endswith("]"):
        return Status.DUNNO
    name = truncate_dot(domain)
    if name and valid_name(ev, name) and "." in name:
        return Status.DUNNO
    return ev.reject(ev.settings.code("non_fqdn_reject_code"), "4.5.2",
                     f"<{addr}>: {cls} rejected: need fully-qualified address")


@restriction("reject_non_fqdn_sender")
def reject_non_fqdn_sender(ev: Evaluation, frame: Frame, args: Args) -> Status:
    sender = ev.sender
    return _non_fqdn(ev, sender, SENDER) if sender else Status.DUNNO


@restriction("reject_non_fqdn_recipient")
def reject_non_fqdn_recipient(ev: Evaluation, frame: Frame, args: Args) -> Status:
    recipient = ev.recipient
    return _non_fqdn(ev, recipient, RECIPIENT) if recipient else Status.DUNNO


@restriction("reject_unlisted_recipient", "check_recipient_maps")
def reject_unlisted_recipient(ev: Evaluation, frame: Frame, args: Args) -> Status:
    recipient = ev.recipient
    return check_rcpt_maps(ev, recipient, RECIPIENT) if recipient else Status.DUNNO


@restriction("reject_unlisted_sender")
def reject_unlisted_sender(ev: Evaluation, frame: Frame, args: Args) -> Status:
    sender = ev.sender
    return check_rcpt_maps(ev, sender, SENDER) if sender else Status.DUNNO


def _match(ev: Evaluation, table: Map | None, resolved: Resolved, name: str) -> bool:
    """mail_addr_find() in a recipient table; a failure ends the check with a 451."""
    return table is not None and address_lookup(ev, table, resolved, name) is not None


def address_lookup(ev: Evaluation, table: Map, resolved: Resolved, name: str) -> str | None:
    """mail_addr_find() of a resolved address (recipient tables, smtpd_sender_login_maps);
    a broken table ends the check with a 451 4.3.5, a failed lookup with a 451 4.3.0."""
    try:
        return find_address(table, resolved.address, ev.settings.recipient_delimiter,
                            local=resolved.cls is AddressClass.LOCAL)
    except MapConfigError:
        ev.warn(f'{table.spec} lookup error for "{resolved.address}"')
        ev.server_error()
    except MapError:
        ev.warn(f'{table.spec} lookup error for "{resolved.address}"')
        ev.dict_retry(name)


_ABSORBED = ("postmaster", "mailer-daemon")


def check_rcpt_maps(ev: Evaluation, addr: str, cls: str) -> Status:
    """Would this address be deliverable here? Known if a canonical or virtual alias table has
    it, else it must be in the recipient table of its address class ("User unknown")."""
    tables, settings = ev.tables, ev.settings
    resolved = ev.resolve(addr)
    if (_match(ev, tables.recipient_canonical_maps, resolved, addr)
            or (cls == SENDER and _match(ev, tables.sender_canonical_maps, resolved, addr))
            or _match(ev, tables.canonical_maps, resolved, addr)
            or _match(ev, tables.virtual_alias_maps, resolved, addr)):
        return Status.DUNNO
    table_name = settings.show_user_unknown_table_name
    sender = cls == SENDER
    if resolved.cls is AddressClass.ALIAS:
        text = tables.alias_unknown_text or \
            ("5.1.1 User unknown in virtual alias table" if table_name else "5.1.1 User unknown")
        dsn, detail = dsn_split("5.1.0" if sender else "5.1.1", text)
        return ev.reject(settings.code("unknown_virtual_alias_reject_code"),
                         dsn_fix(dsn, cls, ev.info), f"<{addr}>: {cls} rejected: {detail}")
    code_name, table, where = "", None, ""
    if resolved.cls is AddressClass.LOCAL:
        lowered = resolved.address.lower()
        if lowered.startswith(settings.double_bounce_sender.lower()) or \
                lowered.startswith(_ABSORBED):
            return _checked(ev, cls)
        code_name, table, where = ("unknown_local_recipient_reject_code",
                                   tables.local_recipient_maps, "local recipient table")
    elif resolved.cls is AddressClass.VIRTUAL:
        code_name, table, where = ("unknown_virtual_mailbox_reject_code",
                                   tables.virtual_mailbox_maps, "virtual mailbox table")
    elif resolved.cls is AddressClass.RELAY:
        code_name, table, where = ("unknown_relay_recipient_reject_code",
                                   tables.relay_recipient_maps, "relay recipient table")
    if table is not None and not _match(ev, table, resolved, addr):
        unknown = f"User unknown in {where}" if table_name else "User unknown"
        return ev.reject(settings.code(code_name), "5.1.0" if sender else "5.1.1",
                         f"<{addr}>: {cls} rejected: {unknown}")
    return _checked(ev, cls)


def _checked(ev: Evaluation, cls: str) -> Status:
    if cls == SENDER:
        ev.st.sender_rcptmap_checked = True
    else:
        ev.rcptmap_checked = True
    return Status.DUNNO
