"""DNS list helpers: reply-address patterns (Postfix's ip_match `127.0.0.[2..11]`), list site
specs (`domain=filter*weight`, postscreen's syntax), query names, what is a list error, the
TXT text of a listing, and smtpd's cache of list lookups."""

from __future__ import annotations

import functools
import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailgate.smtp.hostnames import address_value

_DIGITS = re.compile(r"\d+")


class PatternError(ValueError):
    pass


def _token(text: str, pos: int) -> str:
    m = _DIGITS.match(text, pos)
    return m.group() if m else text[pos:pos + 1]


def _error(text: str, pos: int, what: str) -> PatternError:
    token = _token(text, pos)
    return PatternError(f'{what} at "{text[:pos]}>{token}<{text[pos + len(token):]}"')


@dataclass(frozen=True, slots=True)
class IpPattern:
    """Four octets, each a tuple of (low, high) ranges."""

    text: str
    octets: tuple[tuple[tuple[int, int], ...], ...]

    def match(self, addr: str) -> bool:
        parts = addr.split(".")
        if len(parts) != 4:
            return False
        for part, ranges in zip(parts, self.octets, strict=True):
            if not part.isdigit():
                return False
            value = int(part)
            if not any(lo <= value <= hi for lo, hi in ranges):
                return False
        return True


def _number(text: str, pos: int, what: str) -> tuple[int, int]:
    m = _DIGITS.match(text, pos)
    if m is None or int(m.group()) > 255:
        raise _error(text, pos, what)
    return int(m.group()), m.end()


def parse_ip_pattern(pattern: str) -> IpPattern:
    """ip_match_parse(): `1.2.[3..11;20].4`; raises PatternError with Postfix's text."""
    text = pattern
    if text.startswith("[") and text.endswith("]") and text.count("[") > 1:
        text = text[1:-1]
    elif text.startswith("[["):
        raise PatternError('missing "]" character')
    octets: list[tuple[tuple[int, int], ...]] = []
    pos = 0
    for index in range(4):
        if index:
            if pos >= len(text) or text[pos] != ".":
                raise _error(text, pos, 'need "."')
            pos += 1
        if pos < len(text) and text[pos] == "[":
            pos += 1
            ranges = []
            while True:
                lo, pos = _number(text, pos, "need decimal number 0..255")
                hi = lo
                if text.startswith(".", pos):
                    if not text.startswith("..", pos):
                        raise _error(text, pos + 1, "numeric range error")
                    m = _DIGITS.match(text, pos + 2)
                    if m is None or int(m.group()) > 255 or int(m.group()) < lo:
                        raise _error(text, pos + 2, "numeric range error")
                    hi, pos = int(m.group()), m.end()
                ranges.append((lo, hi))
                if text.startswith(";", pos):
                    pos += 1
                    continue
                if text.startswith("]", pos):
                    pos += 1
                    break
                raise _error(text, pos, 'need ";" or "]"')
            octets.append(tuple(ranges))
        else:
            value, pos = _number(text, pos, 'need decimal number 0..255 or "["')
            octets.append(((value, value),))
    if pos < len(text):
        raise PatternError(f'garbage after pattern at "{text[:pos]}>{text[pos:]}<"')
    return IpPattern(text, tuple(octets))


@dataclass(frozen=True, slots=True)
class Site:
    """One list: `domain`, an optional reply filter, and a weight (scoring only)."""

    spec: str  # as written, without the weight (the rbl_reply_maps key)
    domain: str
    pattern: IpPattern | None
    weight: int = 1


@functools.lru_cache(maxsize=1024)  # restrictions name their lists at every evaluation
def parse_site(spec: str, weighted: bool = False) -> Site:
    """`zen.spamhaus.org=127.0.0.[2..11]*3` (weights only when `weighted`)."""
    weight = 1
    text = spec
    if weighted and "*" in spec:
        text, _, number = spec.rpartition("*")
        try:
            weight = int(number)
        except ValueError as exc:
            raise PatternError(f"bad weight in {spec!r}") from exc
    domain, eq, codes = text.partition("=")
    pattern = parse_ip_pattern(codes) if eq else None
    return Site(text, domain, pattern, weight)


def reverse_query(addr: str) -> str | None:
    """`4.3.2.1` for 1.2.3.4, reversed nibbles for IPv6; None for anything else."""
    value = address_value(addr)
    if value is None:
        return None
    if value[0] == 4:
        return ".".join(reversed(addr.split(".")))
    return ".".join(reversed(f"{value[1]:032x}"))  # the nibbles of the exploded form


_REFUSED = ipaddress.ip_network("127.255.255.0/24")
_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def list_error(addr: str) -> str:
    """Why a list answer is not a listing ("" when it may be one): Spamhaus-style error
    codes (127.255.255.0/24: query refused, public or open resolver) and answers outside
    127.0.0.0/8 (a lapsed list domain answering with a web server's address)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return "not an IPv4 address"
    if ip in _REFUSED:
        return "error code (query refused or resolver blocked)"
    if ip not in _LOOPBACK:
        return "answer outside 127.0.0.0/8"
    return ""


TXT_LIMIT = 500  # smtpd_check.c RBL_TXT_LIMIT


def txt_reason(texts: Iterable[str]) -> str:
    """rbl_pagein(): the TXT records' texts joined with " / ", cut at TXT_LIMIT characters
    (a separator only while more than three characters are left)."""
    out = ""
    items = list(texts)
    for index, text in enumerate(items):
        if len(out) >= TXT_LIMIT:
            break
        out += text[:TXT_LIMIT - len(out)]
        if index + 1 < len(items) and TXT_LIMIT - len(out) > 3:
            out += " / "
    return out


@dataclass(frozen=True, slots=True)
class Paged:
    """What rbl_pagein() keeps of a name the list knows: its A answers (the reply filter
    applied) and its TXT text (None without TXT records)."""

    addrs: tuple[str, ...]
    txt: str | None


SOFT = "soft"  # the lookup failed (not NXDOMAIN/NODATA): no listing, and no warning again
RblEntry = Paged | str | None  # Paged, SOFT, or None when the name is not listed


class RblCache:
    """smtpd's smtpd_rbl_cache (a ctable of 100 query names, the least recently used out
    first): an smtpd process asks the DNS, and logs the lookup's warnings, once per name.
    Entries are kept at most `max_age` seconds (an smtpd process is gone after max_idle)."""

    def __init__(self, size: int = 100, max_age: float = 100.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size, self.max_age, self.clock = size, max_age, clock
        self._entries: OrderedDict[str, tuple[float, RblEntry]] = OrderedDict()
        # (query, entry) of each hit: the transaction journal's record (None: nobody asks)
        self.hit: Callable[[str, RblEntry], None] | None = None

    def get(self, query: str) -> tuple[bool, RblEntry]:
        """(found, entry)."""
        hit = self._entries.get(query)
        if hit is None:
            return False, None
        if hit[0] <= self.clock():
            del self._entries[query]
            return False, None
        self._entries.move_to_end(query)
        if self.hit is not None:
            self.hit(query, hit[1])
        return True, hit[1]

    def put(self, query: str, entry: RblEntry) -> None:
        self._entries[query] = (self.clock() + self.max_age, entry)
        self._entries.move_to_end(query)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
