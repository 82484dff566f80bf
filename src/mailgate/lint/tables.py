"""Table checks: tables a restriction names that do not open, stale compiled tables, keys that
never match, and regexp/pcre patterns meant for a domain that match more."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError
from mailgate.lint.findings import Finding, Where, parse_origin
from mailgate.lint.lists import RestrictionList, Subject
from mailgate.lint.patterns import pattern_problem, rule_patterns
from mailgate.maps.base import Map, Registry
from mailgate.maps.keycheck import (
    FIXED_KEY_TYPES,
    compiled_path,
    key_problem,
    named_tables,
    source_problems,
    stale_table,
    table_specs,
)
from mailgate.maps.pattern_source import table_lines


@dataclass
class Tables:
    """The tables lint opens, each once, as the server would (same registry and options)."""

    registry: Registry
    opened: dict[str, Map | MapConfigError] = field(default_factory=dict)

    def open(self, spec: str) -> Map | MapConfigError:
        """The table, or the error the server would answer every lookup with."""
        found = self.opened.get(spec)
        if found is None:
            try:
                found = self.registry.open(spec)
            except MapConfigError as exc:
                found = exc
            self.opened[spec] = found
        return found


@dataclass(frozen=True, slots=True)
class TableRef:
    """A table named in the configuration: by a restriction (`check_*_access TABLE`, a bare
    table) or in any other parameter value."""

    spec: str
    where: Where
    by_restriction: bool


def table_refs(subjects: list[Subject], lists: list[RestrictionList]) -> list[TableRef]:
    """Every table the configuration names, restrictions first; each spec once per kind."""
    refs: dict[tuple[str, bool], TableRef] = {}
    for rl in lists:
        for step in rl.steps:
            if step.arg is not None and ":" in step.arg and (step.bare or step.name.startswith(
                    "check_")) and step.name != "check_policy_service":
                for spec in list(table_specs(step.arg)) or [step.arg]:
                    refs.setdefault((spec, True), TableRef(spec, rl.where, True))
    for subject in subjects:
        for spec, _, origin in named_tables(subject.cfg):
            refs.setdefault((spec, False), TableRef(spec, parse_origin(origin, subject.main_cf),
                                                    False))
    return list(refs.values())


def check_tables(refs: list[TableRef], tables: Tables) -> Iterator[Finding]:
    """missing-table, stale-table, wildcard-key, cidr-key-in-hash and regexp-unanchored."""
    done: set[str] = set()
    for ref in refs:
        if ref.by_restriction:
            yield from _missing(ref, tables)
        if ref.spec in done:
            continue
        done.add(ref.spec)
        yield from _stale(ref)
        kind, _, name = ref.spec.partition(":")
        if kind in FIXED_KEY_TYPES:
            yield from _keys(ref, kind, name)
        elif kind in ("regexp", "pcre"):
            yield from _patterns(ref, name)


def _missing(ref: TableRef, tables: Tables) -> Iterator[Finding]:
    opened = tables.open(ref.spec)
    if not isinstance(opened, MapConfigError):
        return
    paths = compiled_path(ref.spec)
    if paths is not None and os.path.exists(paths[0]):
        hint = f'run "mailgate postmap {ref.spec}"'
    else:
        hint = "create the table, or remove the restriction that names it"
    yield Finding(ref.where, "missing-table",
                  f"table {ref.spec} does not open ({opened}): every lookup in it answers "
                  "451 4.3.5 Server configuration error", hint)


def _stale(ref: TableRef) -> Iterator[Finding]:
    paths = compiled_path(ref.spec)
    if paths is None:
        return
    source, compiled = paths
    warning = stale_table(ref.spec)
    if warning is not None:
        yield Finding(ref.where, "stale-table",
                      f"{warning}: the server still uses the old table", f'run "mailgate '
                      f'postmap {ref.spec}" after every change to {source}')
    elif os.path.exists(compiled) and not os.path.exists(source):
        yield Finding(ref.where, "stale-table",
                      f"database {compiled} has no source file {source}: the table cannot be "
                      "rebuilt or read", f'restore {source} (`mailgate postmap -s {ref.spec}` '
                      "prints what the database holds)")


def _keys(ref: TableRef, kind: str, name: str) -> Iterator[Finding]:
    text = name.strip()
    if kind == "inline" or text.startswith("{"):
        for item in split_list(text[1:-1] if text.startswith("{") else text):
            key, _, value = (item[1:-1] if item.startswith("{") else item).partition("=")
            problem = key_problem(key.strip(), kind, value.strip() or "VALUE")
            if problem is not None:
                yield Finding(ref.where, problem.code, problem.message, problem.suggestion)
        return
    source = _read(name)
    if source is None:
        return
    for found in source_problems(source, kind):
        yield Finding(Where(name, found.line), found.problem.code, found.problem.message,
                      found.problem.suggestion)


def _patterns(ref: TableRef, name: str) -> Iterator[Finding]:
    text = name.strip()
    if text.startswith("{") and text.endswith("}"):
        lines = [(ref.where, item[1:-1] if item.startswith("{") else item)
                 for item in split_list(text[1:-1])]
    else:
        source = _read(name)
        if source is None:
            return
        lines = [(Where(name, number), line) for number, line in table_lines(source, name)[0]]
    for where, line in lines:
        for pattern in rule_patterns(line):
            problem = pattern_problem(pattern)
            if problem is not None:
                yield Finding(where, "regexp-unanchored", *problem)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None
