"""Tables held in memory: texthash:, inline:, static:, fail: (Postfix dict_thash/inline/static)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError, MapTempError
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.casefold import fold, valid_utf8
from mailgate.maps.source import source_lines, split_key_value


@dataclass
class DictMap:
    """A fixed-key table in a dict; keys folded (casefold.fold) unless `fold_case` is off."""

    spec: str
    entries: dict[str, str] = field(default_factory=dict)
    fold_case: bool = True
    fixed: bool = True
    warnings: list[str] = field(default_factory=list)
    utf8: bool = True

    def lookup(self, key: str) -> str | None:
        return self.entries.get(fold(key, self.utf8) if self.fold_case else key)


def parse_source(text: str, filename: str, fold_case: bool,
                 utf8: bool = True) -> tuple[dict[str, str], list[str]]:
    """Parse a postmap source text: first value of a duplicate key wins, bad lines skipped.

    With `utf8` (smtputf8_enable) a line that is not valid UTF-8 is skipped first, and keys
    are folded with Unicode case folding (casefold.fold)."""
    entries: dict[str, str] = {}
    warnings: list[str] = []
    for line in source_lines(text):
        where = f"{filename}, line {line.number}"
        if utf8 and not valid_utf8(line.text):
            warnings.append(f'{where}: non-UTF-8 input "{line.text}" -- ignoring this line')
            continue
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
        folded = fold(key, utf8) if fold_case else key
        if folded in entries:  # dict_thash names the key as the line has it
            warnings.append(f'{where}: duplicate entry: "{key}"')
            continue
        entries[folded] = value
    return entries, warnings


def open_texthash(name: str, options: MapOptions) -> DictMap:
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        raise MapConfigError(f"open database {name}: {exc.strerror}") from exc
    entries, warnings = parse_source(text, name, options.fold_case, options.utf8)
    return DictMap(f"texthash:{name}", entries, options.fold_case, warnings=warnings,
                   utf8=options.utf8)


def open_inline(name: str, options: MapOptions) -> DictMap:
    """`inline:{ k=v, { k = v with spaces } }` with Postfix's error texts; a later duplicate
    key replaces an earlier one."""
    spec = f"inline:{name}"
    need = f'"{spec}"; need "inline:{{name=value...}}"'
    if options.utf8 and not valid_utf8(name):
        raise MapConfigError(f"bad UTF-8 syntax: {need}")
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
            key = fold(key, options.utf8)
        entries[key] = value
    return DictMap(spec, entries, options.fold_case, utf8=options.utf8)


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
