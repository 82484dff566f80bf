"""`mailgate postmap`: build, query, dump and edit tables the way postmap(1) does."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from mailgate.config.maincf import expand, lookup_in, parse_main_cf
from mailgate.config.params import PARAMETERS
from mailgate.errors import ConfigError, MapError
from mailgate.maps import MapOptions, default_registry
from mailgate.maps.base import Map, NonUtf8Value, dict_name
from mailgate.maps.casefold import fold as fold_key
from mailgate.maps.casefold import printable, valid_utf8
from mailgate.maps.compiled import SUFFIX, CompiledMap, build, compile_source, postmap_warnings
from mailgate.maps.keycheck import key_warnings
from mailgate.maps.simple import DictMap, parse_source

_COMPILED = ("hash", "btree", "lmdb", "cdb", "dbm", "sdbm")
_BOOL = {"yes": True, "true": True, "no": False, "false": False}
PROGRAM = "mailgate/postmap"


def _spec(name: str, default_type: str = "hash") -> str:
    return name if ":" in name.split("/", 1)[0] else f"{default_type}:{name}"


def smtputf8_enabled(config_dir: str | None) -> bool:
    """`smtputf8_enable` as Postfix's postmap reads it from DIR/main.cf (no file without -c).

    Its default depends on compatibility_level, and where main.cf leaves that unset Postfix's
    own built-in value (0) applies, so smtputf8 is off (decision 0025). Raises OSError for
    a missing main.cf and ConfigError for a bad value."""
    explicit: dict[str, str] = {}
    if config_dir is not None:
        path = Path(config_dir) / "main.cf"
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        entries, _ = parse_main_cf(text, str(path))
        explicit = {e.name: e.value for e in entries}
    defaults = {p.name: p.default for p in PARAMETERS}
    defaults["compatibility_level"] = "0"
    raw = explicit.get("smtputf8_enable", defaults["smtputf8_enable"])
    value = expand(raw, lookup_in(explicit, defaults)).strip().lower()
    if value not in _BOOL:
        raise ConfigError(f"bad boolean configuration: smtputf8_enable = {raw}")
    return _BOOL[value]


def _bytes_safe(*streams: TextIO) -> None:
    """Keys and values are bytes: invalid UTF-8 passes through (surrogateescape), and stdin
    lines end at \\n only, as Postfix's vstring_get_nonl() reads them."""
    for stream in streams:
        if isinstance(stream, io.TextIOWrapper):
            if stream is sys.stdin or stream.readable():
                stream.reconfigure(encoding="utf-8", errors="surrogateescape", newline="\n")
            else:
                stream.reconfigure(encoding="utf-8", errors="surrogateescape")


class _Messages:
    """postmap's stderr: each line passes through Postfix's printable(), as msg(3) does."""

    def __init__(self, stderr: TextIO, utf8: bool) -> None:
        self.stderr = stderr
        self.utf8 = utf8

    def warning(self, text: str) -> None:
        print(f"{PROGRAM}: warning: {printable(text, self.utf8)}", file=self.stderr)

    def fatal(self, text: str) -> int:
        print(f"{PROGRAM}: fatal: {printable(text, self.utf8)}", file=self.stderr)
        return 1


def _stdin_keys(stdin: TextIO) -> Iterable[str]:
    return (line[:-1] if line.endswith("\n") else line for line in stdin)


def modify(args_tables: list[str], fold: bool, delete: str | None, stdin: TextIO,
           say: _Messages) -> int:
    """`postmap -i` (add `key value` lines from stdin) and `postmap -d KEY` / `-d -` on
    compiled tables: each table is rewritten atomically. -d exits 0 if some table had a key
    (or a key was not valid UTF-8 with smtputf8 on: Postfix's delete "succeeds"), else 1."""
    utf8 = say.utf8
    added: dict[str, str] = {}
    if delete is None:
        text = stdin.read()
        added, warnings = parse_source(text, "stdin", fold, utf8)
        for warning in [*postmap_warnings("stdin", warnings, fold, utf8),
                        *key_warnings(text, "stdin", _spec(args_tables[0]).partition(":")[0])]:
            say.warning(warning)
    keys = list(_stdin_keys(stdin)) if delete == "-" else [delete] if delete else []
    found = False
    for name in args_tables:
        kind, _, source = _spec(name).partition(":")
        if kind not in SUFFIX:
            return say.fatal(f"unsupported dictionary type for -i/-d: {kind}")
        path = source + SUFFIX[kind]
        try:
            current = dict(CompiledMap(f"{kind}:{source}", path, fold, utf8=utf8).items())
        except MapError:
            current = {}
        for key in keys:
            if utf8 and not valid_utf8(key):
                say.warning(f'{dict_name(f"{kind}:{source}")}: non-UTF-8 key "{key}": '
                            "malformed UTF-8 or invalid codepoint")
                found = True
            elif current.pop(fold_key(key, utf8) if fold else key, None) is not None:
                found = True
        current.update(added)  # postmap -i replaces, as with -r
        build(path, current)
    return 0 if delete is None or found else 1


def _key_warnings(kind: str, source: str) -> list[str]:
    """Keys that never match (`*`, `192.0.2.0/24`): ours, Postfix's postmap says nothing
    (docs/decisions/0060-lint.md)."""
    try:
        with open(source, encoding="utf-8", errors="surrogateescape") as f:
            return key_warnings(f.read(), source, kind)
    except OSError:  # compile_source() has just read it
        return []


def _dump(tables: list[Map], stdout: TextIO) -> None:
    for table in tables:
        inner = getattr(table, "table", table)  # the table behind its Utf8Map
        if isinstance(inner, DictMap):
            for key in sorted(inner.entries):
                print(f"{key}\t{inner.entries[key]}", file=stdout)
        elif isinstance(inner, CompiledMap):
            for entry_key, entry_value in inner.items():
                print(f"{entry_key}\t{entry_value}", file=stdout)


def _query(tables: list[Map], keys: Iterable[str], show: Callable[[str, str], str],
           stdout: TextIO, say: _Messages) -> int:
    found_any = False
    for key in keys:
        for table in tables:
            try:
                value = table.lookup(key)
            except NonUtf8Value as exc:
                return say.fatal(str(exc))
            except MapError as exc:
                return say.fatal(f"table {table.spec}: query error: {exc}")
            if value is not None:
                found_any = True
                if not value:  # postmap.c: warned, and printed all the same
                    name = dict_name(table.spec)
                    say.warning(f"table {name}: key {key}: empty string result is not allowed")
                    say.warning(f"table {name} should return NO RESULT in case of NOT FOUND")
                print(show(key, value), file=stdout)
                break
    return 0 if found_any else 1


def run(args_tables: list[str], query: str | None, dump: bool, fold: bool,
        stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
        stderr: TextIO = sys.stderr, incremental: bool = False,
        delete: str | None = None, config_dir: str | None = None) -> int:
    """Exit status as postmap's: 0 found (or done), 1 not found, 1 with a fatal message."""
    _bytes_safe(stdin, stdout, stderr)
    try:
        utf8 = smtputf8_enabled(config_dir)
    except OSError as exc:
        return _Messages(stderr, False).fatal(f"open {Path(config_dir or '.') / 'main.cf'}: "
                                              f"{exc.strerror}")
    except ConfigError as exc:
        return _Messages(stderr, False).fatal(str(exc))
    say = _Messages(stderr, utf8)
    if incremental or delete is not None:
        return modify(args_tables, fold, delete, stdin, say)
    registry = default_registry(MapOptions(fold_case=fold, utf8=utf8), say.warning)
    tables = []
    for name in args_tables:
        spec = _spec(name)
        kind, _, source = spec.partition(":")
        if kind in _COMPILED and query is None and not dump:
            if kind not in SUFFIX:
                return say.fatal(f"unsupported dictionary type: {kind}")
            try:
                _, build_warnings = compile_source(kind, source, fold, utf8)
            except MapError as exc:
                return say.fatal(str(exc))
            for warning in [*build_warnings, *_key_warnings(kind, source)]:
                say.warning(warning)
            continue
        try:
            table = registry.open(spec)
        except MapError as exc:
            return say.fatal(str(exc))
        for warning in getattr(table, "warnings", []):
            say.warning(warning)
        tables.append(table)
    if dump:
        _dump(tables, stdout)
        return 0
    if query is None:
        return 0
    if query == "-":
        return _query(tables, _stdin_keys(stdin), lambda k, v: f"{k}\t{v}", stdout, say)
    return _query(tables, [query], lambda k, v: v, stdout, say)
