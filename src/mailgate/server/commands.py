"""The SMTP command table, ESMTP parameter parsing and the non-SMTP command detector."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailgate.errors import MapError
from mailgate.maps.base import Map, Registry
from mailgate.smtp.protocol import Command

if TYPE_CHECKING:
    from mailgate.server.session import Session

Handler = Callable[[Command], Awaitable["bool | None"]]

_OFF_T_MAX = 2**63 - 1


class CommandTable:
    """Maps a verb to the session's handler; HELP only when `smtpd_enable_help = yes`."""

    def __init__(self, session: Session) -> None:
        s = session
        self._table: dict[str, Handler] = {
            "HELO": s.helo_cmd, "EHLO": s.ehlo_cmd, "XCLIENT": s.xclient_cmd,
            "XFORWARD": s.xforward_cmd, "STARTTLS": s.starttls_cmd, "AUTH": s.auth_cmd,
            "MAIL": s.mail_cmd, "RCPT": s.rcpt_cmd, "DATA": s.data_cmd, "BDAT": s.bdat_cmd,
            "RSET": s.rset_cmd, "NOOP": s.noop_cmd, "VRFY": s.vrfy_cmd, "ETRN": s.etrn_cmd,
            "QUIT": s.quit_cmd,
        }
        if s.s.enable_help:
            self._table["HELP"] = s.help_cmd

    def get(self, verb: str) -> Handler | None:
        return self._table.get(verb)


def is_header_name(word: str) -> bool:
    """`Subject:` and the like: a mail header sent as a command (Postfix is_header())."""
    return bool(re.fullmatch(r"[!-9;-~]+:", word))


@dataclass
class ForbiddenCommands:
    """`smtpd_forbidden_commands`: words (case-insensitive) and tables, matched on the verb."""

    words: frozenset[str]
    tables: tuple[Map, ...]

    @classmethod
    def build(cls, items: tuple[str, ...], registry: Registry) -> ForbiddenCommands:
        words = frozenset(i.upper() for i in items if ":" not in i)
        tables = tuple(registry.open_or_failed(i) for i in items if ":" in i)
        return cls(words, tables)

    def match(self, verb: str) -> bool:
        if verb.upper() in self.words:
            return True
        for table in self.tables:
            try:
                if table.lookup(verb) is not None:
                    return True
            except MapError:  # smtpd.c: lookup errors are ignored for this feature
                continue
        return False


@dataclass
class MailParams:
    error: str = ""
    size: int = 0
    body: str = ""
    ret: str = ""
    envid: str = ""
    smtputf8: bool = False


def parse_mail_params(words: list[str], smtputf8_enable: bool = True) -> MailParams:
    """MAIL FROM parameters (RFC 1652, 1870, 3461, 6531) with Postfix's replies; SMTPUTF8
    is an unsupported option unless `smtputf8_enable`."""
    p = MailParams()
    for word in words:
        upper = word.upper()
        if upper in ("BODY=8BITMIME", "BODY=7BIT"):
            p.body = upper[5:]
        elif upper.startswith("SIZE="):
            digits = word[5:]
            if not digits.isdigit():
                p.error = "501 5.5.4 Bad message size syntax"
                return p
            p.size = int(digits)
            if p.size > _OFF_T_MAX:
                p.error = "552 5.3.4 Message size exceeds file system imposed limit"
                return p
        elif upper.startswith("AUTH="):
            continue
        elif upper == "SMTPUTF8" and smtputf8_enable:
            p.smtputf8 = True
        elif upper.startswith("RET="):
            if p.ret or upper[4:] not in ("FULL", "HDRS"):
                p.error = "501 5.5.4 Bad RET parameter syntax"
                return p
            p.ret = upper[4:]
        elif upper.startswith("ENVID="):
            if p.envid or not _xtext_ok(word[6:]):
                p.error = "501 5.5.4 Bad ENVID parameter syntax"
                return p
            p.envid = word[6:]
        else:
            p.error = f"555 5.5.4 Unsupported option: {word}"
            return p
    return p


@dataclass
class RcptParams:
    error: str = ""
    warning: str = ""
    notify: str = ""
    orcpt: str = ""


def parse_rcpt_params(words: list[str]) -> RcptParams:
    """RCPT TO parameters (RFC 3461 NOTIFY and ORCPT) with Postfix's replies."""
    p = RcptParams()
    for word in words:
        upper = word.upper()
        if upper.startswith("NOTIFY="):
            values = upper[7:].split(",")
            bad = [v for v in values if v not in ("NEVER", "SUCCESS", "FAILURE", "DELAY")]
            if bad:
                p.warning = f'unknown DSN NOTIFY command value "{bad[0]}" in "{word[7:]}"'
            if p.notify or bad or ("NEVER" in values and len(values) > 1):
                p.error = "501 5.5.4 Error: Bad NOTIFY parameter syntax"
                return p
            p.notify = ",".join(values)
        elif upper.startswith("ORCPT="):
            addr_type, semi, value = word[6:].partition(";")
            if p.orcpt or not semi or not addr_type or not value or not _xtext_ok(value):
                p.error = "501 5.5.4 Error: Bad ORCPT parameter syntax"
                return p
            p.orcpt = word[6:]
        else:
            p.error = f"555 5.5.4 Unsupported option: {word}"
            return p
    return p


def _xtext_ok(text: str) -> bool:
    """RFC 3461 xtext: printable ASCII except `+` and `=`, or `+XX` hex escapes."""
    if not text:
        return False
    return re.fullmatch(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})+", text) is not None
