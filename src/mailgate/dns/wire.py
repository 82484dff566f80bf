"""The DNS wire format for the hot path: a query in one bytes join, a reply decoded only as
far as smtpd needs (A, AAAA, MX, NS, PTR, CNAME, TXT records; the SOA for negative TTLs).
dnspython builds and parses ten times slower; tests check this codec against it."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}
NAMES = {v: k for k, v in TYPES.items()}
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
TC = 0x0200

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
# EDNS0 OPT record: root name, type 41, UDP payload 1232, no extended flags
_OPT = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"


class WireError(ValueError):
    pass


def encode_name(name: str) -> bytes:
    """`example.com` → length-prefixed labels; WireError for names DNS cannot carry."""
    name = name.rstrip(".")
    if not name:
        return b"\x00"
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError as exc:
        raise WireError(f"non-ASCII name: {name!r}") from exc
    out = bytearray()
    for label in raw.split(b"."):
        if not label or len(label) > 63:
            raise WireError(f"bad label in {name!r}")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > 255:
        raise WireError(f"name too long: {name!r}")
    return bytes(out)


def question(name: str, rdtype: str) -> bytes:
    return encode_name(name) + struct.pack("!HH", TYPES[rdtype], 1)


def query(qid: int, q: bytes) -> bytes:
    """A recursive query with EDNS0 (payload 1232) for the encoded question `q`."""
    return _HEADER.pack(qid, 0x0100, 1, 0, 0, 1) + q + _OPT


@dataclass(frozen=True, slots=True)
class RR:
    name: str
    type: int
    ttl: int
    data: str
    pref: int = 0
    minimum: int = 0  # SOA only


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    flags: int
    rcode: int
    question: bytes
    answer: tuple[RR, ...]
    authority: tuple[RR, ...]


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """Decode a possibly compressed name at `pos`; returns (name, position after it)."""
    labels: list[str] = []
    after = _walk(data, pos, labels)
    return ".".join(labels), after


def _end(data: bytes, pos: int) -> int:
    """Where the name at `pos` ends, without decoding it (the WireErrors of _name)."""
    return _walk(data, pos, None)


def _walk(data: bytes, pos: int, labels: list[str] | None) -> int:
    """Follow the name at `pos` (its labels into `labels` unless None); the position after
    it. Raises WireError for a truncated name, a bad label length or a pointer loop."""
    end = -1
    jumps = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated name")
        length = data[pos]
        if length >= 0xC0:
            if pos + 1 >= len(data) or jumps > 32:
                raise WireError("bad compression pointer")
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            jumps += 1
            continue
        if length > 63:
            raise WireError("bad label length")
        pos += 1
        if length == 0:
            break
        if labels is not None:
            labels.append(data[pos:pos + length].decode("ascii", "replace"))
        pos += length
    return end if end >= 0 else pos


def _owner(data: bytes, pos: int, seen: dict[int, str]) -> tuple[str, int]:
    """_name for a record's owner: a pointer (mostly to the question) is decoded once."""
    if pos + 1 < len(data) and data[pos] >= 0xC0:
        target = ((data[pos] & 0x3F) << 8) | data[pos + 1]
        name = seen.get(target)
        if name is None:
            name = seen[target] = _name(data, pos)[0]
        return name, pos + 2
    return _name(data, pos)


def _rdata(data: bytes, rtype: int, start: int, length: int) -> tuple[str, int, int]:
    """(text, preference, SOA minimum) of one record's data."""
    end = start + length
    if rtype == 1 and length == 4:
        return socket.inet_ntop(socket.AF_INET, data[start:end]), 0, 0
    if rtype == 28 and length == 16:
        return socket.inet_ntop(socket.AF_INET6, data[start:end]), 0, 0
    if rtype == 15 and length >= 3:
        return _name(data, start + 2)[0], int.from_bytes(data[start:start + 2], "big"), 0
    if rtype in (2, 5, 12):
        return _name(data, start)[0], 0, 0
    if rtype == 16:
        return txt_text(data[start:end]), 0, 0
    if rtype == 6:
        pos = _end(data, _end(data, start))  # MNAME and RNAME: not needed
        if pos + 20 > len(data):
            raise WireError("truncated SOA")
        return "", 0, int.from_bytes(data[pos + 16:pos + 20], "big")
    return data[start:end].hex(), 0, 0


_PRINTABLE = bytes(c if 0x20 <= c < 0x7F else 0x20 for c in range(256))


def txt_text(rdata: bytes) -> str:
    """A TXT record as Postfix's dns_get_rr() keeps it: its first character-string only, each
    byte that is not printable ASCII (tabs and UTF-8 included) a space."""
    if not rdata:
        return ""
    return rdata[1:1 + rdata[0]].translate(_PRINTABLE).decode("ascii")


def _records(data: bytes, pos: int, count: int, seen: dict[int, str]
             ) -> tuple[tuple[RR, ...], int]:
    out = []
    for _ in range(count):
        name, pos = _owner(data, pos, seen)
        if pos + 10 > len(data):
            raise WireError("truncated record")
        rtype, _, ttl, length = _RR.unpack_from(data, pos)
        pos += 10
        if pos + length > len(data):
            raise WireError("truncated record data")
        text, pref, minimum = _rdata(data, rtype, pos, length)
        out.append(RR(name, rtype, ttl, text, pref, minimum))
        pos += length
    return tuple(out), pos


def parse(data: bytes) -> Reply:
    """Decode a reply (WireError when malformed)."""
    if len(data) < 12:
        raise WireError("short reply")
    qid, flags, qdcount, ancount, nscount, _ = _HEADER.unpack_from(data, 0)
    pos = 12
    for _ in range(qdcount):
        pos = _end(data, pos) + 4
    q = data[12:pos]
    if flags & TC:
        return Reply(qid, flags, flags & 0xF, q, (), ())
    seen: dict[int, str] = {}
    answer, pos = _records(data, pos, ancount, seen)
    authority, pos = _records(data, pos, nscount, seen)
    return Reply(qid, flags, flags & 0xF, q, answer, authority)
