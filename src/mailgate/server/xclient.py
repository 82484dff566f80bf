"""XCLIENT (Postfix XCLIENT_README): an authorized proxy or test sets the client's name,
address, HELO and protocol; the session then starts over with a new greeting."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailgate.engine.context import NAME_OK, NAME_PERM, NAME_TEMP, CheckState, Client
from mailgate.smtp.hostnames import valid_hostname
from mailgate.smtp.protocol import Command, ServerConnection

if TYPE_CHECKING:
    from mailgate.config.settings import SmtpdSettings
    from mailgate.server.stats import CommandStats
    from mailgate.server.transaction import Services, Transaction

ATTRIBUTES = "NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT"
_XTEXT = re.compile(r"\+([0-9A-F]{2})")
_STATUS = {"[UNAVAILABLE]": NAME_PERM, "[TEMPUNAVAIL]": NAME_TEMP}


def xtext_decode(value: str) -> str | None:
    """RFC 1891 xtext: `+XX` is a byte in hex; a `+` not followed by two hex digits is bad."""
    if "+" in value and len(_XTEXT.findall(value)) != value.count("+"):
        return None
    return _XTEXT.sub(lambda m: chr(int(m.group(1), 16)), value)


def printable(value: str) -> str:
    return "".join(c if " " <= c < "\x7f" else "?" for c in value)


class XclientState:
    """What XCLIENT may change; the session copies it back when the command succeeds."""

    def __init__(self, client: Client, helo: str, proto: str) -> None:
        self.client = client
        self.helo = helo
        self.proto = proto
        self.login = ""


def _address(value: str, ipv6: bool) -> str | None:
    """normalize_mailhost_addr(): IPv4, or IPv6 with or without `IPv6:` (when enabled)."""
    bare = value[5:] if value[:5].lower() == "ipv6:" else value
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return None
    if ip.version == 6 and not ipv6:
        return None
    if value is not bare and ip.version != 6:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def apply(words: list[str], state: XclientState, ipv6: bool) -> str | None:
    """Apply `NAME=value` attributes in order (a failure keeps those already applied, as
    Postfix does); the error reply, or None on success."""
    client = state.client
    named = reversed_ = False
    for word in words:
        name, eq, raw = word.partition("=")
        if not eq or not raw:
            return "501 5.5.4 Error: attribute=value expected"
        if len(raw) > 255:
            return "501 5.5.4 Error: attribute value too long"
        decoded = xtext_decode(raw)
        if decoded is None:
            return "501 5.5.4 Error: malformed attribute value"
        value, attr = printable(decoded), name.upper()
        if attr in ("NAME", "REVERSE_NAME"):
            status = _STATUS.get(value.upper(), NAME_OK)
            if status == NAME_OK and not valid_hostname(value):
                return f"501 5.5.4 Bad {name} syntax: {value}"
            host = value if status == NAME_OK else "unknown"
            if attr == "NAME":
                client.name, client.name_status = host, status
                named = status == NAME_OK
            else:
                client.reverse_name, client.reverse_status = host, status
                reversed_ = True
            continue
        setter = _SETTERS.get(attr)
        if setter is None:
            return f"501 5.5.4 Bad XCLIENT attribute name: {name}"
        if not setter(state, value, ipv6):
            return f"501 5.5.4 Bad {name} syntax: {value}"
    if named and not reversed_:  # a verified name implies the reverse lookup found it
        client.reverse_name, client.reverse_status = client.name, NAME_OK
    return None


def _addr(state: XclientState, value: str, ipv6: bool) -> bool:
    addr = "unknown" if value.upper() == "[UNAVAILABLE]" else _address(value, ipv6)
    if addr is not None:
        state.client.addr = addr
    return addr is not None


def _port(state: XclientState, value: str, ipv6: bool) -> bool:
    if value.upper() == "[UNAVAILABLE]":
        state.client.port = 0
        return True
    if not value.isdigit() or len(value) > 5:
        return False
    state.client.port = int(value)
    return True


def _helo(state: XclientState, value: str, ipv6: bool) -> bool:
    if len(value) > 255:
        return False
    unavailable = value.upper() == "[UNAVAILABLE]"
    state.helo = "" if unavailable else value.replace("<", "?").replace(">", "?")
    return True


def _proto(state: XclientState, value: str, ipv6: bool) -> bool:
    if value.upper() not in ("SMTP", "ESMTP"):
        return False
    state.proto = value.upper()
    return True


def _login(state: XclientState, value: str, ipv6: bool) -> bool:
    state.login = "" if value.upper() == "[UNAVAILABLE]" else value
    return True


_SETTERS: dict[str, Callable[[XclientState, str, bool], bool]] = {
    "ADDR": _addr, "PORT": _port, "HELO": _helo, "PROTO": _proto, "LOGIN": _login,
    "DESTADDR": lambda state, value, ipv6: True, "DESTPORT": lambda state, value, ipv6: True,
}


class XclientCommands:
    """The XCLIENT and XFORWARD handlers; the attributes below are the Session's."""

    s: SmtpdSettings
    svc: Services
    client: Client
    tx: Transaction
    st: CheckState
    stats: CommandStats
    xclient_allowed: bool
    reply: Callable[[str], None]
    client_namaddr: Callable[[], str]
    reset_transaction: Callable[[], None]
    conn: ServerConnection

    async def greet(self) -> None:
        raise NotImplementedError

    def flag_pipelining(self, where: str, pending: bytes) -> None:
        raise NotImplementedError

    async def xforward_cmd(self, cmd: Command) -> bool:
        if self.st.sender is not None:
            self.reply("503 5.5.1 Error: MAIL transaction in progress")
            return False
        if len(cmd.tokens) < 2:  # smtpd.c checks the syntax before the authorization
            self.reply("501 5.5.4 Syntax: XFORWARD attribute=value...")
            return False
        self.reply("550 5.7.0 Error: insufficient authorization")
        return False

    async def xclient_cmd(self, cmd: Command) -> bool | None:
        """XCLIENT from an smtpd_authorized_xclient_hosts client: new client attributes, a
        new greeting (after the client list when smtpd_delay_reject = no). Postfix counts
        the command as failed in its statistics even when it succeeds."""
        if self.st.sender is not None:
            self.reply("503 5.5.1 Error: MAIL transaction in progress")
            return False
        if len(cmd.tokens) < 2:
            self.reply("501 5.5.4 Syntax: XCLIENT attribute=value...")
            return False
        if not self.xclient_allowed:
            self.reply("550 5.7.0 Error: insufficient authorization")
            return False
        state = XclientState(self.client, "", "SMTP")
        err = apply([t.value for t in cmd.tokens[1:]], state, self.s.ipv6)
        st = self.st
        st.namaddr = self.client_namaddr()  # changed in place, even by a failed XCLIENT
        if err:
            self.reply(err)
            return False
        st.helo, st.protocol = state.helo or None, state.proto
        self.svc.engine.started_client(self.client)  # its list queries, answered by RCPT
        if st.helo:
            self.svc.engine.started_helo(st.helo)
        self.xclient_allowed = self.svc.xclient_hosts(self.client)
        self.reset_transaction()
        self.stats.count("xclient", False)
        pending = self.conn.buffered()
        if pending:  # sent before the new greeting (Postfix 3.7.6+, as at CONNECT)
            self.flag_pipelining("XCLIENT", pending)
        await self.greet()
        return None
