"""check_*_access: access(5) tables in Postfix's lookup order, and what their values do
(smtpd_check.c check_table_result)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailgate.config.maincf import split_list
from mailgate.engine.evaluate import Args, Evaluation, Frame, restriction
from mailgate.engine.reply import RECIPIENT, SENDER, Status, dsn_fix, dsn_split
from mailgate.errors import MapError
from mailgate.maps.access import address_keys, host_keys
from mailgate.maps.addr_find import lookup_keys
from mailgate.maps.base import Map

_CONFIG_ERROR = "451 4.3.5 Server configuration error"
_HEADER = re.compile(r"[!-9;-~]+[ \t]*:")  # Postfix is_header(): `name:` starts the text


def first_match(ev: Evaluation, table: Map, keys: Iterator[tuple[str, bool]]
           ) -> tuple[str, str] | None:
    """(value, key) of the first key the table has; a lookup failure gives the 451 value."""
    for key, partial in keys:
        if partial and not table.fixed:
            continue
        try:
            value = table.lookup(key)
        except MapError:
            ev.warn(f'{table.spec} lookup error for "{key}"')
            ev.matched = key
            return _CONFIG_ERROR, key
        if value == "":  # maps_find(): an empty result is a configuration error
            ev.warn(f"{table.spec} lookup of {key} returns an empty string result")
            ev.warn(f"{table.spec} should return NO RESULT in case of NOT FOUND")
            ev.matched = key
            return _CONFIG_ERROR, key
        if value is not None:
            if ev.st.trace is not None:  # the note is made only for `mailgate check`
                ev.note(f"{table.spec}: {key} -> {value}")
            ev.matched = key
            return value, key
    if ev.st.trace is not None:
        ev.note(f"{table.spec}: not found")
    return None


def table_argument(ev: Evaluation, args: Args, name: str) -> tuple[str, Map]:
    spec = args.peek()
    if spec is None or ":" not in spec:
        ev.warn(f"restriction {name} requires maptype:mapname")
        ev.server_error()
    args.take()
    return spec, ev.tables.access.get(spec)


async def found_result(ev: Evaluation, spec: str, table: Map,
                       keys: Iterator[tuple[str, bool]], datum: str, frame: Frame
                       ) -> tuple[Status, bool]:
    """The first key's action, and whether any key was found (a DUNNO entry also ends
    Postfix's search)."""
    found = first_match(ev, table, keys)
    if found is None:
        return Status.DUNNO, False
    return await table_result(ev, spec, found[0], datum, frame), True


async def _host_access(ev: Evaluation, spec: str, table: Map, name: str, addr: str | None,
                       frame: Frame) -> Status:
    """check_namadr_access / check_domain_access: the name and its parents, then (for
    clients) the address and its prefixes; any entry found ends the search."""
    status, found = await found_result(ev, spec, table,
                                       host_keys(name, ev.settings.access_parent_matches),
                                       name, frame)
    if found or addr is None:
        return status
    return (await found_result(ev, spec, table, address_keys(addr), addr, frame))[0]


@restriction("check_client_access")
async def check_client_access(ev: Evaluation, frame: Frame, args: Args) -> Status:
    spec, table = table_argument(ev, args, "check_client_access")
    st = ev.st
    return await _host_access(ev, spec, table, st.client.name, st.client.addr,
                              Frame(st.namaddr, "Client host", frame.acl))


@restriction("check_reverse_client_hostname_access")
async def check_reverse_client_access(ev: Evaluation, frame: Frame, args: Args) -> Status:
    spec, table = table_argument(ev, args, "check_reverse_client_hostname_access")
    client = ev.st.client
    status = await _host_access(ev, spec, table, client.reverse_name, client.addr,
                                Frame(client.reverse_name, "Unverified Client host", frame.acl))
    return forbid_ok(ev, "check_reverse_client_hostname_access", status, client.reverse_name)


def forbid_ok(ev: Evaluation, name: str, status: Status, target: str) -> Status:
    """An unverified name must not whitelist (smtpd_check.c forbid_whitelist)."""
    if status is Status.OK and not ev.st.marks.discard:
        ev.warn(f"restriction {name} returns OK for {target}")
        ev.warn("this is not allowed for security reasons")
        ev.warn("use DUNNO instead of OK if you want to make an exception")
        ev.server_error()
    return status


@restriction("check_helo_access")
async def check_helo_access(ev: Evaluation, frame: Frame, args: Args) -> Status:
    spec, table = table_argument(ev, args, "check_helo_access")
    helo = ev.helo
    if helo is None:
        return Status.DUNNO
    return await _host_access(ev, spec, table, helo, None, Frame(helo, "Helo command", frame.acl))


@restriction("check_etrn_access")
async def check_etrn_access(ev: Evaluation, frame: Frame, args: Args) -> Status:
    spec, table = table_argument(ev, args, "check_etrn_access")
    if ev.st.where != "ETRN":
        return Status.DUNNO
    return await _host_access(ev, spec, table, frame.name, None,
                              Frame(frame.name, "Etrn command", frame.acl))


@restriction("check_sender_access")
async def check_sender_access(ev: Evaluation, frame: Frame, args: Args) -> Status:
    spec, table = table_argument(ev, args, "check_sender_access")
    sender = ev.sender
    if sender is None:
        return Status.DUNNO
    where = Frame(sender, SENDER, frame.acl)
    if sender == "":
        found = first_match(ev, table, iter([(ev.settings.null_access_key, False)]))
        if found is None:
            return Status.DUNNO
        return await table_result(ev, spec, found[0], found[1], where)
    return await _mail_access(ev, spec, table, sender, where)


@restriction("check_recipient_access")
async def check_recipient_access(ev: Evaluation, frame: Frame, args: Args) -> Status:
    spec, table = table_argument(ev, args, "check_recipient_access")
    recipient = ev.recipient
    if recipient is None:
        return Status.DUNNO
    return await _mail_access(ev, spec, table, recipient, Frame(recipient, RECIPIENT, frame.acl))


async def _mail_access(ev: Evaluation, spec: str, table: Map, addr: str, frame: Frame) -> Status:
    """check_mail_access(): the resolved address by mail_addr_find's access strategy; an OK
    for a source-routed recipient is not trusted."""
    resolved = ev.resolve(addr)
    settings = ev.settings
    strategy = frozenset({"full", "noext", "domain", "localpart_at",
                          "pdms" if settings.access_parent_matches else "pddms"})
    keys = lookup_keys(table.fixed, resolved.address, strategy, "external-first",
                       settings.recipient_delimiter)
    found = first_match(ev, table, ((key, False) for key, _ in keys))
    if found is None:
        return Status.DUNNO
    status = await table_result(ev, spec, found[0], resolved.address, frame)
    suspicious = (not settings.allow_untrusted_routing and resolved.routed
                  and frame.cls == RECIPIENT)
    return Status.DUNNO if status is Status.OK and suspicious else status


async def table_result(ev: Evaluation, table: str, value: str, datum: str,
                       frame: Frame) -> Status:
    """What an access-table value does (access(5); order as in check_table_result)."""
    word, _, text = value.partition(" ")
    if "\t" in word:
        word, _, rest = word.partition("\t")
        text = rest + (" " + text if text else "")
    text = text.strip(" \t")
    action = ACTIONS.get(word.upper())
    if action is not None:
        return action(ev, table, text, datum, frame)
    if value.isdigit():
        return ev.permit(value, frame, f"from {table}")
    if len(word) == 3 and word.isdigit() and word[0] in "45" and text:
        dsn, detail = dsn_split(f"{word[0]}.7.1", text)
        return ev.reject(int(word), dsn_fix(dsn, frame.cls, ev.info),
                         f"<{frame.name}>: {frame.cls} rejected: {detail}")
    if word.upper() in ("OK", "RELAY"):
        return ev.permit(word, frame, f"from {table}")
    if ":" in value:
        ev.warn(f"access table {table} has entry with lookup table: {value}")
        ev.warn("do not specify lookup tables inside SMTPD access maps")
        ev.warn("define a restriction class and specify its name instead.")
        ev.server_error()
    names = tuple(split_list(value))
    if not names:
        ev.warn(f"access table {table} entry {datum} has empty value")
        return Status.OK
    return await ev.run(names, frame)


def _reject(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    dsn, detail = dsn_split("5.7.1", text)
    return ev.reject(ev.settings.code("access_map_reject_code"), dsn_fix(dsn, frame.cls, ev.info),
                     f"<{frame.name}>: {frame.cls} rejected: {detail or 'Access denied'}")


def _defer(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    dsn, detail = dsn_split("4.7.1", text)
    return ev.reject(ev.settings.code("access_map_defer_code"), dsn_fix(dsn, frame.cls, ev.info),
                     f"<{frame.name}>: {frame.cls} rejected: {detail or 'Access denied'}")


def _dunno(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    return Status.DUNNO


def _info(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    ev.log_whatsup("info", text)
    return Status.DUNNO


def _warn(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    ev.log_whatsup("warn", text)
    return Status.DUNNO


def _not_in_client_helo(ev: Evaluation, table: str, action: str) -> bool:
    """Outside a MAIL transaction (client or HELO lists with smtpd_delay_reject = no, VRFY)
    there is no message to change: the action is skipped (smtpd_check.c not_in_client_helo,
    whose test is "no sender yet")."""
    if ev.sender is None:
        ev.warn(f"access table {table}: with smtpd_delay_reject=no, action {action} is "
                "always skipped in Client host or Helo command restrictions")
        return False
    return True


def _can_delegate(ev: Evaluation, table: str, action: str) -> bool:
    """FILTER, HOLD, DISCARD, REDIRECT and BCC change a queued message: not in ETRN, and
    not outside a transaction."""
    if ev.engine.driver:
        return True
    if ev.st.where == "ETRN":
        ev.warn(f"access table {table}: action {action} is unavailable in "
                "smtpd_etrn_restrictions")
        return False
    return _not_in_client_helo(ev, table, action)


def _filter(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    if not _can_delegate(ev, table, "FILTER"):
        return Status.DUNNO
    if not text:
        ev.warn(f'access table {table} entry "{datum}" has FILTER entry without value')
    elif ":" not in text:
        ev.warn(f'access table {table} entry "{datum}" requires transport:destination')
    else:
        ev.log_whatsup("filter", f"<{frame.name}>: {frame.cls} triggers FILTER {text}")
        ev.st.marks.filter = text
    return Status.DUNNO


def _hold(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    if not _can_delegate(ev, table, "HOLD") or (ev.st.marks.hold and not ev.engine.driver):
        return Status.DUNNO
    ev.log_whatsup("hold", f"<{frame.name}>: {frame.cls} {text or 'triggers HOLD action'}")
    ev.st.marks.hold = True
    return Status.DUNNO


def _discard(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    if not _can_delegate(ev, table, "DISCARD") or ev.st.marks.discard:  # once per message
        return Status.DUNNO
    ev.log_whatsup("discard",
                   f"<{frame.name}>: {frame.cls} {text or 'triggers DISCARD action'}")
    if not ev.engine.driver:
        ev.st.marks.discard = True
    return ev.permit("DISCARD", frame, f"from {table}")


def _redirect(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    if not _can_delegate(ev, table, "REDIRECT"):
        return Status.DUNNO
    if "@" not in text:
        ev.warn(f'access table {table} entry "{datum}" requires user@domain target')
        return Status.DUNNO
    ev.log_whatsup("redirect", f"<{frame.name}>: {frame.cls} triggers REDIRECT {text}")
    ev.st.marks.redirect = text
    return Status.DUNNO


def _bcc(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    if not _can_delegate(ev, table, "BCC"):
        return Status.DUNNO
    if "@" not in text:
        ev.warn(f'access table {table} entry "{datum}" requires user@domain target')
        return Status.DUNNO
    ev.log_whatsup("bcc", f"<{frame.name}>: {frame.cls} triggers BCC {text}")
    ev.st.marks.bcc.append(text)
    return Status.DUNNO


def _defer_if_permit(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    dsn, detail = dsn_split("4.7.1", text)
    return ev.defer_if_permit(ev.settings.code("access_map_defer_code"),
                              dsn_fix(dsn, frame.cls, ev.info),
                              f"<{frame.name}>: {frame.cls} rejected: "
                              f"{detail or 'Service unavailable'}")


def _defer_if_reject(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    dsn, detail = dsn_split("4.7.1", text)
    return ev.defer_if_reject(ev.settings.code("access_map_defer_code"),
                              dsn_fix(dsn, frame.cls, ev.info),
                              f"<{frame.name}>: {frame.cls} rejected: "
                              f"{detail or 'Service unavailable'}")


def _prepend(ev: Evaluation, table: str, text: str, datum: str, frame: Frame) -> Status:
    if not ev.engine.driver and not _not_in_client_helo(ev, table, "PREPEND"):
        return Status.DUNNO
    if ev.st.where == "END-OF-MESSAGE":
        ev.warn(f"access table {table}: action PREPEND must be used before "
                "smtpd_end_of_data_restrictions")
        return Status.DUNNO
    if not _HEADER.match(text):
        ev.warn(f'access table {table} entry "{datum}" requires header: text')
        return Status.DUNNO
    ev.st.marks.prepend.append(text)
    return Status.DUNNO


ACTIONS = {
    "DUNNO": _dunno, "REJECT": _reject, "DEFER": _defer, "INFO": _info, "WARN": _warn,
    "FILTER": _filter, "HOLD": _hold, "DISCARD": _discard, "REDIRECT": _redirect, "BCC": _bcc,
    "DEFER_IF_PERMIT": _defer_if_permit, "DEFER_IF_REJECT": _defer_if_reject,
    "PREPEND": _prepend,
}
