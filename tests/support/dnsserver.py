"""An authoritative DNS server for the tests (dnspython zones, asyncio, UDP and TCP on loopback).

    python -m tests.support.dnsserver --zones DIR [--address A] [--port N] [--delay S]
        [--timeout ZONE ...] [--servfail ZONE ...]

Serves every `*.zone` master file in DIR (each with its `$ORIGIN`): answers, CNAMEs within
a zone, wildcards, NODATA and NXDOMAIN with the SOA. Queries under a `--timeout` zone are
never answered, under a `--servfail` zone answered SERVFAIL; names in no zone are REFUSED.
`--delay` holds every answer that long after its query came (benchmarks). Prints
`ready PORT` when it serves. The common query is answered by support/dnsanswers.py (tables
built once, the same bytes as dnspython's), anything else by Authority through dnspython.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from collections import deque
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from .dnsanswers import SLOW, Answers

IN = dns.rdataclass.IN


class Authority:
    def __init__(self, zones: list[dns.zone.Zone], timeout: set[dns.name.Name],
                 servfail: set[dns.name.Name]) -> None:
        self.zones = sorted(zones, key=lambda z: len(z.origin), reverse=True)  # type: ignore[arg-type]
        self.existing: dict[dns.name.Name, set[dns.name.Name]] = {}
        for zone in zones:
            origin = zone.origin
            assert origin is not None
            names = self.existing.setdefault(origin, set())
            for rel in zone.nodes:
                name = rel.derelativize(origin)
                while name.is_subdomain(origin) and name not in names:
                    names.add(name)
                    if name == origin:
                        break
                    name = name.parent()
        self.timeout = timeout
        self.servfail = servfail

    def _special(self, qname: dns.name.Name, names: set[dns.name.Name]) -> bool:
        return any(qname.is_subdomain(n) for n in names)

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        reply = dns.message.make_response(query)
        if not query.question:
            reply.set_rcode(dns.rcode.FORMERR)
            return reply
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        if self._special(qname, self.timeout):
            return None
        if self._special(qname, self.servfail):
            reply.set_rcode(dns.rcode.SERVFAIL)
            return reply
        zone = next((z for z in self.zones if qname.is_subdomain(z.origin)), None)  # type: ignore[arg-type]
        if zone is None:
            reply.set_rcode(dns.rcode.REFUSED)
            return reply
        reply.flags |= dns.flags.AA
        self._resolve(zone, qname, qtype, reply, 0)
        return reply

    def _node(self, zone: dns.zone.Zone, qname: dns.name.Name) -> tuple[object | None, bool]:
        """(node for qname or the wildcard that covers it, whether the name exists at all)."""
        node = zone.get_node(qname)
        if node is not None:
            return node, True
        origin = zone.origin
        assert origin is not None
        if qname in self.existing[origin]:
            return None, True  # empty non-terminal
        parent = qname.parent()
        while parent.is_subdomain(origin):
            wild = zone.get_node(dns.name.Name((b"*", *parent.labels)))
            if wild is not None:
                return wild, True
            if parent == origin:
                break
            parent = parent.parent()
        return None, False

    def _resolve(self, zone: dns.zone.Zone, qname: dns.name.Name, qtype: int,
                 reply: dns.message.Message, depth: int) -> None:
        node, exists = self._node(zone, qname)
        if node is None:
            if not exists:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            self._soa(zone, reply)
            return
        found = node.get_rdataset(IN, qtype)  # type: ignore[attr-defined]
        if found is not None:
            rrset = dns.rrset.RRset(qname, IN, qtype)
            rrset.update(found)
            reply.answer.append(rrset)
            return
        cname = node.get_rdataset(IN, dns.rdatatype.CNAME)  # type: ignore[attr-defined]
        if cname is not None and depth < 8:
            rrset = dns.rrset.RRset(qname, IN, dns.rdatatype.CNAME)
            rrset.update(cname)
            reply.answer.append(rrset)
            target = cname[0].target
            if target.is_subdomain(zone.origin):
                self._resolve(zone, target, qtype, reply, depth + 1)
            return
        self._soa(zone, reply)

    def _soa(self, zone: dns.zone.Zone, reply: dns.message.Message) -> None:
        soa = zone.get_rdataset("@", dns.rdatatype.SOA)
        if soa is not None:
            rrset = dns.rrset.RRset(zone.origin, IN, dns.rdatatype.SOA)
            rrset.update(soa)
            reply.authority.append(rrset)


def _slow(authority: Authority, data: bytes, udp: bool) -> bytes | None:
    """Authority's reply with dnspython, as a UDP or TCP message (None: no reply)."""
    if udp:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return None
    else:
        query = dns.message.from_wire(data)
    reply = authority.answer(query)
    if reply is None:
        return None
    if not udp:
        return reply.to_wire(max_size=65535, want_shuffle=False)  # no EDNS size cap
    try:
        return reply.to_wire(max_size=512 if query.edns < 0 else max(query.payload, 512),
                             want_shuffle=False)  # zone order: replies must not vary
    except dns.exception.TooBig:  # the client must ask again over TCP
        reply.answer, reply.authority, reply.additional = [], [], []
        reply.flags |= dns.flags.TC
        return reply.to_wire(want_shuffle=False)


class Udp(asyncio.DatagramProtocol):
    """Replies by query (but its ID) from a cache, else from Answers, else from Authority.
    With a delay, replies wait in one queue (in arrival order) that one timer drains."""

    def __init__(self, authority: Authority, delay: float, fast: Answers | None = None) -> None:
        self.authority = authority
        self.fast = fast or Answers(authority)
        self.delay = delay
        self.transport: asyncio.DatagramTransport | None = None
        self.answers: dict[bytes, bytes | None] = {}  # case kept: replies echo the question
        self.held: deque[tuple[float, bytes, tuple[str, int]]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        key = data[2:]
        if key in self.answers:
            cached = self.answers[key]
            if cached is not None:  # None: never answered
                self._reply(data[:2] + cached, addr)
            return
        wire = self.fast.reply(data, True)
        if wire is SLOW:
            wire = _slow(self.authority, data, True)
            if wire is None:
                return
        if len(self.answers) < 100_000:
            self.answers[key] = wire[2:] if isinstance(wire, bytes) else None
        if isinstance(wire, bytes):
            self._reply(wire, addr)

    def _reply(self, wire: bytes, addr: tuple[str, int]) -> None:
        if self.delay <= 0:
            if self.transport is not None:
                self.transport.sendto(wire, addr)
            return
        loop = asyncio.get_running_loop()
        self.held.append((loop.time() + self.delay, wire, addr))
        if self.timer is None:
            self.timer = loop.call_at(self.held[0][0], self._flush)

    def _flush(self) -> None:
        """Send every held reply whose time has come; wait for the next one."""
        loop = asyncio.get_running_loop()
        now, held = loop.time(), self.held
        while held and held[0][0] <= now:
            _, wire, addr = held.popleft()
            if self.transport is not None:
                self.transport.sendto(wire, addr)
        self.timer = loop.call_at(held[0][0], self._flush) if held else None


async def _tcp(authority: Authority, fast: Answers, delay: float, reader: asyncio.StreamReader,
               writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            size = int.from_bytes(await reader.readexactly(2), "big")
            data = await reader.readexactly(size)
            wire = fast.reply(data, False)
            if wire is SLOW:
                wire = _slow(authority, data, False)
            if not isinstance(wire, bytes):
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, dns.exception.DNSException):
        pass
    finally:
        writer.close()

def load_zones(directory: Path) -> list[dns.zone.Zone]:
    return [dns.zone.from_file(str(path), relativize=False, check_origin=False)
            for path in sorted(directory.glob("*.zone"))]


async def serve(args: argparse.Namespace) -> None:
    authority = Authority(load_zones(Path(args.zones)),
                          {dns.name.from_text(z) for z in args.timeout},
                          {dns.name.from_text(z) for z in args.servfail})
    fast = Answers(authority)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Udp(authority, args.delay, fast), local_addr=(args.address, args.port))
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # bursts of thousands
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    port = transport.get_extra_info("sockname")[1]
    server = await asyncio.start_server(lambda r, w: _tcp(authority, fast, args.delay, r, w),
                                        args.address, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {port}", flush=True)
    await stop.wait()
    server.close()
    transport.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zones", required=True)
    parser.add_argument("--address", default="127.0.0.1", help="a loopback address")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--timeout", action="append", default=[])
    parser.add_argument("--servfail", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
