"""What a client outside mynetworks can get from one table or network list: the best answer
(for it) that it can choose its inputs to reach."""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import MappingProxyType

from mailgate.config.maincf import split_list
from mailgate.errors import MapConfigError, MapError
from mailgate.lint.findings import Where
from mailgate.lint.lists import Subject
from mailgate.lint.tables import Tables
from mailgate.maps.base import Map
from mailgate.maps.cidr import CidrMap, PatternError, parse_network
from mailgate.maps.compiled import CompiledMap
from mailgate.maps.regexp import RegexpMap
from mailgate.maps.simple import DictMap, StaticMap

# A network at least this large (prefix length at most this) counts as "the world": no site
# owns it, so anyone may send from inside it (docs/decisions/0060-lint.md).
WORLD_PREFIX = MappingProxyType({4: 8, 6: 16})
_FAMILY = MappingProxyType({4: int(socket.AF_INET), 6: int(socket.AF_INET6)})  # as cidr stores
_IF, _ENDIF, _MATCH = 0, 1, 2  # cidr.Rule.op values (maps/cidr.py)
# Inputs a client chooses: HELO names, senders (the null sender is looked up as `<>`),
# recipients elsewhere, and addresses of its own, spread over distinct /8s so that only a
# world-sized pattern matches them all.
INPUTS = MappingProxyType({
    "helo": ("localhost", "mail.example.com", "[192.0.2.1]", "192.0.2.1", "x"),
    "sender": ("<>", "user@example.com", "postmaster@example.org"),
    "recipient": ("someone@example.net", "user@mail.example.org"),
})
ADDRESSES = MappingProxyType({
    4: ("192.0.2.45", "198.51.100.45", "203.0.113.45", "45.33.32.156"),
    6: ("2001:db8::45", "2a00:1450:4001::45", "2600:1f18::45"),
})


class Verdict(enum.Enum):
    """The best outcome a restriction lets such a client reach: PERMIT ends the list for
    it, DUNNO lets the list go on, BLOCK refuses it whatever it sends."""

    PERMIT = "permit"
    DUNNO = "dunno"
    BLOCK = "block"


_PERMIT_WORDS = frozenset({"OK", "RELAY"})
_BLOCK_WORDS = frozenset({"REJECT", "DEFER", "DEFER_IF_PERMIT", "DISCARD", "HANGUP"})
_DUNNO_WORDS = frozenset({"DUNNO", "WARN", "INFO", "FILTER", "HOLD", "REDIRECT", "BCC",
                          "PREPEND", "DEFER_IF_REJECT"})


def classify(value: str) -> Verdict | tuple[str, ...]:
    """An access(5) value: OK/RELAY/all digits permit; REJECT, DEFER, DEFER_IF_PERMIT,
    DISCARD (nothing is relayed), `4NN text`/`5NN text` block; other actions go on;
    anything else is a restriction list, returned as its names."""
    text = value.strip()
    word = text.split(None, 1)[0].upper() if text else ""
    if not word or word in _PERMIT_WORDS or text.isdigit():
        return Verdict.PERMIT
    if word in _BLOCK_WORDS or (re.fullmatch("[45][0-9][0-9]", word) and " " in text):
        return Verdict.BLOCK
    if word in _DUNNO_WORDS:
        return Verdict.DUNNO
    if ":" in text:  # a table in an access value: 451 4.3.5 for everything
        return Verdict.BLOCK
    return tuple(split_list(text))


@dataclass(frozen=True, slots=True)
class World:
    """A mynetworks pattern that holds the world's addresses of one family."""

    pattern: str
    where: Where
    what: str  # "0.0.0.0/0, every IPv4 address", ...


def world_networks(subject: Subject, tables: Tables) -> dict[int, World]:
    """By IP version, the first mynetworks pattern anyone may send from: a large public
    network, a negated one, a one-label domain, `static:`, a cidr: table line of that kind.
    mynetworks_style (mynetworks not set) never gives the world: it is the host's networks."""
    cfg = subject.cfg
    if not cfg.is_set("mynetworks"):
        return {}
    where = subject.where("mynetworks")
    found: dict[int, World] = {}
    for pattern in _expand_files(cfg.get_list("mynetworks")):
        if pattern.startswith("!"):
            continue
        for version, what in _world(pattern, tables).items():
            found.setdefault(version, World(pattern, where, what))
    return found


def _expand_files(patterns: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for pattern in patterns:
        if pattern.lstrip("!").startswith("/"):
            try:
                with open(pattern.lstrip("!"), encoding="utf-8") as f:
                    out += split_list(" ".join(line for line in f.read().splitlines()
                                               if not line.lstrip().startswith("#")))
            except OSError:
                continue
        else:
            out.append(pattern)
    return out


def _world(pattern: str, tables: Tables) -> dict[int, str]:
    """By IP version, what a mynetworks pattern that anyone matches holds (none: {})."""
    if ":" in pattern and not pattern.startswith("["):
        table = tables.open(pattern)
        inner = getattr(table, "table", table)
        if isinstance(inner, StaticMap):
            return dict.fromkeys((4, 6), f"{pattern}, which matches every client")
        if isinstance(inner, CidrMap):
            lines = {v: _cidr_world(inner, v, lambda r: True) for v in (4, 6)}
            return {v: f"{pattern}, whose line `{line}` every IPv{v} client matches"
                    for v, line in lines.items() if line}
        return {}
    try:
        net = parse_network(pattern)
    except PatternError:
        label = pattern.lstrip(".")
        if label.isalpha() and label.lower() != "localhost":
            return dict.fromkeys((4, 6), f"{pattern}, which matches every client whose "
                                 f"name ends in .{label}")
        return {}
    if not is_world(net):
        return {}
    count = "every IPv{} address" if net.prefixlen == 0 else \
        f"{net.num_addresses:,} public IPv{{}} addresses"
    return {net.version: f"{pattern}, {count.format(net.version)}"}


def is_world(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """A network no site owns: at least a /8 (IPv4) or /16 (IPv6) of public addresses."""
    return net.prefixlen <= WORLD_PREFIX[net.version] and net.is_global and not net.is_multicast


def _cidr_world(table: CidrMap, version: int, wanted: Callable[[str], bool]) -> str:
    """The first top-level rule of `table` that anyone in `version` space matches (a world
    network, or a negated one) and whose result `wanted` accepts, as `NET -> RESULT`; ""
    when a rule as large that gives another result comes first, or there is none."""
    depth = 0
    for rule in table.rules:
        if rule.op == _IF:
            depth += 1
            continue
        if rule.op == _ENDIF:
            depth -= 1
            continue
        if depth or rule.family != _FAMILY[version]:
            continue
        length = bin(rule.mask).count("1")
        net = ipaddress.IPv4Network((rule.net, length)) if version == 4 else \
            ipaddress.IPv6Network((rule.net, length))
        if rule.negate or is_world(net) or length == 0:
            if wanted(rule.result):
                return f"{'!' * rule.negate}{net} {rule.result}"
            if length == 0 or rule.negate:
                return ""
    return ""


# --- what a client gets from one access table -------------------------------------------------

@dataclass(frozen=True, slots=True)
class Answer:
    """What a table answers the client at best: a verdict (or a restriction list to walk),
    and the entry that gives it (for the report)."""

    result: Verdict | tuple[str, ...]
    entry: str = ""


_SUBJECTS = MappingProxyType({
    "check_client_access": "client", "check_reverse_client_hostname_access": "client",
    "check_helo_access": "helo", "check_sender_access": "sender",
    "check_recipient_access": "recipient"})


def table_answer(name: str, spec: str, tables: Tables, version: int,
                 known: frozenset[str], helo_required: bool) -> Answer:
    """The best answer `name spec` (a check_*_access) gives a client outside mynetworks that
    relays: it picks its HELO name and sender, has no verified name or one of its own, and
    sends from an address of `version` outside listed networks."""
    what = _SUBJECTS.get(name)
    if what is None or (what != "client" and what not in known):
        return Answer(Verdict.DUNNO)
    table = tables.open(spec)
    if isinstance(table, MapConfigError):  # it does not open: every lookup answers 451
        return Answer(Verdict.BLOCK, "the table does not open")
    inner = getattr(table, "table", table)
    if isinstance(inner, StaticMap):
        answer = Answer(classify(inner.value), f"every key -> {inner.value}")
    elif isinstance(inner, CidrMap) and what in ("client", "helo"):
        if what == "client":
            line = _cidr_world(inner, version, lambda r: classify(r) is Verdict.PERMIT)
        else:  # a HELO name may be any address
            line = next((f"{r.result} for a HELO address" for r in inner.rules
                         if r.op == _MATCH and classify(r.result) is Verdict.PERMIT), "")
        answer = Answer(Verdict.PERMIT if line else Verdict.DUNNO, line)
    elif isinstance(inner, RegexpMap) and what == "client":
        answer = _probe(table, ("unknown",), every=False)  # no reverse DNS: name `unknown`
        if answer.result is not Verdict.PERMIT:
            answer = _probe(table, ADDRESSES[version], every=True)
    elif isinstance(inner, RegexpMap):
        answer = _probe(table, INPUTS[what], every=what == "recipient")
    elif isinstance(inner, DictMap | CompiledMap):
        entries = inner.entries.items() if isinstance(inner, DictMap) else inner.items()
        answer = _entries(entries, what, version)
    else:
        answer = Answer(Verdict.DUNNO)
    if what == "helo" and not helo_required and answer.result is Verdict.BLOCK:
        return Answer(Verdict.DUNNO)  # the client sends no HELO
    return answer


def _probe(table: Map, probes: tuple[str, ...], every: bool) -> Answer:
    """Look the client's possible inputs up: with `every`, only an answer all of them get
    counts (a pattern that matches everyone); else the best answer one of them gets."""
    answers = []
    for probe in probes:
        try:
            value = table.lookup(probe)
        except MapError:
            return Answer(Verdict.BLOCK, "a lookup fails")
        answers.append((classify(value) if value is not None else Verdict.DUNNO, probe, value))
    if every:
        first = answers[0][0]
        same = all(a[0] == first for a in answers)
        return Answer(first, f"every key -> {answers[0][2]}") if same else Answer(Verdict.DUNNO)
    for verdict, probe, value in answers:
        if verdict is Verdict.PERMIT or isinstance(verdict, tuple):
            return Answer(verdict, f"{probe} -> {value}")
    return Answer(Verdict.DUNNO)


def _entries(entries: Iterable[tuple[str, str]], what: str, version: int) -> Answer:
    """A fixed-key table: the first permitting entry whose key the client can present."""
    for key, value in entries:
        if _reachable_key(key, what, version):
            result = classify(value)
            if result is Verdict.PERMIT or isinstance(result, tuple):
                return Answer(result, f"{key} -> {value}")
    return Answer(Verdict.DUNNO)


def _reachable_key(key: str, what: str, version: int) -> bool:
    """A key the client can make the server look up: any HELO name or sender (forged at
    will), a recipient key for every domain (`user@`), the client name `unknown` (no
    reverse DNS) or an IPv4 one-octet prefix of the public world. A recipient domain key
    is taken to be a domain the site relays for on purpose."""
    if what in ("helo", "sender"):
        return True
    if what == "recipient":
        return key.endswith("@")
    if key == "unknown":
        return True
    if version == 4 and key.isdigit() and int(key) < 224:
        return is_world(ipaddress.IPv4Network(f"{key}.0.0.0/8"))
    return False
