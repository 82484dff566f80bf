"""regexp: and pcre: tables (Postfix dict_regexp / dict_pcre), rule for rule.

Rules `[!]/re/flags result`, `/re1/flags!/re2/flags result` (regexp only), `if [!]/re/` ...
`endif`, `$n`/`${n}`/`$(n)`/`$$` in results (maps/replacement.py). Lines are parsed byte for
byte as the C code does (any non-alphanumeric first byte is a delimiter), and the patterns
run on the real engines (maps/regex_engines.py): POSIX regcomp for regexp:, PCRE2 in byte
mode for pcre:. Bad rules get Postfix's warnings (vectors: shared/postfix/tests/util/
dict_regexp.*, dict_pcre.*, miss_endif_*); docs/decisions/0027 and 0028 say why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError
from mailgate.maps import regex_engines as eng
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.pattern_source import table_lines
from mailgate.maps.regex_engines import Compiled, RegexError
from mailgate.maps.replacement import Replacement, ReplacementError, c_int, expand, prescan

_MATCH, _IF, _ENDIF = 0, 1, 2
_SPACE = " \t\n\v\f\r"  # ISSPACE(): ASCII white space only
_PCRE_FLAGS = {"i": eng.PCRE2_CASELESS, "m": eng.PCRE2_MULTILINE, "s": eng.PCRE2_DOTALL,
               "x": eng.PCRE2_EXTENDED, "A": eng.PCRE2_ANCHORED,
               "E": eng.PCRE2_DOLLAR_ENDONLY, "U": eng.PCRE2_UNGREEDY}
_POSIX_FLAGS = {"i": eng.REG_ICASE, "m": eng.REG_NEWLINE, "x": eng.REG_EXTENDED}


@dataclass(frozen=True, slots=True)
class Rule:
    """A match rule, an `if` (`skip` = index after its endif) or an `endif`."""

    op: int
    pattern: Compiled | None = None
    match: bool = True  # False: the rule is `!/re/` (it hits when re does not match)
    result: Replacement | None = None
    second: Compiled | None = None  # regexp's /re1/!/re2/
    second_match: bool = True
    skip: int = 0


def _text(raw: str) -> str:
    """A byte string held as latin-1 text, back to the str the rest of mailgate uses."""
    return raw.encode("latin-1").decode("utf-8", "surrogateescape")


@dataclass
class RegexpMap:
    spec: str
    rules: list[Rule] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fixed: bool = False
    fold_case: bool = False

    def lookup(self, key: str) -> str | None:
        try:
            subject = key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            subject = key.encode("utf-8", "surrogatepass")
        if b"\0" in subject:  # the C string ends there
            subject = subject.split(b"\0", 1)[0]
        i, rules, n = 0, self.rules, len(self.rules)
        while i < n:
            rule = rules[i]
            if rule.op == _ENDIF:
                i += 1
                continue
            assert rule.pattern is not None
            result = rule.result
            if result is not None and result.max_sub:
                spans = rule.pattern.search(subject)
                hit = spans is not None
            else:
                spans, hit = None, rule.pattern.test(subject)
            if hit != rule.match:
                i = rule.skip if rule.op == _IF else i + 1
                continue
            if rule.second is not None and rule.second.test(subject) != rule.second_match:
                i += 1
                continue
            if result is None:  # an if that holds: enter its block
                i += 1
                continue
            if result.max_sub == 0 or spans is None:
                return result.literal
            return expand(result, subject, spans)
        return None


class _Skip(Exception):
    """The rule is dropped; the warning text is already recorded."""


@dataclass
class _Parser:
    """dict_regexp_parseline() / dict_pcre_parse_rule() for one table."""

    where: str  # "regexp map NAME" or "pcre map NAME"
    pcre: bool
    warnings: list[str]
    number: int = 0

    @property
    def compiler(self) -> Callable[[bytes, int], Compiled]:
        return eng.pcre_compiler() if self.pcre else eng.posix_compiler()

    def warn(self, text: str) -> None:
        self.warnings.append(f"{self.where}, line {self.number}: {text}")

    def skip(self, text: str) -> _Skip:
        self.warn(f"{text}: skipping this rule")
        return _Skip()

    def pattern(self, text: str) -> tuple[bool, bytes, int, str]:
        """dict_*_get_pat(): negations, delimiters, flags; (match, regex, flags, rest)."""
        match, i, n = True, 0, len(text)
        while i < n and (text[i] == "!" or text[i] in _SPACE):
            match = match if text[i] in _SPACE else not match
            i += 1
        if i >= n:
            raise self.skip("no regexp")
        delim, i = text[i], i + 1
        start = i
        while i < n:
            if text[i] == "\\":
                if i + 1 >= n:
                    if self.pcre:
                        i = n
                    break  # regexp: a final backslash ends the pattern like a delimiter
                i += 1
            elif text[i] == delim:
                break
            i += 1
        if i >= n:
            what = "ignoring this rule" if self.pcre else "skipping this rule"
            self.warn(f'no closing regexp delimiter "{_text(delim)}": {what}')
            raise _Skip()
        regex = text[start:i].encode("latin-1")
        i += 1
        if self.pcre:
            flags = eng.PCRE2_CASELESS | eng.PCRE2_DOTALL
            table = _PCRE_FLAGS
        else:
            flags = eng.REG_EXTENDED | eng.REG_ICASE
            table = _POSIX_FLAGS
        while i < n and text[i] not in _SPACE and (self.pcre or text[i] != "!"):
            letter = text[i]
            if letter in table:
                flags ^= table[letter]
            elif letter == "X" and self.pcre:
                self.warn('ignoring obsolete regexp option "X"')
            else:
                raise self.skip(f'unknown regexp option "{_text(letter)}"')
            i += 1
        return match, regex, flags, text[i:]

    def compile(self, regex: bytes, flags: int) -> Compiled:
        try:
            return self.compiler(regex, flags)
        except RegexError as exc:
            if self.pcre:
                self.warn(f"error in regex at offset {exc.offset}: {exc.message}")
            else:
                self.warn(exc.message)
            raise _Skip() from exc

    def match_rule(self, text: str) -> Rule:
        match, regex, flags, rest = self.pattern(text)
        second: tuple[bool, bytes, int, str] | None = None
        if not self.pcre and rest.startswith("!"):
            second = self.pattern(rest)
            rest = second[3]
        rest = rest.lstrip(_SPACE)
        if not rest:
            self.warn("no replacement text: using empty string")
        try:
            result = prescan(_text(rest), self.pcre)
        except ReplacementError as exc:
            for prefixed, warning in exc.warnings:
                if prefixed:
                    self.warn(warning)
                else:
                    self.warnings.append(warning)
            raise self.skip("bad replacement syntax") from None
        if result.max_sub > 0 and not match:
            raise self.skip("$number found in negative match replacement text")
        if not self.pcre and result.max_sub == 0:
            flags |= eng.REG_NOSUB
        compiled = self.compile(regex, flags)
        if result.max_sub > compiled.groups:
            raise self.skip(f'out of range replacement index "{c_int(result.max_sub)}"')
        other = None
        if second is not None:
            other = self.compile(second[1], second[2] | eng.REG_NOSUB)
        return Rule(_MATCH, compiled, match, result, other, second[0] if second else True)

    def if_rule(self, text: str) -> Rule:
        match, regex, flags, rest = self.pattern(text.lstrip(_SPACE))
        rest = rest.lstrip(_SPACE)
        if rest:
            self.warn(f'ignoring extra text after IF statement: "{_text(rest)}"')
            self.warn("do not prepend whitespace to statements between IF and ENDIF")
        if not self.pcre:
            flags |= eng.REG_NOSUB
        return Rule(_IF, self.compile(regex, flags), match)


def _keyword(text: str, word: str) -> bool:
    """strncasecmp(p, WORD) == 0 && !ISALNUM(p[len])."""
    n = len(word)
    return text[:n].upper() == word and not (len(text) > n and _alnum(text[n]))


def _alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def parse_rules(lines: list[tuple[int, str]], where: str,
                pcre: bool) -> tuple[list[Rule], list[str]]:
    """Rules and warnings from (line number, text) pairs; `where` is e.g. "pcre map F"."""
    rules: list[Rule] = []
    warnings: list[str] = []
    parser = _Parser(where, pcre, warnings)
    open_ifs: list[tuple[int, int]] = []
    for number, raw in lines:
        # one char per byte, so that delimiters and flags are read as the C code reads them
        text = raw.encode("utf-8", "surrogateescape").decode("latin-1").rstrip(_SPACE)
        if not text:
            continue
        parser.number = number
        try:
            if not _alnum(text[0]):
                rules.append(parser.match_rule(text))
            elif _keyword(text, "IF"):
                rules.append(parser.if_rule(text[2:]))
                open_ifs.append((len(rules) - 1, number))
            elif _keyword(text, "ENDIF"):
                if not open_ifs:
                    parser.warn("ignoring ENDIF without matching IF")
                    continue
                if text[5:].strip(_SPACE):
                    parser.warn("ignoring extra text after ENDIF")
                rules.append(Rule(_ENDIF))
                _close(rules, open_ifs.pop()[0])
            else:
                parser.warn("ignoring unrecognized request")
        except _Skip:
            continue
    for index, number in reversed(open_ifs):
        warnings.append(f"{where}, line {number}: IF has no matching ENDIF")
        _close(rules, index)
    return rules, warnings


def _close(rules: list[Rule], index: int) -> None:
    """Point the `if` at `index` past the rules parsed so far."""
    old = rules[index]
    rules[index] = Rule(old.op, old.pattern, old.match, skip=len(rules))


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
    lines, read_warnings = table_lines(text, name)
    rules, warnings = parse_rules(lines, f"{kind} map {name}", kind == "pcre")
    return RegexpMap(spec, rules, read_warnings + warnings)


def register(registry: Registry) -> None:
    registry.register("regexp", lambda n, o: _open(n, o, "regexp"))
    registry.register("pcre", lambda n, o: _open(n, o, "pcre"))
