"""SMTP command tokenizing and envelope address extraction as Postfix's smtpd does it.

`smtpd_token()` follows postfix/src/smtpd/smtpd_token.c (the vectors in
shared/postfix/tests/smtpd/smtpd_token.*); `extract_addr()` follows smtpd.c's extract_addr():
strip `<>`, drop a source route, parse with tok822 (smtp/tok822.py), refuse more than one
address.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from mailgate.smtp import tok822


class TokType(enum.Enum):
    OTHER = "other"
    ERROR = "error"  # an unbalanced `<...>` or `"..."`


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    type: TokType = TokType.OTHER


def _quoted(line: str, pos: int, start: str, last: str, out: list[str]) -> tuple[int, bool]:
    """Copy a quoted `<...>` or `"..."` token starting after `start`; return (pos, balanced)."""
    stack = [last]
    wanted = last
    out.append(start)
    n = len(line)
    while pos < n:
        c = line[pos]
        pos += 1
        out.append(c)
        if c == "\\":
            if pos >= n:
                break
            out.append(line[pos])
            pos += 1
        elif c == wanted:
            if len(stack) == 1:
                return pos, True
            stack.pop()
            wanted = stack[-1]
        elif c == '"':
            stack.append('"')
            wanted = '"'
        elif c == "<" and wanted == ">":
            stack.append(">")
            wanted = ">"
    return pos, False


def smtpd_token(line: str) -> list[Token]:
    """Split an SMTP command line into tokens (Postfix smtpd_token)."""
    tokens: list[Token] = []
    pos, n = 0, len(line)
    while pos < n:
        buf: list[str] = []
        ttype = TokType.OTHER
        while pos < n:
            c = line[pos]
            pos += 1
            if c in " \t\r\n\v\f":
                while pos < n and line[pos] in " \t\r\n\v\f":
                    pos += 1
                if buf:
                    break
            elif c == "<" or c == '"':
                pos, ok = _quoted(line, pos, c, ">" if c == "<" else '"', buf)
                if not ok:
                    ttype = TokType.ERROR
            elif c == ":":
                buf.append(c)
                word = "".join(buf).lower()
                if word in ("to:", "from:"):
                    break
            else:
                if c == "\\":
                    buf.append(c)
                    if pos >= n:
                        break
                    c = line[pos]
                    pos += 1
                buf.append(c)
        if buf:
            tokens.append(Token("".join(buf), ttype))
    return tokens


# --- envelope addresses ---------------------------------------------------------------------

_SPECIALS = '()<>@,;:\\".[]'


@dataclass(frozen=True, slots=True)
class Extracted:
    """The internal (unquoted) address form, and whether parsing found trouble."""

    address: str
    illegal: bool


def extract_addr(token: str, strict_rfc821: bool = False) -> Extracted:
    """Extract the envelope address from a MAIL FROM/RCPT TO/VRFY argument (smtpd.c
    extract_addr): strip one pair of enclosing `<>`, drop a leading source route, parse with
    tok822_parse() and take the last address node. Illegal: more than one address node, or
    with strict_rfc821_envelopes anything but brackets beside it, no leading `<`, or an
    address that starts with `@`. The empty address and smtpd_check_addr() are the caller's.
    """
    if _SIMPLE.fullmatch(token):  # `<dot-atom@domain>` or `<>`: what the parse would give
        return Extracted(token[1:-1], False)
    return parse_addr(token, strict_rfc821)


def parse_addr(token: str, strict_rfc821: bool = False) -> Extracted:
    """extract_addr() without its fast path: always through tok822."""
    text = token
    if len(text) >= 2 and text[0] == "<" and text[-1] == ">":
        text = text[1:-1]
    if text.startswith("@") and ":" in text:  # the deprecated route address form
        text = text[text.index(":") + 1 :]
    naddr = non_addr = 0
    addr: tok822.Tok | None = None
    for tp in tok822.to_list(tok822.parse(text)):
        if tp.type == tok822.ADDR:
            addr, naddr = tp, naddr + 1
        elif tp.type not in (ord("<"), ord(">")):
            non_addr += 1
    address = tok822.internalize(addr.head) if addr is not None else ""
    illegal = naddr > 1 or (strict_rfc821 and (
        non_addr > 0 or not token.startswith("<") or address.startswith("@")))
    return Extracted(address, illegal)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# The common envelope address, which tok822 parses to itself (tests/fuzz checks the two agree).
_SIMPLE = re.compile(rf"<(?:{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)?>")


def quote_local_part(address: str) -> str:
    """The RFC 5321 external form: quote a local part that needs it (Postfix quote_822_local)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if not local or _needs_quoting(local):
        escaped = local.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\\r")
        local = f'"{escaped}"'
    return f"{local}@{domain}" if at else local


def log_form(address: str) -> str:
    """An address as Postfix logs it (info_log_address_format = external)."""
    return quote_local_part(address) if address else address


_PLAIN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _needs_quoting(local: str) -> bool:
    if _PLAIN.fullmatch(local):  # the common case: a dot-atom
        return False
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return True
    # quote_822_local.c: specials (brackets too), space and ISCNTRL() (DEL too) need quotes
    return any(c in _SPECIALS[:-4] or c in ' \t"\\[]' or ord(c) < 32 or c == "\x7f"
               for c in local.replace(".", ""))
