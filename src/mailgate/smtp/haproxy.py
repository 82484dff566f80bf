"""The PROXY protocol header (HAProxy v1 and v2) an upstream proxy sends first, parsed as Postfix does.

Postfix's smtpd (smtpd_upstream_proxy_protocol = haproxy) reads the header before its greeting,
from the input the first read returns, and accepts TCP4 and TCP6 (v1 and v2) and the v2
`LOCAL` command (the proxy's own connection: the socket's addresses stand). `UNKNOWN` is
refused: it would sidestep address-based access control. The error texts are Postfix's
(`warning: haproxy read: <reason>`). Bytes in, a ProxyHeader or a ProxyError out; no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

HEADER_MAX = 536  # Postfix's HAPROXY_HEADER_MAX_LEN: what one peek may return
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_HEADER = 16


class ProxyError(Exception):
    """A header Postfix refuses; the message is its reason text."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """`length` bytes of input were the header; `client`/`server` are (address, port) from
    it, None for a v2 LOCAL command."""

    length: int
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None


def parse(data: bytes, ipv4: bool = True, ipv6: bool = True) -> ProxyHeader:
    """The header at the start of `data` (what the first read returned). `ipv4`/`ipv6`:
    inet_protocols allows that family."""
    data = data[:HEADER_MAX]
    if data.startswith(b"PROXY "):
        return _v1(data, ipv4, ipv6)
    return _v2(data, ipv4, ipv6)


def _v1(data: bytes, ipv4: bool, ipv6: bool) -> ProxyHeader:
    end = data.find(b"\n")
    if end < 0:
        raise ProxyError("missing protocol header terminator")
    line = data[:end].decode("latin-1")
    tokens = [t for t in line.replace("\r", " ").split(" ") if t]
    tokens += [""] * (6 - len(tokens))
    if tokens[0] != "PROXY":
        raise ProxyError("bad or missing protocol header")
    proto = tokens[1].upper()
    if not ((proto == "TCP4" and ipv4) or (proto == "TCP6" and ipv6)):
        raise ProxyError("bad or missing protocol type")
    client = _address(tokens[2], proto)
    if client is None:
        raise ProxyError("bad or missing client address")
    server = _address(tokens[3], proto)
    if server is None:
        raise ProxyError("bad or missing server address")
    client_port, server_port = _port(tokens[4]), _port(tokens[5])
    if client_port is None:
        raise ProxyError("bad or missing client port")
    if server_port is None:
        raise ProxyError("bad or missing server port")
    return ProxyHeader(end + 1, (client, client_port), (server, server_port))


def _address(text: str, proto: str) -> str | None:
    """The printable address in canonical form (an IPv4-mapped IPv6 address as IPv4)."""
    try:
        if proto == "TCP4":
            return str(ipaddress.IPv4Address(text))
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else addr.compressed


def _port(text: str) -> int | None:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        return None
    return int(text)


def _v2(data: bytes, ipv4: bool, ipv6: bool) -> ProxyHeader:
    if len(data) < _V2_HEADER:
        raise ProxyError("short protocol header")
    if data[:12] != V2_SIGNATURE:
        raise ProxyError("unrecognized protocol header")
    if data[12] & 0xF0 != 0x20:
        raise ProxyError("unrecognized protocol version")
    size = int.from_bytes(data[14:16], "big")
    if len(data) < _V2_HEADER + size:
        raise ProxyError("short version 2 protocol header")
    command, family, body = data[12] & 0x0F, data[13], data[_V2_HEADER:_V2_HEADER + size]
    if command == 0x0:  # LOCAL: the proxy's own connection (a health check)
        return ProxyHeader(_V2_HEADER + size)
    if command != 0x1:
        raise ProxyError("bad command in proxy header")
    if family == 0x11:  # TCP over IPv4
        if not ipv4:
            raise ProxyError("Postfix IPv4 support is disabled")
        if size < 12:
            raise ProxyError("short address field")
        src, dst = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        ports = body[8:12]
    elif family == 0x21:  # TCP over IPv6
        if not ipv6:
            raise ProxyError("Postfix IPv6 support is disabled")
        if size < 36:
            raise ProxyError("short address field")
        six = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        src, dst = (a.ipv4_mapped or a for a in six)  # type: ignore[assignment]
        ports = body[32:36]
    else:
        raise ProxyError("unsupported network protocol")
    client = (_text(src), int.from_bytes(ports[0:2], "big"))
    server = (_text(dst), int.from_bytes(ports[2:4], "big"))
    return ProxyHeader(_V2_HEADER + size, client, server)


def _text(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return addr.compressed
