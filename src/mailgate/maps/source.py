"""Reads postmap source files: logical lines, quoted keys, `key value` pairs (Postfix readllines)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceLine:
    number: int  # line number of the first physical line
    text: str


def source_lines(text: str) -> Iterator[SourceLine]:
    """Logical lines as postmap reads them: continuation lines keep their leading whitespace."""
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.rstrip("\r")
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0].isspace() and buf:
            buf.append(raw)
            continue
        if buf:
            yield SourceLine(start, "".join(buf))
        start, buf = number, [raw]
    if buf:
        yield SourceLine(start, "".join(buf))


def split_key_value(line: str) -> tuple[str, str] | str:
    """Split `key value` (key may be `"quoted"`, `\\` escapes); return (key, value) or an error."""
    if '"' not in line and "\\" not in line:  # the common case, without a character loop
        parts = line.split(None, 1)
        if len(parts) < 2 or not parts[1].strip():
            return "expected format: key whitespace value -- ignoring this line"
        return parts[0], parts[1].strip()
    i, n = 0, len(line)
    key: list[str] = []
    in_quote = False
    while i < n:
        c = line[i]
        if c == "\\" and i + 1 < n:
            key.append(line[i : i + 2])
            i += 2
            continue
        if c == '"':
            in_quote = not in_quote
        elif c.isspace() and not in_quote:
            break
        key.append(c)
        i += 1
    if in_quote:
        return f"unbalanced '\"' in '{line}' -- ignoring this line"
    value = line[i:].strip()
    k = "".join(key)
    if not k or not value:
        return "expected format: key whitespace value -- ignoring this line"
    return k, value


def leading_negations(text: str) -> tuple[bool, str]:
    """Strip `!` prefixes (with optional whitespace between them); True if an odd count."""
    negate = False
    text = text.lstrip()
    while text.startswith("!"):
        negate = not negate
        text = text[1:].lstrip()
    return negate, text
