"""SMTP command tokenizing and envelope address extraction as Postfix's smtpd does it.

`smtpd_token()` follows postfix/src/smtpd/smtpd_token.c (the vectors in
shared/postfix/tests/smtpd/smtpd_token.*); `extract_addr()` follows smtpd.c's extract_addr():
strip `<>`, drop a source route, parse with RFC 822 rules, refuse more than one address.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


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


# --- RFC 822 address parsing (enough of Postfix's tok822 for envelope addresses) -----------

_SPECIALS = '()<>@,;:\\".[]'


def _lex822(text: str) -> list[tuple[str, str]] | None:
    """Lex into (kind, text): 'atom', 'quoted', 'literal', 'comment', or a special char.

    Returns None when a quote, comment or literal is not closed.
    """
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return None
            out.append(("quoted", text[i : j + 1]))
            i = j + 1
        elif c == "(":
            depth, j = 1, i + 1
            while j < n and depth:
                if text[j] == "\\":
                    j += 1
                elif text[j] == "(":
                    depth += 1
                elif text[j] == ")":
                    depth -= 1
                j += 1
            if depth:
                return None
            out.append(("comment", text[i:j]))
            i = j
        elif c == "[":
            j = text.find("]", i)
            if j < 0:
                return None
            out.append(("literal", text[i : j + 1]))
            i = j + 1
        elif c in _SPECIALS:
            out.append((c, c))
            i += 1
        else:
            j = i
            while j < n and text[j] not in _SPECIALS and text[j] not in " \t\r\n":
                j += 1
            out.append(("atom", text[i:j]))
            i = j
    return out


def _unquote(word: str) -> str:
    body = word[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            i += 1
        out.append(body[i])
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Extracted:
    """The internal (unquoted) address form, and whether parsing found trouble."""

    address: str
    illegal: bool


def extract_addr(token: str, strict_rfc821: bool = False) -> Extracted:
    """Extract the envelope address from a MAIL FROM/RCPT TO argument (smtpd.c extract_addr)."""
    text = token
    if len(text) >= 2 and text[0] == "<" and text[-1] == ">":
        text = text[1:-1]
    if text.startswith("@") and ":" in text:
        text = text[text.index(":") + 1 :]
    lexed = _lex822(text)
    if lexed is None:
        return Extracted("", True)
    # A `phrase <addr>` form: the part inside the last angle brackets is the address.
    if "<" in (k for k, _ in lexed):
        first = next(i for i, (k, _) in enumerate(lexed) if k == "<")
        close = next((i for i in range(len(lexed) - 1, first, -1) if lexed[i][0] == ">"), None)
        if close is None:
            return Extracted("", True)
        inner = lexed[first + 1 : close]
        if inner and inner[0][0] == "@":  # route inside the brackets
            colon = next((i for i, (k, _) in enumerate(inner) if k == ":"), None)
            inner = inner[colon + 1 :] if colon is not None else inner
        lexed = inner
    naddr, non_addr = 1 if lexed else 0, 0
    parts: list[str] = []
    prev_word = False
    for kind, value in lexed:
        if kind == "comment":
            non_addr += 1
            continue
        is_word = kind in ("atom", "quoted", "literal")
        if is_word and prev_word:
            naddr += 1  # two words without '.' or '@' between them: another address
        if kind in (",", ";", ":", "<", ">"):
            non_addr += 1
            if kind == ",":
                naddr += 1
            prev_word = False
            continue
        parts.append(_unquote(value) if kind == "quoted" else value)
        prev_word = is_word
    illegal = naddr > 1 or (strict_rfc821 and (non_addr > 0 or not token.startswith("<")))
    return Extracted("".join(parts), illegal)


def quote_local_part(address: str) -> str:
    """The RFC 5321 external form: quote a local part that needs it (Postfix quote_822_local)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if not local or _needs_quoting(local):
        escaped = local.replace("\\", "\\\\").replace('"', '\\"')
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
    return any(c in _SPECIALS[:-4] or c in ' \t"\\' or ord(c) < 32 for c in local.replace(".", ""))
