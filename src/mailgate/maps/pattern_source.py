"""The logical lines of a cidr/regexp/pcre table file, with readllines()'s own warning."""

from __future__ import annotations

from mailgate.maps.source import source_lines


def table_lines(text: str, name: str) -> tuple[list[tuple[int, str]], list[str]]:
    """(line number, text) pairs and warnings. A first logical line that starts with white
    space is dropped with Postfix's `NAME: logical line must not start with whitespace:
    "first 30 bytes..."`."""
    lines: list[tuple[int, str]] = []
    warnings: list[str] = []
    for line in source_lines(text):
        if line.text[:1] in (" ", "\t", "\v", "\f", "\r"):
            raw = line.text.encode("utf-8", "surrogateescape")
            shown = raw[:30].decode("utf-8", "surrogateescape")
            more = "..." if len(raw) > 30 else ""
            warnings.append(f'{name}: logical line must not start with whitespace: '
                            f'"{shown}{more}"')
            continue
        lines.append((line.number, line.text))
    return lines, warnings
