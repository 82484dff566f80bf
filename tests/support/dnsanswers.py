"""The test DNS server's fast path: Authority's answers to the common query, encoded as
dnspython encodes them (the same name compression), from tables built once (no dnspython per
query). tests/support/dnsserver.py falls back to Authority for anything else."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import dns.flags
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.zone

if TYPE_CHECKING:
    from .dnsserver import Authority

IN = dns.rdataclass.IN

SLOW = object()  # the query is not for the fast path: ask Authority (dnspython)
_TYPES = {dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.TXT}  # rdata without names
_NAMED = {dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.PTR}
_META = {0, 41, 249, 250, 251, 252}  # question types left to dnspython
_OPT_REPLY = b"\x00\x00\x29\x20\x00\x00\x00\x00\x00\x00\x00"  # payload 8192, no options
_HEAD = struct.Struct("!HHHHH")
_RRHEAD = struct.Struct("!HHIH")
Wire = tuple[bytes, bytes, tuple[int, ...]]  # a name: wire form, lower case, label offsets
Rdata = tuple["bytes | Wire", ...]
RRs = tuple[int, int, tuple[Rdata, ...]]  # type, TTL, the records' parts
Node = dict[int, "RRs | None"]  # rdatasets by type (None: a type the fast path cannot encode)
Section = list[tuple[Wire, RRs]]  # (owner, records)


def _wire(name: dns.name.Name) -> Wire:
    raw = name.to_wire()
    assert raw is not None
    offsets, pos = [], 0
    while raw[pos]:
        offsets.append(pos)
        pos += raw[pos] + 1
    return raw, raw.lower(), tuple(offsets)


def _rrs(rdataset: dns.rdataset.Rdataset) -> RRs | None:
    """The records as bytes and names to compress (as dnspython compresses NS, CNAME, PTR,
    MX and SOA names); None for other types."""
    parts: list[Rdata] = []
    for rd in rdataset:
        if rdataset.rdtype in _TYPES:
            parts.append((rd.to_wire(),))
        elif rdataset.rdtype in _NAMED:
            parts.append((_wire(rd.target),))
        elif rdataset.rdtype == dns.rdatatype.MX:
            parts.append((rd.preference.to_bytes(2, "big"), _wire(rd.exchange)))
        elif rdataset.rdtype == dns.rdatatype.SOA:
            parts.append((_wire(rd.mname), _wire(rd.rname), rd.to_wire()[-20:]))
        else:
            return None
    return rdataset.rdtype, rdataset.ttl, tuple(parts)


class _Zone:
    """A zone as tables: rdatasets by lower-case wire name, wildcards by their parent."""

    def __init__(self, zone: dns.zone.Zone, existing: set[dns.name.Name]) -> None:
        assert zone.origin is not None
        self.origin = _wire(zone.origin)
        self.nodes: dict[bytes, Node] = {}
        for name, node in zone.nodes.items():
            self.nodes[name.to_wire().lower()] = {  # type: ignore[union-attr]
                r.rdtype: _rrs(r) for r in node.rdatasets
                if r.rdclass == IN and r.covers == dns.rdatatype.NONE}
        self.wildcards = {k[2:]: v for k, v in self.nodes.items() if k[:2] == b"\x01*"}
        self.existing = {n.to_wire().lower() for n in existing}  # type: ignore[union-attr]
        soa = zone.get_rdataset("@", dns.rdatatype.SOA)
        rrs = _rrs(soa) if soa is not None else None
        self.soa = [(self.origin, rrs)] if rrs is not None else []

    def under(self, name: Wire) -> bool:
        origin = self.origin[1]
        return origin == b"\x00" or any(name[1][o:] == origin for o in name[2])

    def node(self, name: Wire) -> tuple[Node | None, bool] | None:
        """Authority._node: (node or covering wildcard, whether the name exists); None when
        dnspython would look above the root."""
        node = self.nodes.get(name[1])
        if node is not None:
            return node, True
        lower = name[1]
        if lower in self.existing:
            return None, True  # empty non-terminal
        if lower == self.origin[1]:
            return None
        for o in (*name[2][1:], len(lower) - 1):  # the closest wildcard up to the origin
            parent = lower[o:]
            wild = self.wildcards.get(parent)
            if wild is not None:
                return wild, True
            if parent == self.origin[1]:
                break
        return None, False

    def resolve(self, name: Wire, qtype: int) -> tuple[int, Section, Section] | None:
        """Authority._resolve: (rcode, answer, authority); None for the slow path."""
        answer: Section = []
        for depth in range(9):
            found = self.node(name)
            if found is None:
                return None
            node, exists = found
            if node is not None:
                if qtype in node:
                    rrs = node[qtype]
                    if rrs is None:
                        return None
                    answer.append((name, rrs))
                    return dns.rcode.NOERROR, answer, []
                cname = node.get(dns.rdatatype.CNAME)
                if cname is not None and depth < 8:
                    answer.append((name, cname))
                    name = cname[2][0][0]  # type: ignore[assignment]
                    if not self.under(name):
                        return dns.rcode.NOERROR, answer, []  # the target is in another zone
                    continue
            rcode = dns.rcode.NXDOMAIN if node is None and not exists else dns.rcode.NOERROR
            return rcode, answer, self.soa
        raise AssertionError("unreachable")


class Answers:
    """Authority's replies to the common query (opcode QUERY, one IN question, EDNS without
    options or none), byte for byte; SLOW for anything else."""

    def __init__(self, authority: Authority) -> None:
        existing = authority.existing
        self.zones = [_Zone(z, existing[z.origin]) for z in authority.zones]  # type: ignore[index]
        self.timeout = {n.to_wire().lower() for n in authority.timeout}  # type: ignore[union-attr]
        self.servfail = {n.to_wire().lower() for n in authority.servfail}  # type: ignore[union-attr]

    def reply(self, data: bytes, udp: bool) -> bytes | object | None:
        """The reply to the query `data` (None: never answered; SLOW: ask Authority)."""
        parsed = _parse(data, udp)
        if parsed is None:
            return SLOW
        qname, end, limit = parsed
        suffixes = {qname[1][o:] for o in qname[2]}
        suffixes.add(b"\x00")
        if not suffixes.isdisjoint(self.timeout):
            return None
        flags = 0x8000 | (data[2] & 1) << 8  # QR, and RD as asked
        answer: Section = []
        authority: Section = []
        if not suffixes.isdisjoint(self.servfail):
            flags |= dns.rcode.SERVFAIL
        else:
            zone = next((z for z in self.zones if z.origin[1] in suffixes), None)
            if zone is None:
                flags |= dns.rcode.REFUSED
            else:
                found = zone.resolve(qname, int.from_bytes(data[end:end + 2], "big"))
                if found is None:
                    return SLOW
                rcode, answer, authority = found
                flags |= dns.flags.AA | rcode
        return _encode(data, end + 4, qname, flags, (answer, authority), limit, udp)


def _parse(data: bytes, udp: bool) -> tuple[Wire, int, int] | None:
    """(question name, where its type starts, size limit for the records) of a query the fast
    path answers, else None."""
    size = len(data)
    if size < 17 or data[2] & 0xF8 or data[4:11] != b"\x00\x01\x00\x00\x00\x00\x00":
        return None  # a response, another opcode, not exactly one question
    offsets, pos = [], 12
    while True:
        if pos >= size or data[pos] > 63:
            return None  # truncated, compressed, or a bad label
        if not data[pos]:
            break
        offsets.append(pos - 12)
        pos += data[pos] + 1
    end = pos + 1
    if end - 12 > 255 or end + 4 > size or data[end + 2:end + 4] != b"\x00\x01" \
            or int.from_bytes(data[end:end + 2], "big") in _META:
        return None
    rest = data[end + 4:]
    if data[11] == 0 and not rest:
        limit = 512 if udp else 65535
    elif data[11] == 1 and len(rest) == 11 and rest[:3] == b"\x00\x00\x29" \
            and rest[9:] == b"\x00\x00":  # EDNS without options
        limit = (max(int.from_bytes(rest[3:5], "big"), 512) if udp else 65535) - len(_OPT_REPLY)
    else:
        return None
    raw = data[12:end]
    return (raw, raw.lower(), tuple(offsets)), end, limit


def _name(out: bytearray, name: Wire, compress: dict[bytes, int]) -> None:
    """Name.to_wire() with a compression table keyed by lower-case wire suffix."""
    raw, lower, offsets = name
    base = len(out)
    for o in offsets:
        pointer = compress.get(lower[o:])
        if pointer is not None:
            out += raw[:o]
            out += (0xC000 | pointer).to_bytes(2, "big")
            return
        if base + o <= 0x3FFF:
            compress[lower[o:]] = base + o
    out += raw


def _encode(query: bytes, qend: int, qname: Wire, flags: int, sections: tuple[Section, Section],
            limit: int, udp: bool) -> bytes | object:
    """Message.to_wire(): the question as asked, then the records; over `limit`, a UDP reply
    is the question alone with TC (TCP: SLOW, dnspython raises)."""
    out = bytearray(query[:qend])
    compress = {qname[1][o:]: 12 + o for o in qname[2]}
    counts = [0, 0]
    for index, section in enumerate(sections):
        for owner, (rdtype, ttl, rdatas) in section:
            for parts in rdatas:
                _name(out, owner, compress)
                start = len(out)
                out += _RRHEAD.pack(rdtype, IN, ttl, 0)
                for part in parts:
                    if isinstance(part, bytes):
                        out += part
                    else:
                        _name(out, part, compress)
                out[start + 8:start + 10] = (len(out) - start - 10).to_bytes(2, "big")
                counts[index] += 1
    if len(out) > limit:
        if not udp:
            return SLOW
        del out[qend:]
        flags |= dns.flags.TC
        counts = [0, 0]
    edns = query[11] == 1
    if edns:
        out += _OPT_REPLY
    out[2:12] = _HEAD.pack(flags, 1, counts[0], counts[1], edns)
    return bytes(out)
