"""Tables held in memory: texthash:, inline:, static:, fail: (Postfix dict_thash/inline/static)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError, MapTempError
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.source import source_lines, split_key_value


@dataclass
class DictMap:
    """A fixed-key table in a dict; keys folded to lower case unless `fold_case` is off."""

    spec: str
    entries: dict[str, str] = field(default_factory=dict)
    fold_case: bool = True
    fixed: bool = True
    warnings: list[str] = field(default_factory=list)

    def lookup(self, key: str) -> str | None:
        return self.entries.get(key.lower() if self.fold_case else key)


def parse_source(text: str, filename: str, fold_case: bool) -> tuple[dict[str, str], list[str]]:
    """Parse a postmap source text: first value of a duplicate key wins, bad lines skipped."""
    entries: dict[str, str] = {}
    warnings: list[str] = []
    for line in source_lines(text):
        where = f"{filename}, line {line.number}"
        if line.text[0].isspace():
            warnings.append(f"{where}: logical line must not start with whitespace")
            continue
        parsed = split_key_value(line.text)
        if isinstance(parsed, str):
            warnings.append(f"{where}: {parsed}")
            continue
        key, value = parsed
        if key.endswith(":"):
            warnings.append(f'{where}: record is in "key: value" format; is this an alias file?')
        if fold_case:
            key = key.lower()
        if key in entries:
            warnings.append(f'{where}: duplicate entry: "{key}"')
            continue
        entries[key] = value
    return entries, warnings


def open_texthash(name: str, options: MapOptions) -> DictMap:
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        raise MapConfigError(f"open database {name}: {exc.strerror}") from exc
    entries, warnings = parse_source(text, name, options.fold_case)
    return DictMap(f"texthash:{name}", entries, options.fold_case, warnings=warnings)


def open_inline(name: str, options: MapOptions) -> DictMap:
    """`inline:{ k=v, { k = v with spaces } }` with Postfix's error texts."""
    spec = f"inline:{name}"
    need = f'"{spec}"; need "inline:{{name=value...}}"'
    text = name.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise MapConfigError(f"bad syntax: {need}")
    items = split_list(text[1:-1])
    if not items:
        raise MapConfigError(f"empty table: {need}")
    entries: dict[str, str] = {}
    for item in items:
        if item.startswith("{"):
            if not item.endswith("}"):
                raise MapConfigError(f"syntax error after '}}' in \"{item}\": {need}")
            key, eq, value = item[1:-1].strip().partition("=")
            key, value = key.strip(), value.strip()
        else:
            key, eq, value = item.partition("=")
        if not eq or not key:
            raise MapConfigError(f"missing '=' after attribute name: {need}")
        if options.fold_case:
            key = key.lower()
        entries.setdefault(key, value)
    return DictMap(spec, entries, options.fold_case)


@dataclass
class StaticMap:
    spec: str
    value: str
    fixed: bool = True
    fold_case: bool = False

    def lookup(self, key: str) -> str | None:
        return self.value


def open_static(name: str, options: MapOptions) -> StaticMap:
    """`static:value` or `static:{ value with spaces }`."""
    value = name.strip()
    if value.startswith("{"):
        close = value.rfind("}")
        if close < 0:
            raise MapConfigError(f"bad static:name syntax: missing '}}' in \"{name}\"")
        if value[close + 1 :].strip():
            raise MapConfigError(f"bad static:name syntax: syntax error after '}}' in "
                                 f"\"{name}\"")
        value = value[1:close].strip()
    return StaticMap(f"static:{name}", value)


@dataclass
class FailMap:
    spec: str
    fixed: bool = True
    fold_case: bool = False

    def lookup(self, key: str) -> str | None:
        raise MapTempError(f"{self.spec}: table lookup failed")


def open_fail(name: str, options: MapOptions) -> FailMap:
    return FailMap(f"fail:{name}")


@dataclass
class EnvironMap:
    """environ: the process environment as a table (Postfix dict_env)."""

    spec: str
    fixed: bool = True
    fold_case: bool = False

    def lookup(self, key: str) -> str | None:
        return os.environ.get(key)


def open_environ(name: str, options: MapOptions) -> EnvironMap:
    return EnvironMap(f"environ:{name}")


def register(registry: Registry) -> None:
    registry.register("environ", open_environ)
    registry.register("texthash", open_texthash)
    registry.register("inline", open_inline)
    registry.register("static", open_static)
    registry.register("fail", open_fail)
