"""cidr: tables (Postfix dict_cidr): network patterns, `!` negation, nested `if`/`endif` blocks.

A bad rule is reported as `cidr map FILE, line N: ...: skipping this rule` and skipped, with
Postfix's texts (vectors: shared/postfix/tests/util/dict_cidr.*, miss_endif_cidr.*).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError
from mailgate.maps.access import parse_ip
from mailgate.maps.base import MapOptions, Registry
from mailgate.maps.source import leading_negations, source_lines

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Rule:
    """A match rule (`result` set), an `if` (`result` None, `skip` = index after its endif),
    or an `endif` (network None)."""

    network: Network | None
    negate: bool
    result: str | None
    skip: int = 0


@dataclass
class CidrMap:
    spec: str
    rules: list[Rule] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fixed: bool = False
    fold_case: bool = False

    def lookup(self, key: str) -> str | None:
        text = key[1:-1] if key.startswith("[") and key.endswith("]") else key
        addr = parse_ip(text)
        if addr is None:
            return None
        i, rules = 0, self.rules
        while i < len(rules):
            rule = rules[i]
            if rule.network is None:  # endif
                i += 1
                continue
            # another address family never matches, negated or not
            hit = addr.version == rule.network.version and (addr in rule.network) != rule.negate
            if rule.result is None:  # if: enter the block, or skip past its endif
                i = i + 1 if hit else rule.skip
                continue
            if hit:
                return rule.result
            i += 1
        return None


class PatternError(Exception):
    """A bad address pattern, with Postfix's reason (a cidr rule is then skipped)."""


def parse_network(pattern: str) -> Network:
    """Parse `addr`, `addr/len`, `[addr]` or `[addr]/len` exactly as dict_cidr reports it."""
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
    if slash and not mask.isdigit():
        raise PatternError(f'bad mask value in "{pattern}"')
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        if slash:
            raise PatternError(f'bad network value in "{pattern}"') from None
        raise PatternError(f'bad address pattern: "{pattern}"') from None
    bits = ip.max_prefixlen
    length = int(mask) if slash else bits
    if length > bits:
        raise PatternError(f'bad mask length in "{pattern}"')
    network = ipaddress.ip_network(f"{ip}/{length}", strict=False)
    if network.network_address != ip:
        raise PatternError(f'non-null host address bits in "{pattern}", perhaps you should use '
                    f'"{network.network_address}/{length}" instead')
    return network


def parse_rules(lines: list[tuple[int, str]], where: str) -> tuple[list[Rule], list[str]]:
    """Rules and warnings from (line number, text) pairs; `where` is e.g. "cidr map F"."""
    rules: list[Rule] = []
    warnings: list[str] = []
    open_ifs: list[tuple[int, int]] = []  # (rule index, line number)
    for number, raw in lines:
        text = raw.strip()
        head = text[:5].lower()
        try:
            if head[:2] == "if" and (len(text) == 2 or not text[2].isalnum()):
                negate, pattern = leading_negations(text[2:])
                if not pattern:
                    raise PatternError("no address pattern")
                open_ifs.append((len(rules), number))
                rules.append(Rule(parse_network(pattern.split()[0]), negate, None))
            elif head == "endif" and (len(text) == 5 or not text[5].isalnum()):
                if not open_ifs:
                    raise PatternError("ENDIF without IF")
                index, _ = open_ifs.pop()
                rules.append(Rule(None, False, None))
                rules[index] = Rule(rules[index].network, rules[index].negate, None, len(rules))
            else:
                negate, rest = leading_negations(text)
                parts = rest.split(None, 1)
                if not parts:
                    raise PatternError("no address pattern")
                if len(parts) < 2:
                    raise PatternError("no lookup result")
                rules.append(Rule(parse_network(parts[0]), negate, parts[1].strip()))
        except PatternError as why:
            warnings.append(f"{where}, line {number}: {why}: skipping this rule")
    for index, number in reversed(open_ifs):
        warnings.append(f"{where}, line {number}: IF has no matching ENDIF")
        rules[index] = Rule(rules[index].network, rules[index].negate, None, len(rules))
    return rules, warnings


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
    lines = [(line.number, line.text) for line in source_lines(text)]
    rules, warnings = parse_rules(lines, f"cidr map {name}")
    return CidrMap(spec, rules, warnings)


def register(registry: Registry) -> None:
    registry.register("cidr", open_cidr)
