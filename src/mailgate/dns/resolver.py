"""Asynchronous DNS queries: a deadline per query, bounded concurrency, a cache that honours
TTLs and negative answers, and Postfix's "not found" versus "try again" (the system's
servers from /etc/resolv.conf as dnspython reads it)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.resolver

from mailgate.config.settings import host_port
from mailgate.dns import wire
from mailgate.dns.transport import Server, Timeout, exchange
from mailgate.dns.wire import Reply

# Postfix's dns.h status codes; a higher value is a better answer (dns_lookup_rl precedence).
OK, POLICY, RETRY, INVAL, FAIL, NULLMX, NOTFOUND = 0, -1, -2, -3, -4, -5, -6

# dns_strerror() texts for the resolver's h_errno values.
HOST_NOT_FOUND = "Host not found"
TRY_AGAIN = "Host not found, try again"
NO_RECOVERY = "Non-recoverable error"
NO_DATA = "Host found but no data record of requested type"

NEGATIVE_TTL = 60  # when a negative answer carries no SOA
FAILURE_TTL = 5  # a timeout or SERVFAIL is remembered this long (RFC 2308 section 7 allows 300)
MAX_TTL = 86400


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record: owner (no trailing dot), TTL, type and its data as text (address,
    target host without trailing dot, "" for the null MX target, a TXT record's first string
    as wire.txt_text gives it)."""

    name: str
    ttl: int
    type: str
    data: str
    pref: int = 0

    def text(self) -> str:
        """dns_strrecord(): the form smtpd_dns_reply_filter patterns see."""
        data = self.data
        if self.type in ("MX", "NS", "PTR", "CNAME"):
            data = data + "."
        if self.type == "MX":
            data = f"{self.pref} {data}"
        return f"{self.name}. {self.ttl} IN {self.type} {data}"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    records: tuple[Record, ...] = ()
    error: str = ""  # dns_strerror() text for a failure
    nxdomain: bool = False
    ttl: int = -1  # a negative answer's TTL (the SOA minimum): postscreen's DNSBL TTL


def _servers(spec: Sequence[str]) -> list[Server]:
    """`127.0.0.1:5353`, `[::1]:53`, `::1`, `192.0.2.1`; none: /etc/resolv.conf's.
    ValueError for a malformed item."""
    out: list[Server] = []
    for item in spec:
        address = host_port(item, 53)
        if address is None:
            raise ValueError(f"bad DNS server address: {item!r} (use host, host:port or "
                             "[ipv6]:port)")
        out.append(Server(address.host, address.port))
    if not out:
        try:
            system = dns.resolver.Resolver(configure=True)
            out = [Server(str(getattr(ns, "address", ns)), int(getattr(ns, "port", 53)))
                   for ns in system.nameservers]
        except dns.exception.DNSException:
            out = []
    return out or [Server("127.0.0.1")]


class _Slots:
    """At most `size` queries at the servers at once, the others waiting in turn (what
    asyncio.Semaphore does, without its scan over the waiters at each release)."""

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # release() hands its slot over
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed over, but this query is gone: pass it on
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


def _pass_on(own: asyncio.Future[Answer], task: asyncio.Task[Answer]) -> None:
    """A shared query's outcome to one of its waiters (a lighter asyncio.shield)."""
    if task.cancelled():
        own.cancel()
        return
    exc = task.exception()  # retrieved even when that waiter is gone
    if own.done():  # that waiter was cancelled
        return
    if exc is not None:
        own.set_exception(exc)
    else:
        own.set_result(task.result())


def _negative_ttl(reply: Reply) -> int:
    for rr in reply.authority:
        if rr.type == wire.TYPES["SOA"]:
            return min(rr.ttl, rr.minimum)
    return NEGATIVE_TTL


def _answer(reply: Reply, qname: str, rdtype: str) -> tuple[Answer, int]:
    """What a reply means: records (after the CNAME chain), NXDOMAIN, NODATA or a failure."""
    if reply.rcode == wire.NXDOMAIN:
        negative = _negative_ttl(reply)
        return Answer(NOTFOUND, error=HOST_NOT_FOUND, nxdomain=True, ttl=negative), negative
    if reply.rcode in (wire.SERVFAIL, wire.REFUSED):
        return Answer(RETRY, error=TRY_AGAIN), 0
    if reply.rcode != wire.NOERROR:
        return Answer(FAIL, error=NO_RECOVERY), 0
    wanted = wire.TYPES[rdtype]
    name = qname.rstrip(".").lower()
    for _ in range(9):
        found = [rr for rr in reply.answer if rr.type == wanted and rr.name.lower() == name]
        if found:
            records = tuple(Record(rr.name, rr.ttl, rdtype, rr.data, rr.pref) for rr in found)
            return Answer(OK, records), min(r.ttl for r in records)
        alias = next((rr for rr in reply.answer if rr.type == wire.TYPES["CNAME"]
                      and rr.name.lower() == name), None)
        if alias is None:
            break
        name = alias.data.lower()
    negative = _negative_ttl(reply)
    return Answer(NOTFOUND, error=NO_DATA, ttl=negative), negative


def _result(reply: Reply, answer: Answer) -> str:
    """The `result` label of a query (metrics): ok, nodata, nxdomain, servfail, refused, error."""
    if reply.rcode == wire.NOERROR:
        return "ok" if answer.status == OK else "nodata"
    return {wire.NXDOMAIN: "nxdomain", wire.SERVFAIL: "servfail",
            wire.REFUSED: "refused"}.get(reply.rcode, "error")


class Resolver:
    """Queries one record type for one name. The system configuration (/etc/resolv.conf) is
    used unless `servers` are given. Answers are cached for their TTL (negative answers for
    the SOA minimum), "try again" answers for FAILURE_TTL seconds so that a server in trouble
    is not asked again by every session. Identical queries in flight share one request."""

    def __init__(self, servers: Sequence[str] = (), timeout: float = 5.0, concurrency: int = 1000,
                 cache_size: int = 100_000, clock: Callable[[], float] = time.monotonic,
                 observe: Callable[[str, str, float], None] | None = None) -> None:
        self._servers = _servers(servers)
        self._lifetime = timeout
        self._attempt = min(max(timeout / 3, 0.05), 1.0)  # retransmit after this long
        self._limit = _Slots(max(concurrency, 1))
        self._cache: dict[tuple[str, str], tuple[float, Answer]] = {}
        self._cache_size = cache_size
        self._inflight: dict[tuple[str, str], asyncio.Task[Answer]] = {}
        self.clock = clock
        self.queries = 0  # sent to a server (not answered from the cache)
        self.observe = observe  # (type, result, seconds) of each query sent (metrics)
        # (name, type, answer) of each query() answered, cached or not: the transaction
        # journal's record of what the checks saw (None: nobody asks)
        self.answered: Callable[[str, str, Answer], None] | None = None

    def flush(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        """Close the sockets (they are opened again when needed)."""
        for task in self._inflight.values():
            task.cancel()
        for server in self._servers:
            server.close()

    def cached(self, name: str, rdtype: str) -> Answer | None:
        key = (name, rdtype)  # case kept: the reply's names echo the question's (compression)
        hit = self._cache.get(key)
        if hit is None:
            return None
        if hit[0] <= self.clock():
            del self._cache[key]
            return None
        return hit[1]

    async def query(self, name: str, rdtype: str) -> Answer:
        answer = self.cached(name, rdtype)
        if answer is None:
            task = self._start(name, rdtype)
            if task.done():
                answer = task.result()
            else:
                own: asyncio.Future[Answer] = task.get_loop().create_future()
                task.add_done_callback(functools.partial(_pass_on, own))
                answer = await own  # cancelled, it leaves the shared query running
        if self.answered is not None:
            self.answered(name, rdtype, answer)
        return answer

    def start(self, name: str, rdtype: str) -> asyncio.Future[Answer]:
        """The query's answer to await later (started now, or already cached)."""
        hit = self.cached(name, rdtype)
        if hit is not None:
            done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            done.set_result(hit)
            return done
        return self._start(name, rdtype)

    def prefetch(self, name: str, rdtype: str = "A") -> None:
        """Start a query now so that a later query() finds it answered or in flight."""
        if self.cached(name, rdtype) is None:
            self._start(name, rdtype)

    def _start(self, name: str, rdtype: str) -> asyncio.Task[Answer]:
        key = (name, rdtype)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._query(key))
            self._inflight[key] = task
        return task

    async def _query(self, key: tuple[str, str]) -> Answer:
        try:
            answer, ttl = await self._ask(*key)
        finally:
            del self._inflight[key]
        if answer.status == RETRY:
            ttl = FAILURE_TTL
        if ttl > 0:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (self.clock() + min(ttl, MAX_TTL), answer)
        return answer

    async def _ask(self, name: str, rdtype: str) -> tuple[Answer, int]:
        try:
            q = wire.question(name, rdtype)
        except wire.WireError:
            return Answer(FAIL, error=NO_RECOVERY), NEGATIVE_TTL
        self.queries += 1
        started = time.monotonic()
        await self._limit.acquire()
        try:
            reply = await exchange(self._servers, q, self._lifetime, self._attempt)
        except (Timeout, OSError):
            if self.observe is not None:
                self.observe(rdtype, "timeout", time.monotonic() - started)
            return Answer(RETRY, error=TRY_AGAIN), 0
        finally:
            self._limit.release()
        answer = _answer(reply, name, rdtype)
        if self.observe is not None:
            self.observe(rdtype, _result(reply, answer[0]), time.monotonic() - started)
        return answer
