"""Lint findings: the codes and their severities, where a finding is, and the two outputs."""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TextIO


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


_E, _W = Severity.ERROR, Severity.WARNING
# Every code and its severity. Errors let spam in or keep mail out for sure; warnings may
# (docs/decisions/0060-lint.md). The codes are stable: scripts match them.
CODES: Mapping[str, Severity] = MappingProxyType({
    "open-relay": _E,
    "missing-table": _E,
    "stale-table": _E,
    "wildcard-key": _E,
    "cidr-key-in-hash": _E,
    "unknown-restriction": _E,
    "config-error": _E,
    "unreachable-restriction": _W,
    "tarpit-never": _W,
    "public-resolver-dnsbl": _W,
    "risky-restriction": _W,
    "regexp-unanchored": _W,
    "unused-parameter": _W,
    "overriding-entry": _W,
    "comment-in-value": _W,
    "startup-warning": _W,
})


@dataclass(frozen=True, slots=True, order=True)
class Where:
    """A file and line; line 0 when the line is unknown (a parameter at its default)."""

    file: str
    line: int = 0


_COMMA_LINE = re.compile(r"(?P<file>.+?), line (?P<line>[0-9]+)")  # main.cf, tables
_COLON_LINE = re.compile(r"(?P<file>.+?):(?P<line>[0-9]+)")  # master.cf


def parse_origin(origin: str, main_cf: str) -> Where:
    """A Config origin (`FILE, line N`, master.cf's `FILE:N`, `default`, `command line`)."""
    for pattern in (_COMMA_LINE, _COLON_LINE):
        m = pattern.fullmatch(origin)
        if m is not None:
            return Where(m["file"], int(m["line"]))
    return Where(main_cf if origin in ("", "default") else origin)


def split_located(text: str, main_cf: str) -> tuple[Where, str]:
    """A warning or error that starts with its origin (`FILE, line N: text`, `FILE:N: text`)
    as (where, text); main.cf at line 0 when it names none."""
    for pattern in (_COMMA_LINE, _COLON_LINE):
        m = re.match(pattern.pattern + ": ", text)
        if m is not None:
            return Where(m["file"], int(m["line"])), text[m.end():]
    return Where(main_cf), text.removeprefix("default: ")


@dataclass(frozen=True, slots=True)
class Finding:
    """One mistake: where it is, what it does, what to write instead."""

    where: Where
    code: str
    message: str
    suggestion: str = ""

    @property
    def severity(self) -> Severity:
        return CODES[self.code]

    def line(self) -> str:
        """`FILE:LINE: SEVERITY: CODE: text` (the suggestion after a semicolon)."""
        text = f"{self.message}; {self.suggestion}" if self.suggestion else self.message
        return (f"{self.where.file}:{self.where.line}: {self.severity.value}: {self.code}: "
                f"{text}")

    def json(self) -> str:
        return json.dumps({"file": self.where.file, "line": self.where.line,
                           "severity": self.severity.value, "code": self.code,
                           "message": self.message, "suggestion": self.suggestion})


def unique(findings: Iterable[Finding]) -> list[Finding]:
    """Findings sorted by file and line, each once (a setting shared by several master.cf
    services is checked once per service)."""
    seen: set[Finding] = set()
    out = []
    for finding in findings:
        if finding not in seen:
            seen.add(finding)
            out.append(finding)
    return sorted(out, key=lambda f: (f.where, f.code))


def write(findings: list[Finding], out: TextIO, as_json: bool, name: str) -> int:
    """Print the findings (one JSON object per line with `as_json`, else one line each and a
    summary); exit status 1 when any is an error, else 0."""
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = len(findings) - errors
    for finding in findings:
        print(finding.json() if as_json else finding.line(), file=out)
    if not as_json:
        counts = (f"{errors} error{'s' * (errors != 1)}, "
                  f"{warnings} warning{'s' * (warnings != 1)}") if findings else "no findings"
        print(f"mailgate lint: {name}: {counts}", file=out)
    return 1 if errors else 0
