"""DNS over UDP for many queries at once: a few long-lived sockets shared by every query
(random IDs, random socket per query), retransmission within a deadline, TCP on truncation."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from mailgate.dns.wire import REFUSED, SERVFAIL, TC, Reply, WireError, parse, query

SOCKETS = 8  # per server: random source ports for the queries
_RANDOM = random.SystemRandom()  # query IDs and socket choice must not be predictable


class Timeout(Exception):
    pass


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, tuple[asyncio.Future[Reply], bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        entry = self.pending.get(int.from_bytes(data[:2], "big"))
        if entry is None or entry[0].done():
            return
        try:
            reply = parse(data)
        except WireError:
            return
        if reply.question.lower() == entry[1].lower():  # else a stray or spoofed answer
            entry[0].set_result(reply)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and the like
        pass


@dataclass
class Server:
    host: str
    port: int = 53
    sockets: list[_Socket] = field(default_factory=list)

    async def socket(self) -> _Socket:
        if len(self.sockets) < SOCKETS:
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_datagram_endpoint(
                _Socket, remote_addr=(self.host, self.port))
            if len(self.sockets) < SOCKETS:  # others may have opened one meanwhile
                self.sockets.append(protocol)
                return protocol
            assert protocol.transport is not None
            protocol.transport.close()
        return _RANDOM.choice(self.sockets)

    def close(self) -> None:
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.close()
        self.sockets.clear()


async def exchange(servers: list[Server], q: bytes, lifetime: float, attempt: float) -> Reply:
    """One question (`q`, encoded), asked of each server in turn (retransmitted) until one
    answers with something other than SERVFAIL/REFUSED, or `lifetime` runs out (Timeout).
    When every server fails, the last failure is returned."""
    deadline = time.monotonic() + lifetime
    failed: Reply | None = None
    while True:
        for server in servers:
            left = deadline - time.monotonic()
            if left <= 0:
                if failed is not None:
                    return failed
                raise Timeout
            reply = await _ask(server, q, min(attempt, left))
            if reply is None:
                continue
            if reply.flags & TC:
                reply = await _tcp(server, q, left)
            if reply.rcode in (SERVFAIL, REFUSED):
                failed = reply
                continue
            return reply
        if failed is not None:  # every server failed: no point asking again
            return failed


async def _ask(server: Server, q: bytes, timeout: float) -> Reply | None:
    sock = await server.socket()
    qid = _RANDOM.randrange(65536)
    while qid in sock.pending:
        qid = _RANDOM.randrange(65536)
    waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    sock.pending[qid] = (waiter, q)
    try:
        assert sock.transport is not None
        sock.transport.sendto(query(qid, q))
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            return None
    finally:
        del sock.pending[qid]


async def _tcp(server: Server, q: bytes, timeout: float) -> Reply:
    """The same question over TCP (the UDP answer was truncated)."""
    try:
        async with asyncio.timeout(max(timeout, 0.01)):
            reader, writer = await asyncio.open_connection(server.host, server.port)
            try:
                qid = _RANDOM.randrange(65536)
                wire = query(qid, q)
                writer.write(len(wire).to_bytes(2, "big") + wire)
                size = int.from_bytes(await reader.readexactly(2), "big")
                reply = parse(await reader.readexactly(size))
                if reply.id != qid or reply.question.lower() != q.lower():
                    raise WireError("the TCP answer is for another question")
                return reply
            finally:
                writer.close()
    except (TimeoutError, OSError, asyncio.IncompleteReadError, WireError) as exc:
        raise Timeout from exc
