"""DNS over UDP for many queries at once: a few long-lived sockets shared by every query
(random IDs, random socket per query), retransmission within a deadline, TCP on truncation.
One timer per server covers every query waiting on it (a heap of deadlines)."""

from __future__ import annotations

import asyncio
import heapq
import os
import time
from dataclasses import dataclass, field

from mailgate.dns.wire import REFUSED, SERVFAIL, TC, Reply, WireError, parse, query

SOCKETS = 8  # per server: random source ports for the queries
ENTROPY = 4096  # bytes read from os.urandom at a time (query IDs and socket choice)


class Timeout(Exception):
    pass


class Entropy:
    """Unpredictable 16-bit numbers from os.urandom, read ENTROPY bytes at a time: query IDs
    and the socket choice must not be guessable (never a seeded PRNG)."""

    def __init__(self) -> None:
        self._bytes = b""
        self._pos = 0

    def u16(self) -> int:
        pos = self._pos
        if pos + 2 > len(self._bytes):
            self._bytes, pos = os.urandom(ENTROPY), 0
        self._pos = pos + 2
        return (self._bytes[pos] << 8) | self._bytes[pos + 1]


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        # query ID -> (the waiting future, the question as sent, in lower case)
        self.pending: dict[int, tuple[asyncio.Future[Reply | None], bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12:
            return
        entry = self.pending.get((data[0] << 8) | data[1])
        if entry is None or entry[0].done():
            return
        q = entry[1]
        if data[12:12 + len(q)].lower() != q:  # a stray or spoofed answer
            return
        try:
            reply = parse(data)
        except WireError:
            return
        if reply.question.lower() == q:
            entry[0].set_result(reply)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and the like
        pass


class _Deadlines:
    """When each waiting query gives up: a heap of (time, sequence, future) and one timer
    armed for the earliest; an expired query's future gets None (answered ones are skipped)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[Reply | None]]] = []
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed = 0.0

    def add(self, waiter: asyncio.Future[Reply | None], timeout: float) -> None:
        when = self.loop.time() + timeout
        self._count += 1
        heapq.heappush(self._heap, (when, self._count, waiter))
        if self._timer is None or when < self._armed:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        heap, now = self._heap, self.loop.time()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            waiter = heapq.heappop(heap)[2]
            if not waiter.done():
                waiter.set_result(None)
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        """The sockets are closing: every waiting query ends now, as if timed out."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, _, waiter in self._heap:
            if not waiter.done():
                waiter.set_result(None)
        self._heap.clear()


@dataclass
class Server:
    host: str
    port: int = 53
    sockets: list[_Socket] = field(default_factory=list)
    entropy: Entropy = field(default_factory=Entropy)
    deadlines: _Deadlines | None = None
    opening: asyncio.Task[None] | None = None  # opens the sockets, one after the other

    async def socket(self) -> _Socket:
        """A socket for the next query, chosen at random among those open; the first query
        starts opening them (one task for all queries: a burst opens SOCKETS, no more)."""
        while len(self.sockets) < SOCKETS:
            if self.opening is None or self.opening.done():
                self.opening = asyncio.get_running_loop().create_task(self._open())
                self.opening.add_done_callback(_retrieved)
            if self.sockets:
                break
            await asyncio.shield(self.opening)  # OSError when they cannot be opened
        return self.sockets[self.entropy.u16() % len(self.sockets)]

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self.sockets) < SOCKETS:
            _, protocol = await loop.create_datagram_endpoint(
                _Socket, remote_addr=(self.host, self.port))
            self.sockets.append(protocol)

    def pick(self) -> _Socket | None:
        """A socket chosen at random once all are open (else None: await socket())."""
        if len(self.sockets) < SOCKETS:
            return None
        return self.sockets[self.entropy.u16() % SOCKETS]

    def timers(self) -> _Deadlines:
        loop = asyncio.get_running_loop()
        if self.deadlines is None or self.deadlines.loop is not loop:
            self.deadlines = _Deadlines(loop)
        return self.deadlines

    def close(self) -> None:
        if self.opening is not None:
            self.opening.cancel()
            self.opening = None
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.close()
        self.sockets.clear()
        if self.deadlines is not None:
            self.deadlines.close()
            self.deadlines = None


def _retrieved(task: asyncio.Task[None]) -> None:
    """An opening that failed is reported to the queries waiting for it, if any."""
    if not task.cancelled():
        task.exception()


async def exchange(servers: list[Server], q: bytes, lifetime: float, attempt: float) -> Reply:
    """One question (`q`, encoded), asked of each server in turn (retransmitted) until one
    answers with something other than SERVFAIL/REFUSED, or `lifetime` runs out (Timeout).
    When every server fails, the last failure is returned."""
    deadline = time.monotonic() + lifetime
    failed: Reply | None = None
    qlower = q.lower()
    while True:
        for server in servers:
            left = deadline - time.monotonic()
            if left <= 0:
                if failed is not None:
                    return failed
                raise Timeout
            reply = await _ask(server, q, qlower, min(attempt, left))
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


async def _ask(server: Server, q: bytes, qlower: bytes, timeout: float) -> Reply | None:
    """One UDP query; None when no answer came within `timeout` seconds."""
    sock = server.pick() or await server.socket()
    pending, entropy = sock.pending, server.entropy
    qid = entropy.u16()
    while qid in pending:
        qid = entropy.u16()
    waiter: asyncio.Future[Reply | None] = asyncio.get_running_loop().create_future()
    pending[qid] = (waiter, qlower)
    try:
        assert sock.transport is not None
        sock.transport.sendto(query(qid, q))
        server.timers().add(waiter, timeout)
        return await waiter
    finally:
        del pending[qid]


async def _tcp(server: Server, q: bytes, timeout: float) -> Reply:
    """The same question over TCP (the UDP answer was truncated)."""
    try:
        async with asyncio.timeout(max(timeout, 0.01)):
            reader, writer = await asyncio.open_connection(server.host, server.port)
            try:
                qid = server.entropy.u16()
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
