"""regexp: and pcre: tables (Postfix dict_regexp / dict_pcre) on Python's `re`.

Rules `[!]/re/flags result`, `/re1/!/re2/ result` (match re1 but not re2), `if [!]/re/` ...
`endif`, `$N`/`${N}` substitution; bad rules are warned about with Postfix's texts and skipped
(vectors: shared/postfix/tests/util/dict_regexp.*, dict_pcre.*, miss_endif_*).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.source import leading_negations, source_lines


@dataclass(frozen=True, slots=True)
class Rule:
    """A match rule (`result` set), an `if` (`result` None; `skip` = index after its endif),
    or an `endif` (`pattern` None)."""

    pattern: re.Pattern[str] | None
    negate: bool
    result: str | None
    unless: re.Pattern[str] | None = None  # /re1/!/re2/
    skip: int = 0


@dataclass
class RegexpMap:
    spec: str
    rules: list[Rule] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fixed: bool = False
    fold_case: bool = False

    def lookup(self, key: str) -> str | None:
        i, rules = 0, self.rules
        while i < len(rules):
            rule = rules[i]
            if rule.pattern is None:
                i += 1
                continue
            m = rule.pattern.search(key)
            hit = (m is None) if rule.negate else (m is not None)
            if hit and rule.unless is not None and rule.unless.search(key):
                hit = False
            if rule.result is None:
                i = i + 1 if hit else rule.skip
                continue
            if hit:
                return _substitute(rule.result, m) if m is not None else rule.result
            i += 1
        return None


_REF = re.compile(r"\$\$|\$\{(\d+)\}|\$(\d+)")


def _substitute(result: str, m: re.Match[str]) -> str:
    if "$" not in result:
        return result

    def group(g: re.Match[str]) -> str:
        if g.group(0) == "$$":
            return "$"
        return m.group(int(g.group(1) or g.group(2))) or ""

    return _REF.sub(group, result)


class _Skip(Exception):
    pass


def _pattern(text: str, pcre: bool) -> tuple[re.Pattern[str], str]:
    """Parse `/re/flags` at the start of text; return the compiled pattern and the rest."""
    if not text:
        raise _Skip("no regexp")
    delim = text[0]
    if delim.isalnum() or delim.isspace() or delim == "\\":
        raise _Skip(f'no "/" delimiter in regexp: "{text}"')
    i = 1
    while i < len(text) and text[i] != delim:
        i += 2 if text[i] == "\\" else 1
    if i >= len(text):
        raise _Skip(f'unterminated regexp: "{text}"')
    body = text[1:i]
    j = i + 1
    flags = re.IGNORECASE
    while j < len(text) and not text[j].isspace() and (pcre or text[j] != "!"):
        f = text[j]
        if f == "i":
            flags ^= re.IGNORECASE
        elif f == "m":
            flags ^= re.MULTILINE
        elif f == "x":
            flags ^= re.VERBOSE
        elif f == "s" and pcre:
            flags ^= re.DOTALL
        elif f in "AEUX" and pcre:
            pass
        else:
            raise _Skip(f'unknown regexp option "{f}"')
        j += 1
    try:
        return re.compile(body, flags), text[j:]
    except re.error as exc:
        if pcre:  # PCRE2's wording for the common cases; it reports no "skipping" suffix
            message, offset = _PCRE_ERRORS.get(exc.msg, (exc.msg, exc.pos or 0))
            raise _Fatal(f"error in regex at offset {offset if offset >= 0 else len(body)}: "
                         f"{message}") from exc
        raise _Skip(f"regexp error: {exc.msg}") from exc


# Python re message -> (PCRE2 message, offset; -1 = end of the pattern)
_PCRE_ERRORS = {
    "missing ), unterminated subpattern": ("missing closing parenthesis", -1),
    "unbalanced parenthesis": ("unmatched closing parenthesis", 0),
    "nothing to repeat": ("quantifier does not follow a repeatable item", 0),
    "unterminated character set": ("missing terminating ] for character class", -1),
}


class _Fatal(Exception):
    """A rule error that Postfix reports without ": skipping this rule"."""


def parse_rules(lines: list[tuple[int, str]], where: str,
                pcre: bool) -> tuple[list[Rule], list[str]]:
    rules: list[Rule] = []
    warnings: list[str] = []
    open_ifs: list[tuple[int, int]] = []

    def warn(number: int, text: str) -> None:
        warnings.append(f"{where}, line {number}: {text}")

    for number, raw in lines:
        text = raw.strip()
        word = text[:5].lower()
        try:
            if word[:2] == "if" and (len(text) == 2 or not text[2].isalnum()):
                negate, rest = leading_negations(text[2:].lstrip())
                pattern, extra = _pattern(rest, pcre)
                if extra.strip():
                    warn(number, f'ignoring extra text after IF statement: "{extra.strip()}"')
                    warn(number, "do not prepend whitespace to statements between IF and ENDIF")
                open_ifs.append((len(rules), number))
                rules.append(Rule(pattern, negate, None))
            elif word == "endif" and (len(text) == 5 or not text[5].isalnum()):
                if text[5:].strip():
                    warn(number, "ignoring extra text after ENDIF")
                if not open_ifs:
                    warn(number, "ignoring ENDIF without matching IF")
                    continue
                index, _ = open_ifs.pop()
                rules.append(Rule(None, False, None))
                old = rules[index]
                rules[index] = Rule(old.pattern, old.negate, None, None, len(rules))
            else:
                rules.append(_match_rule(text, pcre, number, warn))
        except _Skip as why:
            warn(number, f"{why}: skipping this rule")
        except _Fatal as why:
            warn(number, str(why))
    for index, number in reversed(open_ifs):
        warn(number, "IF has no matching ENDIF")
        old = rules[index]
        rules[index] = Rule(old.pattern, old.negate, None, None, len(rules))
    return rules, warnings


def _match_rule(text: str, pcre: bool, number: int, warn: object) -> Rule:
    negate, rest = leading_negations(text)
    pattern, rest = _pattern(rest, pcre)
    unless = None
    if rest.startswith("!") and not pcre:  # regexp only: /re1/!/re2/
        unless, rest = _pattern(rest[1:], pcre)
    result = rest.strip()
    if not result:
        assert callable(warn)
        warn(number, "no replacement text: using empty string")
    groups = [int(a or b) for a, b in re.findall(r"\$\{(\d+)\}|\$(\d+)", result)]
    if groups and (negate or unless is not None):
        raise _Skip("$number found in negative match replacement text")
    for n in groups:
        if n > pattern.groups:
            raise _Skip(f'out of range replacement index "{n}"')
    return Rule(pattern, negate, result, unless)


def _open(name: str, options: MapOptions, kind: str) -> RegexpMap:
    spec = f"{kind}:{name}"
    stripped = name.strip()
    if stripped.startswith("{"):
        if not stripped.endswith("}"):
            raise MapConfigError(f'{spec}: missing \'}}\' in "{stripped}"')
        items = split_list(stripped[1:-1])
        lines = [(i, item[1:-1] if item.startswith("{") else item)
                 for i, item in enumerate(items, 1)]
        rules, warnings = parse_rules(lines, f"{kind} map {spec}", kind == "pcre")
        return RegexpMap(spec, rules, warnings)
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        raise MapConfigError(f"open database {name}: {exc.strerror}") from exc
    lines = [(line.number, line.text) for line in source_lines(text)]
    rules, warnings = parse_rules(lines, f"{kind} map {name}", kind == "pcre")
    return RegexpMap(spec, rules, warnings)


def register(registry: Registry) -> None:
    registry.register("regexp", lambda n, o: _open(n, o, "regexp"))
    registry.register("pcre", lambda n, o: _open(n, o, "pcre"))
