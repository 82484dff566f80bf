"""The engine's replies: the Reply and Verdict values a check returns, and enhanced status
codes (dsn_valid, dsn_split, smtpd_dsn_fix)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

SENDER = "Sender address"
RECIPIENT = "Recipient address"

# smtpd_dsn_fix.c: recipient DSN detail → sender DSN detail, and the reverse.
_TO_SENDER = {"1.1": "1.7", "1.2": "1.8", "1.3": "1.7", "1.4": "1.7", "1.5": "1.0",
              "1.6": "1.7", "1.7": "1.7", "1.8": "1.8"}
_TO_RECIPIENT = {"1.7": "1.3", "1.8": "1.2", "1.1": "1.1", "1.2": "1.2", "1.3": "1.3",
                 "1.4": "1.4", "1.5": "1.5", "1.6": "1.6"}
_DSN = re.compile(r"[245]\.(?:0|[1-9][0-9]{0,2})\.(?:0|[1-9][0-9]{0,2})")


class Status(enum.IntEnum):
    """What one restriction decided (smtpd_check.c SMTPD_CHECK_*)."""

    DUNNO = 0
    OK = 1
    REJECT = 2


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply as the engine made it: final (reply code checks, DSN class and
    soft_bounce already applied), sent as it is. `line` is what the `reject:` log shows."""

    code: int
    dsn: str
    text: str

    @property
    def line(self) -> str:
        return f"{self.code} {self.dsn} {self.text}"

    def __str__(self) -> str:
        return self.line


@dataclass(frozen=True, slots=True)
class Rule:
    """What decided a reply: the restriction (`check_client_access`), the table written
    after it (`hash:/etc/postfix/access`, or "") and the key found there (`192.0.2`, or
    "")."""

    restriction: str
    table: str = ""
    entry: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a stage check decided: the reply refusing the command (None: go on), the
    seconds the `sleep` restriction asked to wait before the next reply, and the Rule that
    made the reply (the transaction journal records it)."""

    reply: Reply | None = None
    delay: float = 0.0
    rule: Rule | None = None


PASS = Verdict()  # nothing refused, no delay: the common answer, never allocated again


def dsn_valid(text: str) -> int:
    """Length of the RFC 3463 status code at the start of `text` (0 if none)."""
    m = _DSN.match(text)
    if m is None or (m.end() < len(text) and not text[m.end()].isspace()):
        return 0
    return m.end()


def dsn_split(default: str, text: str) -> tuple[str, str]:
    """An optional leading status code in `text`, else `default`; and the remaining text."""
    text = text.lstrip()
    n = dsn_valid(text)
    if n:
        return text[:n], text[n:].lstrip()
    return default, text


def dsn_fix(status: str, reply_class: str, info: object = None) -> str:
    """Postfix smtpd_dsn_fix(): an address DSN (`X.1.Y`) made to fit what is rejected.

    `info`, when given, is called with Postfix's "mapping DSN status" log text.
    """
    if len(status) < 4 or status[1:4] != ".1.":
        return status
    detail = status[2:]
    if reply_class == SENDER:
        fixed = _TO_SENDER.get(detail, "1.0")
    elif reply_class == RECIPIENT:
        fixed = _TO_RECIPIENT.get(detail, "1.0")
    else:
        fixed = "0.0"
    if fixed != detail and callable(info):
        info(f"mapping DSN status {status} into {reply_class} status {status[0]}.{fixed}")
    return f"{status[0]}.{fixed}"


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str, utf8: bool = True) -> str:
    """Non-printable characters become spaces (Postfix printable()); without `utf8`
    (smtputf8_enable = no) so does each byte of a non-ASCII character."""
    text = _UNPRINTABLE.sub(" ", text)
    if utf8 or text.isascii():
        return text
    return "".join(c if c.isascii() else " " * len(c.encode("utf-8", "surrogateescape"))
                   for c in text)
