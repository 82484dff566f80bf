"""The smtp, relay and lmtp delivery agents: next-hop hosts (MX, A, `[host]`, `unix:`),
cached connections, per-destination concurrency, one transaction per message and next hop."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailgate.delivery.agent import DeliveryRequest, DeliveryResult, Status
from mailgate.delivery.smtpclient import (
    Connection,
    Failure,
    Timeouts,
    open_connection,
    said,
    tls_context,
)
from mailgate.dns.names import NameService
from mailgate.dns.resolver import NULLMX, OK, RETRY, Resolver

CACHE_TIME = 2.0  # smtp_connection_cache_time_limit


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    addr: str
    port: int
    path: str = ""  # a UNIX socket (lmtp:unix:/path)


class NoTargets(Exception):
    def __init__(self, text: str, dsn: str, final: bool) -> None:
        super().__init__(text)
        self.text, self.dsn, self.final = text, dsn, final


class SmtpAgent:
    """`name` is the transport (smtp, relay, lmtp); requests carry the next hop."""

    def __init__(self, name: str, myhostname: str, resolver: Resolver | None,
                 names: NameService | None, timeouts: Timeouts, concurrency: int,
                 tls: bool = True, clock: Callable[[], float] = time.monotonic,
                 recipient_limit: int = 50, line_length_limit: int = 998) -> None:
        self.name = name
        self.lmtp = name == "lmtp"
        self.myhostname = myhostname
        self.resolver, self.names = resolver, names
        self.timeouts = timeouts
        self.concurrency = max(concurrency, 1)
        self.recipient_limit = max(recipient_limit, 1)
        self.line_length_limit = line_length_limit  # smtp_line_length_limit (lmtp_...)
        self.tls = tls_context() if tls and not self.lmtp else None
        self.clock = clock
        self.cache: dict[Target, list[Connection]] = {}
        self.limits: dict[str, asyncio.Semaphore] = {}

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        return (await self.deliver_many([request]))[0]

    async def deliver_many(self, requests: list[DeliveryRequest]) -> list[DeliveryResult]:
        """One message, recipients with the same next hop: one transaction for each
        `recipient_limit` of them (default_destination_recipient_limit)."""
        out: list[DeliveryResult] = []
        for start in range(0, len(requests), self.recipient_limit):
            out += await self._deliver_batch(requests[start:start + self.recipient_limit])
        return out

    async def _deliver_batch(self, requests: list[DeliveryRequest]) -> list[DeliveryResult]:
        nexthop = requests[0].nexthop
        limit = self.limits.setdefault(nexthop, asyncio.Semaphore(self.concurrency))
        async with limit:
            try:
                targets = await self._targets(nexthop)
            except NoTargets as exc:
                status = Status.BOUNCED if exc.final else Status.DEFERRED
                return [DeliveryResult(status, exc.dsn, exc.text, "none") for _ in requests]
            last: Failure | None = None
            for target in targets:
                try:
                    return await self._transaction(target, requests)
                except Failure as failure:
                    last = failure
                    if not failure.next_host:
                        break
            assert last is not None
            status = Status.BOUNCED if last.final else Status.DEFERRED
            return [DeliveryResult(status, last.dsn, last.text, "none") for _ in requests]

    # --- next-hop hosts ----------------------------------------------------------------
    async def _targets(self, nexthop: str) -> list[Target]:
        default_port = 24 if self.lmtp else 25
        if nexthop.startswith("unix:"):
            return [Target("", "", 0, nexthop[5:])]
        spec = nexthop.removeprefix("inet:")
        host, port = spec, default_port
        if spec.startswith("["):
            close = spec.find("]")
            host, rest = spec[1:close], spec[close + 1:]
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
            return await self._addresses(host, port)
        if ":" in spec and spec.rsplit(":", 1)[1].isdigit():
            host, port_text = spec.rsplit(":", 1)
            port = int(port_text)
        if self.lmtp or self.resolver is None:
            return await self._addresses(host, port)
        return await self._mx(host, port)

    async def _mx(self, domain: str, port: int) -> list[Target]:
        assert self.resolver is not None
        answer = await self.resolver.query(domain, "MX")
        if answer.status == NULLMX or (answer.status == OK and any(
                r.data in ("", ".") and r.pref == 0 for r in answer.records)):
            raise NoTargets(f"Domain {domain} does not accept mail (nullMX)", "5.1.10", True)
        if answer.status == RETRY:
            raise NoTargets(f"Host or domain name not found. Name service error for "
                            f"name={domain} type=MX: Host not found, try again", "4.4.3", False)
        if answer.status != OK:  # no MX: the domain itself (RFC 5321 5.1)
            return await self._addresses(domain, port, mx=False)
        out: list[Target] = []
        for record in sorted(answer.records, key=lambda r: r.pref):
            try:
                out += await self._addresses(record.data, port)
            except NoTargets:
                continue
        if not out:
            raise NoTargets(f"Host or domain name not found. Name service error for "
                            f"name={domain} type=A: Host not found", "4.4.3", False)
        return out

    async def _addresses(self, host: str, port: int, mx: bool = True) -> list[Target]:
        if self.names is None:
            return [Target(host, host, port)]
        found = await self.names.addresses(host)
        if not found.values:
            final = not found.temporary and not mx
            raise NoTargets(f"Host or domain name not found. Name service error for "
                            f"name={host} type=A: Host not found"
                            + (", try again" if found.temporary else ""),
                            "5.4.4" if final else "4.4.3", final)
        return [Target(host, addr, port) for addr in found.values]

    # --- connections ---------------------------------------------------------------------
    async def _connection(self, target: Target) -> Connection:
        idle = self.cache.get(target)
        now = self.clock()
        while idle:
            conn = idle.pop()
            if now - conn.used < CACHE_TIME and not conn.writer.is_closing() \
                    and not conn.reader.at_eof():
                return conn
            conn.close()
        name = target.path or target.host
        conn = await open_connection(name, target.addr, target.port, target.path, self.lmtp,
                                     self.timeouts)
        try:
            await conn.hello(self.myhostname, self.tls)
        except Failure:
            conn.close()
            raise
        return conn

    def _keep(self, target: Target, conn: Connection) -> None:
        conn.used = self.clock()
        self.cache.setdefault(target, []).append(conn)
        asyncio.get_running_loop().call_later(CACHE_TIME, self._expire, target)

    def _expire(self, target: Target) -> None:
        now = self.clock()
        idle = self.cache.get(target, [])
        for conn in [c for c in idle if now - c.used >= CACHE_TIME]:
            idle.remove(conn)
            asyncio.get_running_loop().create_task(conn.quit())

    # --- the transaction -------------------------------------------------------------------
    async def _transaction(self, target: Target, requests: list[DeliveryRequest]
                           ) -> list[DeliveryResult]:
        started = self.clock()
        conn = await self._connection(target)
        setup = self.clock() - started
        return [dataclasses.replace(r, setup=setup)
                for r in await self._exchange(target, conn, requests)]

    async def _exchange(self, target: Target, conn: Connection,
                        requests: list[DeliveryRequest]) -> list[DeliveryResult]:
        results: list[DeliveryResult | None] = [None] * len(requests)
        accepted: list[int] = []
        t = self.timeouts
        try:
            first = requests[0]
            size = f" SIZE={len(first.content)}" if "SIZE" in conn.extensions else ""
            reply = await conn.command(f"MAIL FROM:<{first.sender}>{size}", t.mail,
                                       "sending MAIL FROM")
            if reply.code // 100 != 2:
                fail = said(conn, reply, "MAIL FROM")
                await self._reset(target, conn)
                return [self._failed(fail, conn) for _ in requests]
            for i, req in enumerate(requests):
                reply = await conn.command(f"RCPT TO:<{req.recipient}>", t.rcpt,
                                           "sending RCPT TO")
                if reply.code // 100 == 2:
                    accepted.append(i)
                else:
                    results[i] = self._failed(said(conn, reply, "RCPT TO"), conn)
            if not accepted:
                await self._reset(target, conn)
                return [r for r in results if r is not None]
            reply = await conn.command("DATA", t.data_init, "sending DATA")
            if reply.code != 354:
                fail = said(conn, reply, "DATA")
                for i in accepted:
                    results[i] = self._failed(fail, conn)
                await self._reset(target, conn)
                return [r for r in results if r is not None]
            await conn.send_body(first.content, self.line_length_limit)
            replies = len(accepted) if self.lmtp else 1
            for n in range(replies):
                reply = await conn.reply(t.data_done, "sending end of data -- message may "
                                                      "be sent more than once")
                which = [accepted[n]] if self.lmtp else accepted
                for i in which:
                    results[i] = (DeliveryResult(Status.SENT, reply.dsn, reply.text,
                                                 conn.relay) if reply.code // 100 == 2
                                  else self._failed(said(conn, reply, "end of DATA"), conn))
        except Failure as failure:
            conn.close()
            if not accepted and all(r is None for r in results):
                raise  # nothing happened here: another host may do it
            for i, result in enumerate(results):
                if result is None:
                    results[i] = DeliveryResult(Status.DEFERRED, failure.dsn, failure.text,
                                                conn.relay)
            return [r for r in results if r is not None]
        self._keep(target, conn)
        return [r for r in results if r is not None]

    def _failed(self, failure: Failure, conn: Connection) -> DeliveryResult:
        return DeliveryResult(Status.BOUNCED if failure.final else Status.DEFERRED,
                              failure.dsn, failure.text, conn.relay)

    async def _reset(self, target: Target, conn: Connection) -> None:
        try:
            reply = await conn.command("RSET", self.timeouts.helo, "sending RSET")
        except Failure:
            conn.close()
            return
        if reply.code // 100 == 2:
            self._keep(target, conn)
        else:
            conn.close()

    async def close(self) -> None:
        for idle in self.cache.values():
            for conn in idle:
                conn.close()
        self.cache.clear()
