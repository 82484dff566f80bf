"""`postconf -M` and `-P`: master.cf entries and their `-o` parameters as Postfix 3.7 prints them."""

from __future__ import annotations

import re

from mailgate.config.mastercf import (
    BLANKS,
    COLUMNS,
    INDENT,
    LINE_LIMIT,
    VALUE_OPTIONS,
    MasterCf,
    ServiceEntry,
)
from mailgate.errors import ConfigError


def parse_pattern(text: str, max_parts: int) -> list[str] | None:
    """pcf_parse_service_pattern(): `a/b/c` split on '/', missing parts `*`; None if bad."""
    if text.startswith("/"):
        return None
    parts = [p for p in text.split("/") if p]
    if not 1 <= len(parts) <= max_parts or any("*" in p and p != "*" for p in parts):
        return None
    return parts + ["*"] * (max_parts - len(parts))


def _matches(pattern: list[str], entry: ServiceEntry) -> bool:
    return all(p in ("*", value) for p, value in zip(pattern[:2], (entry.name, entry.type), strict=True))


def _patterns(requests: list[str], max_parts: int, usage: str) -> list[list[str]]:
    patterns = []
    for text in requests:
        pattern = parse_pattern(text, max_parts)
        if pattern is None:
            raise ConfigError(usage)
        patterns.append(pattern)
    return patterns


def show_entries(master: MasterCf, requests: list[str], fold: bool = False
                 ) -> tuple[list[str], list[str]]:
    """`postconf -M [service[/type]...]` (`-Mf` with fold): output lines and warnings."""
    patterns = _patterns(requests, 2, "-M option requires service_name[/type]")
    counts = [0] * len(patterns)
    lines = []
    for entry in master.entries:
        if not patterns:
            lines.append(format_entry(entry, fold))
        for i, pattern in enumerate(patterns):
            if _matches(pattern, entry):
                counts[i] += 1
                lines.append(format_entry(entry, fold))
    return lines, _unmatched(requests, counts)


def _unmatched(requests: list[str], counts: list[int]) -> list[str]:
    return [f'unmatched request: "{r}"' for r, n in zip(requests, counts, strict=True) if n == 0]


def format_entry(entry: ServiceEntry, fold: bool = False) -> str:
    """One entry as pcf_print_master_entry() prints it (a string with newlines when folded)."""
    out: list[str] = []
    length = 0
    for goal, text in zip(COLUMNS, entry.fields, strict=True):
        if length > 0:
            pad = max(1, goal - length)
            out.append(" " * pad)
            length += pad
        out.append(text)
        length += len(text)
    args = entry.args
    in_options = True
    i = 0
    while i < len(args):
        arg, value, parens = args[i], None, False
        size = len(arg)
        if in_options:
            if not arg.startswith("-") or arg == "--":
                in_options = False
            elif arg[1:2] in VALUE_OPTIONS and i + 1 < len(args):
                value = args[i + 1]
                length = LINE_LIMIT  # an option with a value starts a new line
                parens = any(c in BLANKS for c in value)
                size += len(value) + 3 + (2 if parens else 0)
        else:
            parens = any(c in BLANKS for c in arg)
        if length > len(INDENT):
            if not fold or length + 1 + size < LINE_LIMIT:
                out.append(" ")
                length += 1
            else:
                out.append("\n" + INDENT)
                length = len(INDENT)
        text = f"{{{arg}}}" if parens and not in_options else arg
        out.append(text)
        length += len(text)
        if value is not None:
            out.append(" " + (f"{{{value}}}" if parens else value))
            length = LINE_LIMIT  # and ends it
            i += 1
        i += 1
    return "".join(out)


def namespace_parameters(master: MasterCf) -> list[dict[str, str] | None]:
    """Per entry, the `-o` parameters postconf -P shows for it, or None.

    As postconf does, entries with the same `service/type` share one parameter table (a
    later `-o` wins), and an entry sees it once it or an earlier same-named entry set one.
    """
    tables: dict[str, dict[str, str]] = {}
    out: list[dict[str, str] | None] = []
    for entry in master.entries:
        if entry.overrides:
            tables.setdefault(entry.namespace, {}).update(entry.overrides)
        out.append(tables.get(entry.namespace))
    return out


def show_parameters(master: MasterCf, requests: list[str], fold: bool = False
                    ) -> tuple[list[str], list[str]]:
    """`postconf -P [service[/type[/parameter]]...]`: output lines and warnings."""
    patterns = _patterns(requests, 3, "-P option requires service_name[/type[/parameter]]")
    counts = [0] * len(patterns)
    lines: list[str] = []
    for entry, table in zip(master.entries, namespace_parameters(master), strict=True):
        if table is None:
            continue
        if not patterns:
            lines.extend(_param_lines(entry, table, sorted(table, key=_bytes), fold))
        for i, pattern in enumerate(patterns):
            if not _matches(pattern, entry):
                continue
            names = sorted(table, key=_bytes) if pattern[2] == "*" else [pattern[2]]
            names = [n for n in names if n in table]
            if pattern[2] == "*" or names:
                counts[i] += 1
            lines.extend(_param_lines(entry, table, names, fold))
    return lines, _unmatched(requests, counts)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _param_lines(entry: ServiceEntry, table: dict[str, str], names: list[str], fold: bool
                 ) -> list[str]:
    return [print_line(f"{entry.namespace}/{name} = {table[name]}", fold) for name in names]


def print_line(text: str, fold: bool) -> str:
    """pcf_print_line(): whitespace normalized, folded before column 80 with `fold`."""
    out: list[str] = []
    length = 0
    for word in (w for w in re.split(r"[ \t\r\n]+", text) if w):
        if length > 0:
            if not fold or length + len(word) < LINE_LIMIT:
                out.append(" ")
                length += 1
            else:
                out.append("\n" + INDENT)
                length = len(INDENT)
        out.append(word)
        length += len(word)
    return "".join(out)
