"""cidr: tables (Postfix dict_cidr): network patterns, `!` negation, nested `if`/`endif` blocks.

Patterns and lookup keys are parsed as Postfix's cidr_match.c does: the address family is
IPv6 when the text holds a `:`, else IPv4, and the text must then be exactly what the C
library's inet_pton() accepts. So a key `[1.2.3.4]`, `fe80::1%eth0` or `01.2.3.4` is not an
address (not found), and `::ffff:1.2.3.4` is an IPv6 address that only IPv6 rules match
(docs/decisions/0027-pattern-table-corners.md). A bad rule is reported as
`cidr map FILE, line N: ...: skipping this rule` with Postfix's texts (vectors:
shared/postfix/tests/util/dict_cidr.*, miss_endif_cidr.*).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.pattern_source import table_lines
from mailgate.maps.source import leading_negations

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4, _V6 = int(socket.AF_INET), int(socket.AF_INET6)  # plain ints: compared per rule
_BITS = {_V4: 32, _V6: 128}
_LONG_MAX = 2**63 - 1  # strtol() saturates here before atoi() narrows the value
_IF, _ENDIF, _MATCH = 0, 1, 2
_SPACE = " \t\n\v\f\r"  # ISSPACE(): ASCII white space only
_SPACES = re.compile("[ \t\n\v\f\r]+")


@dataclass(frozen=True, slots=True)
class Rule:
    """One table line: a match rule (`result` set), an `if` (`skip` = index after its
    endif), or an `endif`. `net`/`mask` are the address bits as integers."""

    op: int
    family: int = 0
    net: int = 0
    mask: int = 0
    negate: bool = False
    result: str = ""
    skip: int = 0


def address_bits(text: str) -> tuple[int, int] | None:
    """(family, address as an integer) as cidr_match_execute() parses a lookup key, or None.

    IPv6 when the text contains `:`; no brackets, zone ids, leading zeros or IPv4 mapping.
    """
    family = _V6 if ":" in text else _V4
    try:
        packed = socket.inet_pton(family, text)
    except (OSError, ValueError):  # ValueError: a NUL, which ends the C string
        if "\0" not in text:
            return None
        return address_bits(text.split("\0", 1)[0])
    return family, int.from_bytes(packed, "big")


@dataclass
class CidrMap:
    spec: str
    rules: list[Rule] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fixed: bool = False
    fold_case: bool = False

    def lookup(self, key: str) -> str | None:
        parsed = address_bits(key)
        if parsed is None:
            return None
        family, addr = parsed
        i, rules, n = 0, self.rules, len(self.rules)
        while i < n:
            rule = rules[i]
            if rule.op == _ENDIF:
                i += 1
                continue
            # another address family never matches, negated or not
            hit = rule.family == family and ((addr & rule.mask) == rule.net) != rule.negate
            if rule.op == _IF:  # enter the block, or skip past its endif
                i = i + 1 if hit else rule.skip
                continue
            if hit:
                return rule.result
            i += 1
        return None


class PatternError(Exception):
    """A bad address pattern, with Postfix's reason (a cidr rule is then skipped)."""


def _mask_length(text: str) -> int:
    """atoi() stored in an unsigned char, as cidr_match_parse() does: `264` is 8."""
    return min(int(text), _LONG_MAX) & 0xFF


def parse_cidr(pattern: str) -> tuple[int, int, int]:
    """(family, network bits, prefix length) of `addr`, `addr/len`, `[addr]`, `[addr]/len`
    or `[addr/len]`; raises PatternError with cidr_match_parse()'s text."""
    text = pattern
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise PatternError(f'missing \']\' character after "{pattern}"')
        rest = text[close + 1 :]
        if rest and not rest.startswith("/"):
            raise PatternError(f'garbage after "{text[: close + 1]}"')
        text = text[1:close] + rest
    addr, slash, mask = text.partition("/")
    family = _V6 if ":" in addr else _V4
    bits = _BITS[family]
    if slash:
        if not mask.isascii() or not mask.isdigit():
            raise PatternError(f'bad mask value in "{text}"')
        length = _mask_length(mask)
        if length > bits:
            raise PatternError(f'bad mask length in "{text}"')
    else:
        length = bits
    try:
        value = int.from_bytes(socket.inet_pton(family, addr), "big")
    except (OSError, ValueError):
        if slash:
            raise PatternError(f'bad network value in "{text}"') from None
        raise PatternError(f'bad address pattern: "{text}"') from None
    netmask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
    if value & ~netmask:
        canonical = socket.inet_ntop(family, (value & netmask).to_bytes(bits // 8, "big"))
        raise PatternError(f'non-null host address bits in "{text}", perhaps you should use '
                           f'"{canonical}/{length}" instead')
    return family, value, length


def parse_network(pattern: str) -> Network:
    """parse_cidr() as an ipaddress network (for match lists: mynetworks and friends)."""
    family, value, length = parse_cidr(pattern)
    if family == _V4:
        return ipaddress.IPv4Network((value, length))
    return ipaddress.IPv6Network((value, length))


def _rule(op: int, pattern: str, negate: bool, result: str = "") -> Rule:
    family, value, length = parse_cidr(pattern)
    bits = _BITS[family]
    mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
    return Rule(op, family, value, mask, negate, result)


def _keyword(text: str, word: str) -> bool:
    """`if`/`endif` as dict_cidr sees them: any case, not followed by an ASCII letter/digit."""
    n = len(word)
    if text[:n].lower() != word:
        return False
    return len(text) == n or not (text[n].isascii() and text[n].isalnum())


def parse_rules(lines: list[tuple[int, str]], where: str) -> tuple[list[Rule], list[str]]:
    """Rules and warnings from (line number, text) pairs; `where` is e.g. "cidr map F"."""
    rules: list[Rule] = []
    warnings: list[str] = []
    open_ifs: list[tuple[int, int]] = []  # (rule index, line number)
    for number, raw in lines:
        text = raw.strip(_SPACE)
        try:
            if _keyword(text, "if"):
                negate, pattern = leading_negations(text[2:])
                if not pattern:
                    raise PatternError("no address pattern")
                rules.append(_rule(_IF, pattern.rstrip(_SPACE), negate))
                open_ifs.append((len(rules) - 1, number))
            elif _keyword(text, "endif"):
                if text[5:].strip(_SPACE):
                    raise PatternError("garbage after ENDIF")
                if not open_ifs:
                    raise PatternError("ENDIF without IF")
                index, _ = open_ifs.pop()
                rules.append(Rule(_ENDIF))
                _close(rules, index)
            else:
                negate, rest = leading_negations(text)
                parts = [part for part in _SPACES.split(rest.strip(_SPACE), 1) if part]
                if not parts:
                    raise PatternError("no address pattern")
                rule = _rule(_MATCH, parts[0], negate)  # a bad pattern is reported first
                if len(parts) < 2:
                    raise PatternError("no lookup result")
                rules.append(Rule(_MATCH, rule.family, rule.net, rule.mask, negate,
                                  parts[1].strip(_SPACE)))
        except PatternError as why:
            warnings.append(f"{where}, line {number}: {why}: skipping this rule")
    for index, number in reversed(open_ifs):
        warnings.append(f"{where}, line {number}: IF has no matching ENDIF")
        _close(rules, index)
    return rules, warnings


def _close(rules: list[Rule], index: int) -> None:
    """Point the `if` at `index` past the rules parsed so far (its block's end)."""
    old = rules[index]
    rules[index] = Rule(old.op, old.family, old.net, old.mask, old.negate, old.result,
                        len(rules))


def open_cidr(name: str, options: MapOptions) -> CidrMap:
    spec = f"cidr:{name}"
    stripped = name.strip()
    if stripped.startswith("{"):
        if not stripped.endswith("}"):
            raise MapConfigError(f'{spec}: missing \'}}\' in "{stripped}"')
        items = split_list(stripped[1:-1])
        lines = [(i, item[1:-1] if item.startswith("{") else item)
                 for i, item in enumerate(items, 1)]
        rules, warnings = parse_rules(lines, f"cidr map {spec}")
        return CidrMap(spec, rules, warnings)
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        raise MapConfigError(f"open database {name}: {exc.strerror}") from exc
    lines, read_warnings = table_lines(text, name)
    rules, warnings = parse_rules(lines, f"cidr map {name}")
    return CidrMap(spec, rules, read_warnings + warnings)


def register(registry: Registry) -> None:
    registry.register("cidr", open_cidr)
