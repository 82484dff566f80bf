"""The PROXY header parser (smtp/haproxy.py): what Postfix accepts, and its reasons to refuse."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from mailgate.smtp.haproxy import V2_SIGNATURE, ProxyError, ProxyHeader, parse


def v2(command: int, family: int, src: str = "", dst: str = "", ports: tuple[int, int] = (0, 0),
       tlv: bytes = b"") -> bytes:
    body = b""
    if src:
        body = (ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
                + struct.pack("!HH", *ports))
    body += tlv
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


@pytest.mark.parametrize(("data", "header"), [
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 5000 25\r\nEHLO x\r\n",
     ProxyHeader(43, ("192.0.2.1", 5000), ("198.51.100.2", 25))),
    (b"PROXY tcp6 2001:DB8:0:0::1 ::1 5000 25\r\n",
     ProxyHeader(40, ("2001:db8::1", 5000), ("::1", 25))),
    (b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\n", ProxyHeader(36, ("192.0.2.1", 1), ("::1", 2))),
    (v2(1, 0x11, "192.0.2.1", "198.51.100.2", (5000, 25)) + b"EHLO",
     ProxyHeader(28, ("192.0.2.1", 5000), ("198.51.100.2", 25))),
    (v2(1, 0x21, "::ffff:192.0.2.1", "2001:db8::2", (5000, 587), tlv=b"\x04\x00\x01x"),
     ProxyHeader(56, ("192.0.2.1", 5000), ("2001:db8::2", 587))),
    (v2(0, 0x00, tlv=b"\x04\x00\x00"), ProxyHeader(19)),
])
def test_accepted(data: bytes, header: ProxyHeader) -> None:
    assert parse(data) == header


@pytest.mark.parametrize(("data", "reason"), [
    (b"PROXY UNKNOWN\r\n", "bad or missing protocol type"),
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 5000", "missing protocol header terminator"),
    (b"PROXY TCP4 192.0.2.001 198.51.100.2 5000 25\n", "bad or missing client address"),
    (b"PROXY TCP4 192.0.2.1 ::1 5000 25\n", "bad or missing server address"),
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\n", "bad or missing client port"),
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 1\n", "bad or missing server port"),
    (b"EHLO x\r\n", "short protocol header"),
    (b"EHLO client.example\r\n", "unrecognized protocol header"),
    (V2_SIGNATURE + b"\x11\x11\x00\x00", "unrecognized protocol version"),
    (V2_SIGNATURE + b"\x21\x11\x00\x0c", "short version 2 protocol header"),
    (v2(2, 0x11, "192.0.2.1", "192.0.2.2"), "bad command in proxy header"),
    (v2(1, 0x12, "192.0.2.1", "192.0.2.2"), "unsupported network protocol"),
    (V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4, "short address field"),
])
def test_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyError, match=f"^{reason}$"):
        parse(data)


def test_families_follow_inet_protocols() -> None:
    with pytest.raises(ProxyError, match="bad or missing protocol type"):
        parse(b"PROXY TCP6 ::2 ::1 1 2\n", ipv6=False)
    with pytest.raises(ProxyError, match="Postfix IPv6 support is disabled"):
        parse(v2(1, 0x21, "::2", "::1"), ipv6=False)
