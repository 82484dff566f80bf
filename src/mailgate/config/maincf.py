"""Reads main.cf syntax: logical lines, `name = value`, and Postfix's `$name` expansion."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from mailgate.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Entry:
    """One `name = value` setting and where it came from (file and line, or `-o`)."""

    name: str
    value: str
    origin: str  # "FILE, line N" or "command line"


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Join physical lines as Postfix's readllines() does: yield (first line number, text).

    Blank lines and lines whose first non-blank character is `#` are skipped everywhere (also
    between continuation lines); a line starting with whitespace continues the previous one.
    """
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0].isspace():
            if buf:
                buf.append(raw)
                continue
        elif buf:
            yield start, "".join(buf)
            buf = []
        if not buf:
            start = number
            buf = [raw]
    if buf:
        yield start, "".join(buf)


def parse_main_cf(text: str, filename: str) -> tuple[list[Entry], list[str]]:
    """Parse main.cf text into entries (file order) and warnings; raise ConfigError on bad syntax."""
    entries: list[Entry] = []
    warnings: list[str] = []
    seen: dict[str, Entry] = {}
    for number, line in logical_lines(text):
        where = f"{filename}, line {number}"
        if line[0].isspace():
            raise ConfigError(f"{where}: logical line must not start with whitespace: {line.strip()!r}")
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq:
            raise ConfigError(f'{where}: missing \'=\' after attribute name: "{name}"')
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f'{where}: bad parameter name: "{name}"')
        entry = Entry(name, value.strip(), where)
        if name in seen:
            earlier = seen[name]
            warnings.append(f"{where}: overriding earlier entry: {name}={earlier.value}")
        seen[name] = entry
        entries.append(entry)
    return entries, warnings


_NAME = re.compile(r"[A-Za-z0-9_]+")
_REL_OPS = ("==level", "!=level", "<=level", ">=level", "<level", ">level",
            "==", "!=", "<=", ">=", "<", ">")


def _braced(text: str, pos: int) -> tuple[str, int]:
    """Return the text inside `{...}` starting at text[pos] == '{' and the index after it."""
    depth = 0
    for i in range(pos, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[pos + 1 : i], i + 1
    raise ConfigError(f"unbalanced '{{' in: {text!r}")


def _level(value: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in value.split("."))


def _compare(left: str, op: str, right: str) -> bool:
    if op.endswith("level"):
        la, lb = _level(left), _level(right)
        diff = (la > lb) - (la < lb)
        return _ordered(diff, op[: -len("level")], 0)
    if left.isdigit() and right.isdigit():
        return _ordered(int(left), op, int(right))
    return _ordered(left, op, right)


def _ordered(a: int | str, op: str, b: int | str) -> bool:
    if isinstance(a, int) and isinstance(b, int):
        diff = (a > b) - (a < b)
    else:
        sa, sb = str(a), str(b)
        diff = (sa > sb) - (sa < sb)
    return {"==": diff == 0, "!=": diff != 0, "<": diff < 0, "<=": diff <= 0, ">": diff > 0,
            ">=": diff >= 0}[op]


def expand(value: str, lookup: Callable[[str], str | None], depth: int = 0) -> str:
    """Expand `$name`, `${name}`, `$(name)`, `${name?x}`, `${name:x}`, `${{a} op {b} ? {x} : {y}}`.

    `lookup(name)` returns the raw (unexpanded) value of a parameter or None when undefined;
    undefined names expand to the empty string. `$$` is a literal `$`.
    """
    if "$" not in value:
        return value
    if depth > 100:
        raise ConfigError(f"parameter expansion loop in: {value!r}")
    out: list[str] = []
    i, n = 0, len(value)

    def val(name: str) -> str:
        raw = lookup(name)
        return "" if raw is None else expand(raw, lookup, depth + 1)

    while i < n:
        c = value[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt in "{(":
            close = "}" if nxt == "{" else ")"
            if nxt == "{" and value.startswith("{", i + 2):
                inner, i = _braced(value, i + 1)
                out.append(_relational(inner, lookup, depth))
                continue
            if nxt == "{":
                body, end = _conditional_body(value, i + 2)
            else:
                end = value.find(close, i + 2)
                if end < 0:
                    raise ConfigError(f"unbalanced '{nxt}' in: {value!r}")
                body = value[i + 2 : end]
            i = end + 1
            out.append(_named(body, lookup, depth))
        else:
            m = _NAME.match(value, i + 1)
            if not m:
                out.append("$")
                i += 1
                continue
            out.append(val(m.group()))
            i = m.end()
    return "".join(out)


def _conditional_body(value: str, start: int) -> tuple[str, int]:
    """Find the end of `${...}` honouring nested braces; return (body, index of the '}')."""
    depth = 1
    for j in range(start, len(value)):
        if value[j] == "{":
            depth += 1
        elif value[j] == "}":
            depth -= 1
            if depth == 0:
                return value[start:j], j
    raise ConfigError(f"unbalanced '{{' in: {value!r}")


def _strip_braces(text: str) -> str:
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        return text[1:-1].strip()
    return text


def _named(body: str, lookup: Callable[[str], str | None], depth: int) -> str:
    m = _NAME.match(body)
    if not m:
        raise ConfigError(f"bad parameter name in expression: ${{{body}}}")
    name, rest = m.group(), body[m.end() :]
    raw = lookup(name)
    current = "" if raw is None else expand(raw, lookup, depth + 1)
    if not rest:
        return current
    if rest[0] == "?":
        then, otherwise = _split_alternatives(rest[1:])
        chosen = then if current else otherwise
        return expand(chosen, lookup, depth + 1)
    if rest[0] == ":":
        return "" if current else expand(_strip_braces(rest[1:]), lookup, depth + 1)
    raise ConfigError(f"bad expression: ${{{body}}}")


def _split_alternatives(text: str) -> tuple[str, str]:
    text = text.strip()
    if text.startswith("{"):
        then, pos = _braced(text, 0)
        rest = text[pos:].strip()
        if rest.startswith(":"):
            return then, _strip_braces(rest[1:])
        return then, ""
    return text, ""


def _relational(inner: str, lookup: Callable[[str], str | None], depth: int) -> str:
    """`{a} op {b} ? {x} : {y}` (the text inside the outer `${...}`)."""
    text = inner.strip()
    left, pos = _braced(text, 0)
    rest = text[pos:].lstrip()
    op = next((o for o in _REL_OPS if rest.startswith(o)), None)
    if op is None:
        raise ConfigError(f"bad relational operator in: ${{{inner}}}")
    rest = rest[len(op) :].lstrip()
    right, pos = _braced(rest, 0)
    rest = rest[pos:].lstrip()
    if not rest.startswith("?"):
        raise ConfigError(f"missing '?' in: ${{{inner}}}")
    then, otherwise = _split_alternatives(rest[1:])
    a = expand(left, lookup, depth + 1).strip()
    b = expand(right, lookup, depth + 1).strip()
    chosen = then if _compare(a, op, b) else otherwise
    return expand(chosen, lookup, depth + 1)


def split_list(value: str) -> list[str]:
    """Split a list value on commas and whitespace; `{...}` protects an element (braces kept)."""
    items: list[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in ", \t\r\n":
            i += 1
            continue
        j = i
        depth = 0
        while j < n and (depth > 0 or value[j] not in ", \t\r\n"):
            if value[j] == "{":
                depth += 1
            elif value[j] == "}":
                depth -= 1
            j += 1
        items.append(value[i:j])
        i = j
    return items


def lookup_in(*layers: Mapping[str, str]) -> Callable[[str], str | None]:
    """A lookup function over mappings, the first that has the name winning."""

    def lookup(name: str) -> str | None:
        for layer in layers:
            if name in layer:
                return layer[name]
        return None

    return lookup
