"""`mailgate postmap`: query and dump tables the way postmap(1) does (-q, -q -, -s, -f)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from mailgate.errors import MapError
from mailgate.maps import MapOptions, default_registry
from mailgate.maps.compiled import SUFFIX, CompiledMap, build, compile_source
from mailgate.maps.simple import DictMap, parse_source

_COMPILED = ("hash", "btree", "lmdb", "cdb", "dbm", "sdbm")


def _spec(name: str, default_type: str = "hash") -> str:
    return name if ":" in name.split("/", 1)[0] else f"{default_type}:{name}"


def modify(args_tables: list[str], fold: bool, delete: str | None, stdin: TextIO,
           stderr: TextIO) -> int:
    """`postmap -i` (add `key value` lines from stdin) and `postmap -d KEY` on compiled tables:
    the table is rewritten atomically. -d exits 0 if some table had the key, else 1."""
    added: dict[str, str] = {}
    if delete is None:
        entries, warnings = parse_source(stdin.read(), "stdin", fold)
        added = entries
        for warning in warnings:
            print(f"mailgate/postmap: warning: {warning}", file=stderr)
    found = False
    for name in args_tables:
        kind, _, source = _spec(name).partition(":")
        if kind not in SUFFIX:
            print(f"mailgate/postmap: fatal: unsupported dictionary type for -i/-d: {kind}",
                  file=stderr)
            return 1
        path = source + SUFFIX[kind]
        try:
            table = CompiledMap(f"{kind}:{source}", path, fold)
            current = dict(table.items())
        except MapError:
            current = {}
        if delete is not None:
            key = delete.lower() if fold else delete
            if current.pop(key, None) is not None:
                found = True
        else:
            for key, value in added.items():
                current[key] = value  # postmap -i replaces, as with -r
        build(path, current)
    return 0 if delete is None or found else 1


def run(args_tables: list[str], query: str | None, dump: bool, fold: bool,
        stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
        stderr: TextIO = sys.stderr, incremental: bool = False,
        delete: str | None = None) -> int:
    """Exit status as postmap's: 0 found (or done), 1 not found, 2 error (we say 1 + message)."""
    if incremental or delete is not None:
        return modify(args_tables, fold, delete, stdin, stderr)
    registry = default_registry()
    tables = []
    for name in args_tables:
        spec = _spec(name)
        kind, _, source = spec.partition(":")
        if kind in _COMPILED and query is None and not dump:
            if kind not in SUFFIX:
                print(f"mailgate/postmap: fatal: unsupported dictionary type: {kind}",
                      file=stderr)
                return 1
            try:
                _, build_warnings = compile_source(kind, source, fold)
            except MapError as exc:
                print(f"mailgate/postmap: fatal: {exc}", file=stderr)
                return 1
            for warning in build_warnings:
                print(f"mailgate/postmap: warning: {warning}", file=stderr)
            continue
        try:
            table = registry.open(spec, MapOptions(fold_case=fold))
        except MapError as exc:
            print(f"mailgate/postmap: fatal: {exc}", file=stderr)
            return 1
        for warning in getattr(table, "warnings", []):
            print(f"mailgate/postmap: warning: {warning}", file=stderr)
        tables.append(table)
    if dump:
        for table in tables:
            if isinstance(table, DictMap):
                for key in sorted(table.entries):
                    print(f"{key}\t{table.entries[key]}", file=stdout)
            elif isinstance(table, CompiledMap):
                for entry_key, entry_value in table.items():
                    print(f"{entry_key}\t{entry_value}", file=stdout)
        return 0
    if query is None:
        return 0
    keys: Iterable[str] = (line.rstrip("\n") for line in stdin) if query == "-" else [query]
    found_any = False
    for key in keys:
        for table in tables:
            try:
                value = table.lookup(key)
            except MapError as exc:
                print(f"mailgate/postmap: fatal: table {table.spec}: query error: {exc}",
                      file=stderr)
                return 1
            if value is not None:
                found_any = True
                print(f"{key}\t{value}" if query == "-" else value, file=stdout)
                break
    return 0 if found_any else 1
