"""The test DNS server's fast path (support/dnsanswers.py) replies byte for byte as its
dnspython path does: every name of the test zones, nearby names, case and flag variants."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import dns.name
import dns.zone
import pytest

from support.dns import SERVFAIL, TIMEOUT, ZONES
from support.dnsanswers import SLOW, Answers
from support.dnsserver import Authority, _slow, load_zones

TYPES = (1, 2, 5, 6, 12, 15, 16, 28, 33, 255)
SHAPES = (  # (flags, EDNS payload or None)
    (0x0100, None), (0x0000, None), (0x0110, 1232), (0x0100, 512), (0x0100, 100), (0x0130, 4096),
)


def _encode(name: str) -> bytes:
    labels = name.rstrip(".").encode().split(b".") if name.strip(".") else []
    return b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"


def _names(zones: list[dns.zone.Zone]) -> list[str]:
    """Each node, its parents, a child, a name under it, wildcard matches, special names."""
    out = {".", *TIMEOUT, *SERVFAIL, *(f"x.{n}" for n in TIMEOUT + SERVFAIL)}
    for zone in zones:
        for name in zone.nodes:
            text = name.to_text()
            out |= {text, f"nx.{text}", f"a.b.{text}", text.replace("*", "q.r")}
            while len(name) > 1:
                name = name.parent()
                out.add(name.to_text())
    return sorted(out)


@pytest.mark.parametrize("zones_dir", [ZONES, ZONES / "random"], ids=["root", "random"])
def test_fast_path_replies_as_dnspython(zones_dir: Path) -> None:
    zones = load_zones(zones_dir)
    authority = Authority(zones, {dns.name.from_text(z) for z in TIMEOUT},
                          {dns.name.from_text(z) for z in SERVFAIL})
    fast = Answers(authority)
    rng = random.Random(18)
    answered = 0
    for name in _names(zones):
        cased = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
        for rdtype in TYPES:
            flags, payload = rng.choice(SHAPES)
            query = struct.pack("!HHHHHH", rng.randrange(65536), flags, 1, 0, 0,
                                payload is not None) + _encode(cased) + struct.pack("!HH", rdtype, 1)
            if payload is not None:
                query += b"\x00\x00\x29" + struct.pack("!HIH", payload, 0, 0)
            for udp in (True, False):
                got = fast.reply(query, udp)
                if got is not SLOW:
                    assert got == _slow(authority, query, udp), (cased, rdtype, flags, payload)
                    answered += got is not None
    assert answered > 1000


def test_fast_path_leaves_unusual_queries_to_dnspython() -> None:
    fast = Answers(Authority(load_zones(ZONES), set(), set()))
    plain = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + _encode("localhost") + b"\x00\x01"
    assert fast.reply(plain + b"\x00\x01", True) not in (SLOW, None)
    for odd in (plain + b"\x00\x03",  # class CH
                plain + b"\x00\x01" + b"junk",  # trailing bytes
                b"\x00\x07\x81\x00" + plain[4:] + b"\x00\x01",  # a response
                plain[:12] + b"\x09localhost\xc0\x0c" + b"\x00\x01\x00\x01"):  # a pointer
        assert fast.reply(odd, True) is SLOW
