"""`$n` in regexp:/pcre: results: Postfix's mac_parse() split, the load-time prescan, expansion.

mac_parse(): `$$` is `$`; `${text}` and `$(text)` (nested same-type parentheses counted) and
`$name` (ASCII letters, digits, `_`) are references; a `$` with no name is "empty macro
name", an unclosed `${` "truncated macro reference", and either stops the parse. The prescan
(dict_regexp_prescan, dict_pcre_prescan) wants every reference to be a number >= 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_LONG_MAX = 2**63 - 1
_OPEN = {"{": "}", "(": ")"}


@dataclass(frozen=True, slots=True)
class Replacement:
    """A parsed result: literal text and group numbers in order (`max_sub` 0: all literal)."""

    parts: tuple[str | int, ...]
    max_sub: int
    literal: str  # the result when max_sub is 0 (`$$` already made `$`)


class ReplacementError(Exception):
    """The replacement is unusable; `warnings` are the texts Postfix printed on the way."""

    def __init__(self, warnings: list[tuple[bool, str]]) -> None:
        super().__init__("bad replacement syntax")
        self.warnings = warnings  # (with the "MAP, line N: " prefix?, text)


def _is_name_char(c: str) -> bool:
    return c == "_" or (c.isascii() and c.isalnum())


def mac_parse(value: str, on_reference: Callable[[str], bool]) -> tuple[
        list[tuple[bool, str]], str | None]:
    """Split into (is_reference, text) items, calling `on_reference(name)` (False: an error)
    for each reference as it is found. The second value is mac_parse's own warning (the
    parse stopped there), or None. As in Postfix 3.7, once an error was seen a `${...}` or
    `$(...)` reference ends the parse unreported (a truncated one is still warned about)."""
    items: list[tuple[bool, str]] = []
    buf: list[str] = []
    failed = False
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c != "$":
            buf.append(c)
            i += 1
            continue
        if value[i + 1 : i + 2] == "$":
            buf.append("$")
            i += 2
            continue
        if buf:
            items.append((False, "".join(buf)))
            buf = []
        i += 1
        opener = value[i : i + 1]
        if opener in _OPEN:
            closer, level, j = _OPEN[opener], 1, i + 1
            while level > 0:
                if j >= n:
                    return items, f'truncated macro reference: "{value}"'
                if value[j] == opener:
                    level += 1
                elif value[j] == closer:
                    level -= 1
                j += 1
            if failed:
                return items, None
            name, i = value[i + 1 : j - 1], j
        else:
            j = i
            while j < n and _is_name_char(value[j]):
                j += 1
            name, i = value[i:j], j
        if not name:
            return items, f'empty macro name: "{value}"'
        items.append((True, name))
        if not on_reference(name):
            failed = True
    if buf:
        items.append((False, "".join(buf)))
    return items, None


def _atoi(digits: str) -> int:
    """atoi() of an all-digit string as a C int (strtol saturation, then 32-bit wrap)."""
    value = min(int(digits), _LONG_MAX) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def prescan(value: str, pcre: bool) -> Replacement:
    """Check and parse a rule's result; raise ReplacementError (the rule is then skipped)."""
    warnings: list[tuple[bool, str]] = []
    range_text = "out of range" if pcre else "out-of-range"

    def check(name: str) -> bool:
        if not name.isascii() or not name.isdigit():
            warnings.append((True, f'non-numeric replacement index "{name}"'))
            return False
        if _atoi(name) == 0:
            warnings.append((True, f'{range_text} replacement index "{name}"'))
            return False
        return True

    items, stop = mac_parse(value, check)
    if stop is not None:
        warnings.append((False, stop))
    if warnings:
        raise ReplacementError(warnings)
    parts: list[str | int] = []
    max_sub = 0
    for is_ref, text in items:
        if is_ref:
            number = _atoi(text) % (1 << 64)  # a negative int becomes a huge size_t
            max_sub = max(max_sub, number)
            parts.append(number)
        else:
            parts.append(text)
    literal = "".join(p for p in parts if isinstance(p, str)) if max_sub == 0 else ""
    return Replacement(tuple(parts), max_sub, literal)


def c_int(value: int) -> int:
    """A size_t printed with %d (Postfix's "out of range replacement index" text)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def expand(replacement: Replacement, subject: bytes, spans: list[tuple[int, int]]) -> str:
    """The result with `$n` replaced by group n's text (empty when unset or empty)."""
    out: list[bytes] = []
    for part in replacement.parts:
        if isinstance(part, str):
            out.append(part.encode("utf-8", "surrogateescape"))
            continue
        start, end = spans[part]
        if start >= 0 and end > start:
            out.append(subject[start:end])
    return b"".join(out).decode("utf-8", "surrogateescape")
