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
    """`Subject:` and the like: a mail header sent as a command (Postfix is_header(): a
    header name and its colon begin the word; what follows the colon does not matter)."""
    return bool(re.match(r"[!-9;-~]+[ \t]*:", word))


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
    size: int | None = None  # the last SIZE= seen (-1: too big for off_t), even on error
    body: str = ""
    ret: str = ""
    envid: str = ""
    smtputf8: bool = False
    sasl_sender: str | None = None  # AUTH=, logged as `sasl_sender=` (not `<>`)


_DSN_OFF = "501 5.7.1 DSN support is disabled"


def parse_mail_params(words: list[str], smtputf8_enable: bool = True,
                      dsn: bool = True, sasl_sender: str | None = None) -> MailParams:
    """MAIL FROM parameters (RFC 1652, 1870, 3461, 4954, 6531) with Postfix 3.7's replies;
    SMTPUTF8 is an unsupported option unless `smtputf8_enable`, RET and ENVID are refused
    when DSN is in smtpd_discard_ehlo_keywords (`dsn` false). `sasl_sender` is an AUTH= left
    by an earlier refused MAIL (smtpd keeps it until mail_reset())."""
    p = MailParams(sasl_sender=sasl_sender)
    for word in words:
        upper = word.upper()
        if upper in ("BODY=8BITMIME", "BODY=7BIT"):
            p.body = upper[5:]
        elif upper.startswith("SIZE="):
            digits = word[5:]
            if not (digits.isdigit() and digits.isascii()):
                p.error = "501 5.5.4 Bad message size syntax"
                return p
            p.size = int(digits)
            if p.size > _OFF_T_MAX:
                p.size = -1
                p.error = "552 5.3.4 Message size exceeds file system imposed limit"
                return p
        elif upper.startswith("AUTH="):  # smtpd_sasl_mail_opt(), even without SASL
            if p.sasl_sender is not None:
                p.error = "503 5.5.4 Error: multiple AUTH= options"
                return p
            if word[5:] != "<>":
                p.sasl_sender = word[5:]
        elif upper == "SMTPUTF8" and smtputf8_enable:
            p.smtputf8 = True
        elif upper.startswith("RET="):
            if not dsn:
                p.error = _DSN_OFF
                return p
            if p.ret or upper[4:] not in ("FULL", "HDRS"):
                p.error = "501 5.5.4 Bad RET parameter syntax"
                return p
            p.ret = upper[4:]
        elif upper.startswith("ENVID="):
            if not dsn:
                p.error = _DSN_OFF
                return p
            value = xtext_unquote(word[6:])
            if p.envid or value is None or not _allprint(value):
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


_NOTIFY = ("NEVER", "SUCCESS", "FAILURE", "DELAY")


def parse_rcpt_params(words: list[str], dsn: bool = True) -> RcptParams:
    """RCPT TO parameters (RFC 3461 NOTIFY and ORCPT) with Postfix 3.7's replies."""
    p = RcptParams()
    for word in words:
        upper = word.upper()
        if upper.startswith(("NOTIFY=", "ORCPT=")) and not dsn:
            p.error = _DSN_OFF
            return p
        if upper.startswith("NOTIFY="):
            if p.notify:  # checked before the value: no warning for a bad repeated one
                p.error = "501 5.5.4 Error: Bad NOTIFY parameter syntax"
                return p
            # dsn_notify_mask(): name_mask() skips empty list elements, warns about the
            # first unknown name; NEVER may not be combined with another name
            names = [v for v in re.split(r"[, \t\r\n]+", word[7:]) if v]
            values = [v.upper() for v in names]
            bad = [n for n, v in zip(names, values, strict=True) if v not in _NOTIFY]
            if bad:
                p.warning = f'unknown DSN NOTIFY command value "{bad[0]}" in "{word[7:]}"'
            if not values or bad or ("NEVER" in values and set(values) != {"NEVER"}):
                p.error = "501 5.5.4 Error: Bad NOTIFY parameter syntax"
                return p
            p.notify = ",".join(dict.fromkeys(values))
        elif upper.startswith("ORCPT="):
            addr_type, semi, value = word[6:].partition(";")
            unquote = uxtext_unquote if addr_type.lower() == "utf-8" else xtext_unquote
            if p.orcpt or not semi or not addr_type or unquote(value) is None:
                p.error = "501 5.5.4 Error: Bad ORCPT parameter syntax"
                return p
            p.orcpt = word[6:]
        else:
            p.error = f"555 5.5.4 Unsupported option: {word}"
            return p
    return p


def _allprint(text: str) -> bool:
    """Postfix allprint(): not empty, printable ASCII (space included) only."""
    return bool(text) and all(" " <= c <= "~" for c in text)


def xtext_unquote(text: str) -> str | None:
    """RFC 3461 xtext decoding as Postfix's xtext_unquote(): `+XX` (either case of hex) is a
    byte, any other character stands for itself; None for a bad `+` escape. The decoded
    text ends at a NUL (a C string)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "+":
            pair = text[i + 1:i + 3]
            if len(pair) != 2 or not all(x in "0123456789abcdefABCDEF" for x in pair):
                return None
            c = chr(int(pair, 16))
            i += 2
        out.append(c)
        i += 1
    return "".join(out).split("\0", 1)[0]


def uxtext_unquote(text: str) -> str | None:
    """RFC 6533 utf-8-addr-xtext as Postfix's uxtext_unquote(): `\\x{HEX}` escapes (at most
    U+10FFFF), any other character stands for itself; None for a bad escape."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("\\x{", i):
            end = text.find("}", i + 3)
            digits = text[i + 3:end] if end >= 0 else "-"
            if not all(x in "0123456789abcdefABCDEF" for x in digits) or \
                    (digits and int(digits, 16) > 0x10FFFF):
                return None
            out.append(chr(int(digits or "0", 16)))
            i = end + 1
            continue
        out.append(text[i])
        i += 1
    return "".join(out)
