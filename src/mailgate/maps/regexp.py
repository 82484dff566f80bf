"""Pattern tables: regexp: and pcre: (Postfix dict_regexp / dict_pcre), with Python `re`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailgate.errors import MapConfigError
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.source import source_lines


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: re.Pattern[str]
    negate: bool
    result: str


@dataclass
class RegexpMap:
    spec: str
    rules: list[Rule] = field(default_factory=list)
    fixed: bool = False
    fold_case: bool = False

    def lookup(self, key: str) -> str | None:
        for rule in self.rules:
            m = rule.pattern.search(key)
            if rule.negate:
                if m is None:
                    return rule.result
            elif m is not None:
                return _substitute(rule.result, m)
        return None


def _substitute(result: str, m: re.Match[str]) -> str:
    if "$" not in result:
        return result

    def group(g: re.Match[str]) -> str:
        if g.group(0) == "$$":
            return "$"
        number = int(g.group(1) or g.group(2))
        return m.group(number) or ""

    return re.sub(r"\$\$|\$\{(\d+)\}|\$(\d)", group, result)


def parse_rule(text: str, where: str, pcre: bool) -> Rule:
    """Parse `[!]/pattern/flags result` with any non-alphanumeric delimiter."""
    negate = text.startswith("!")
    if negate:
        text = text[1:].lstrip()
    if not text or text[0].isalnum() or text[0].isspace():
        raise MapConfigError(f"{where}: no pattern delimiter")
    delim = text[0]
    i = 1
    while i < len(text) and text[i] != delim:
        i += 2 if text[i] == "\\" else 1
    if i >= len(text):
        raise MapConfigError(f"{where}: unmatched delimiter")
    pattern = text[1:i]
    j = i + 1
    while j < len(text) and not text[j].isspace():
        j += 1
    flag_text, result = text[i + 1 : j], text[j:].strip()
    flags = re.IGNORECASE
    for f in flag_text:
        if f == "i":
            flags ^= re.IGNORECASE
        elif f == "m":
            flags ^= re.MULTILINE
        elif f == "s" and pcre:
            flags ^= re.DOTALL
        elif f == "x":
            flags ^= re.VERBOSE
        elif f in "AEUX" and pcre:
            pass
        else:
            raise MapConfigError(f"{where}: unknown regexp option \"{f}\"")
    if not result:
        raise MapConfigError(f"{where}: no replacement text")
    try:
        compiled = re.compile(pattern, flags)
    except re.error as exc:
        raise MapConfigError(f"{where}: regexp error: {exc}") from exc
    return Rule(compiled, negate, result)


def _open(name: str, options: MapOptions, kind: str) -> RegexpMap:
    spec = f"{kind}:{name}"
    stripped = name.strip()
    rules: list[Rule] = []
    if stripped.startswith("{") and stripped.endswith("}"):
        from mailgate.config.maincf import split_list

        for item in split_list(stripped[1:-1]):
            body = item[1:-1].strip() if item.startswith("{") else item
            rules.append(parse_rule(body, spec, kind == "pcre"))
        return RegexpMap(spec, rules)
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        raise MapConfigError(f"open database {name}: {exc.strerror}") from exc
    for line in source_lines(text):
        rules.append(parse_rule(line.text.strip(), f"{name}, line {line.number}", kind == "pcre"))
    return RegexpMap(spec, rules)


def register(registry: Registry) -> None:
    registry.register("regexp", lambda n, o: _open(n, o, "regexp"))
    registry.register("pcre", lambda n, o: _open(n, o, "pcre"))
