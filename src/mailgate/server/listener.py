"""The asyncio SMTP listener: the only code that reads and writes client sockets.

One `asyncio.Protocol` per connection feeds the sans-IO core straight from `data_received`
(no StreamReader, no timeout object per read) and one coroutine per session runs the
Session against it. Time limits use one timer per connection, re-armed only when it fires
early; output is written once per batch of replies and drained only when the transport's
buffer is full.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from mailgate.acceptor import Greeter, Handed, Handoff, client_address
from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import Client
from mailgate.maps.matchlist import HostAddrList
from mailgate.master import ConnectionTable
from mailgate.server.deadline import Deadlines
from mailgate.server.session import Services, Session
from mailgate.smtp.protocol import NEED_DATA, Closed, Mode, ServerConnection

# Command input the session has not asked for yet that makes us stop reading (the client
# pipelines far ahead while a check waits for DNS); message content is always read.
_PAUSE = 256 * 1024


def _peek(sock: object) -> bytes:
    """Input already in the kernel's buffer before the greeting (the 3.7.6+ pre-greeting
    pipelining check, at accept time: before the transport's first read)."""
    fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return b""
    # uvloop's transport sockets cannot recv(): peek through a second socket object on the
    # same descriptor, detached afterwards so that it does not close the descriptor.
    peek = socket.socket(fileno=fileno())
    try:
        return peek.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # BlockingIOError: nothing there (the usual case)
        return b""
    finally:
        peek.detach()


def _service(sockname: object) -> str:
    """The service name in anvil's warnings: Postfix's master.cf name, which is `smtp` for
    port 25 and `host:port` for a service on another port (as the reference instance)."""
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return "smtp"
    host, port = str(sockname[0]), int(sockname[1])
    if port == 25:
        return "smtp"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Connection(asyncio.Protocol):
    """One client connection: input into the sans-IO core, waiting with deadlines, output."""

    def __init__(self, server: SmtpServer, adopted: bool = False) -> None:
        self.server = server
        self.adopted = adopted  # handed over by the accept process: already counted
        self.loop = server.loop
        s = server.settings
        self.conn = ServerConnection(s.line_length_limit, s.message_size_limit)
        self.deadlines = Deadlines(s, time.monotonic)  # the session deadline runs from accept
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drainer: asyncio.Future[None] | None = None
        self.deadline = 0.0  # loop time at which the current wait ends
        self.timer: asyncio.TimerHandle | None = None
        self.timed_out = False
        self.unread = 0  # bytes received since the session last waited for input
        self.received = 0  # bytes received during the current wait
        self.reading_paused = False
        self.writing_paused = False
        self.gone = False

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        if not self.adopted:
            self.server.spawn(self)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.received += len(data)
        if self.waiter is not None:
            self._wake()
            return
        self.unread += len(data)
        if self.unread > _PAUSE and self.conn.mode is Mode.COMMAND and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._wake()
        return True  # keep the transport open: pending replies (221) still go out

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.conn.receive_data(b"")
        self._wake()
        drainer, self.drainer = self.drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_result(None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        drainer, self.drainer = self.drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_result(None)

    # --- waiting with a deadline --------------------------------------------------------
    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arm(self, budget: float) -> None:
        """The current wait ends `budget` seconds from now. One timer per connection: it
        is moved earlier when needed, and re-armed when it fires before the deadline."""
        self.timed_out = False
        self.deadline = self.loop.time() + budget
        timer = self.timer
        if timer is None or timer.when() > self.deadline:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.waiter is None and self.drainer is None:
            return  # nothing waits: the next wait arms it again
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        self.timed_out = True
        self._wake()
        drainer, self.drainer = self.drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_result(None)

    async def read(self) -> bool:
        """Wait for more input (or its end); False when the time is up."""
        deadlines = self.deadlines
        budget = deadlines.read_budget()
        if budget <= 0:
            return False
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self.unread = self.received = 0
        self._arm(budget)
        started = time.monotonic()
        self.waiter = self.loop.create_future()
        await self.waiter
        self.waiter = None
        deadlines.charge_read(time.monotonic() - started, self.received,
                              self.conn.mode is Mode.DATA or self.conn.mode is Mode.BDAT)
        return not self.timed_out or self.received > 0

    async def drain(self) -> bool:
        """Wait until the client took our output; False when it did not in time."""
        if not self.writing_paused or self.gone:
            return True
        budget = self.deadlines.write_budget()
        if budget > 0:
            self._arm(budget)
            self.drainer = self.loop.create_future()
            await self.drainer
            self.drainer = None
            if not self.writing_paused or self.gone:
                return True
        self.transport.abort()  # type: ignore[union-attr]  # close() would wait for it
        return False

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()


class SmtpServer:
    """Accepts connections and runs one Session per client, bounded by connection limits."""

    def __init__(self, settings: SmtpdSettings, services: Services,
                 limit_exceptions: HostAddrList, connections: ConnectionTable,
                 sleep: Callable[[float], object] = asyncio.sleep) -> None:
        self.settings = settings
        self.services = services
        self.limit_exceptions = limit_exceptions
        self.connections = connections
        self.sleep = sleep
        self.servers: list[asyncio.AbstractServer] = []
        self.loop: asyncio.AbstractEventLoop  # the worker's loop, set by start()
        self.sessions: set[asyncio.Task[None]] = set()
        self.greeter = Greeter.from_settings(settings)
        self.handoff: Handoff | None = None
        self.worker = 0
        self.channel: socket.socket | None = None

    async def start(self, sockets: list[socket.socket]) -> None:
        """Serve on listening sockets bound by the master (shared by every worker)."""
        loop = self.loop = asyncio.get_running_loop()
        for sock in sockets:
            server = await loop.create_server(lambda: Connection(self), sock=sock,
                                              backlog=4096)  # asyncio would listen(100)
            self.servers.append(server)

    async def start_handed(self, handoff: Handoff, worker: int) -> None:
        """Serve the connections that the accept process hands to worker `worker`."""
        loop = self.loop = asyncio.get_running_loop()
        self.handoff, self.worker = handoff, worker
        self.channel = handoff.channel(worker)
        loop.add_reader(self.channel.fileno(), self._receive)

    def _receive(self) -> None:
        assert self.handoff is not None and self.channel is not None
        for handed in self.handoff.receive(self.worker, self.channel):
            task = self.loop.create_task(self._adopt(handed))
            self.sessions.add(task)
            task.add_done_callback(self.sessions.discard)

    async def _adopt(self, handed: Handed) -> None:
        """A connection counted and perhaps greeted by the accept process: its session."""
        assert self.handoff is not None
        try:
            try:
                _, protocol = await self.loop.connect_accepted_socket(
                    lambda: Connection(self, adopted=True), handed.sock)
            except (OSError, asyncio.CancelledError):
                handed.sock.close()
                self.connections.disconnect(handed.addr)
                return
            connection: Connection = protocol
            self.services.metrics.connection(1)
            if handed.greeted:
                self.services.metrics.reply(220)
            await self._accept(connection, handed.addr, handed.port, handed.count,
                               handed.total, handed.greeted, handed.early)
        finally:
            self.handoff.finished(self.worker)

    async def stop(self) -> None:
        if self.channel is not None:
            self.loop.remove_reader(self.channel.fileno())
        for server in self.servers:
            server.close()
        for task in list(self.sessions):
            task.cancel()
        await asyncio.gather(*self.sessions, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()

    def spawn(self, connection: Connection) -> None:
        """A new connection (called from connection_made): counted, greeted at once when
        nothing needs the client's name first, then its session runs as a task."""
        transport = connection.transport
        assert transport is not None
        addr, port = client_address(transport.get_extra_info("peername"))
        count, total = self.connections.connect(addr)
        self.services.metrics.connection(1)
        greeted = self.greeter.early(self.connections, addr, count, total)
        early = b""
        if greeted:  # the greeting leaves now; the name lookup runs behind it
            early = _peek(transport.get_extra_info("socket"))  # talking before the greeting
            self.services.metrics.reply(220)
            connection.write(connection.conn.send(220, (self.settings.banner,)))
        task = connection.loop.create_task(
            self._accept(connection, addr, port, count, total, greeted, early))
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)

    async def _accept(self, connection: Connection, addr: str, port: int, count: int,
                      total: int, greeted: bool, early: bytes) -> None:
        try:
            await self._run(connection, addr, port, count, total, greeted, early)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.services.metrics.connection(-1)
            self.connections.disconnect(addr)
            connection.close()

    def _exempt(self, client: Client) -> bool:
        """smtpd_client_event_limit_exceptions and XCLIENT-authorized clients."""
        try:
            exempt = self.limit_exceptions.match(client.name, client.addr)
        except Exception:
            exempt = False
        return exempt or self.services.xclient_hosts(client)

    def _over_limit(self, client: Client, count: int, total: int, service: str
                    ) -> tuple[str, str]:
        """(421 reply, warning) when a connection limit is exceeded, else empty strings."""
        s = self.settings
        addr = client.addr
        namaddr = client.namaddr
        if total > s.max_connections:
            return (f"421 4.7.0 {s.myhostname} Error: too many connections",
                    f"Connection limit exceeded: {total} sessions (smtpd_max_connections) "
                    f"at {namaddr}")
        # The exceptions are matched only for a client over a limit (most are not).
        if s.connection_count_limit and count > s.connection_count_limit:
            if self._exempt(client):
                return "", ""
            return (f"421 4.7.0 {s.myhostname} Error: too many connections from {addr}",
                    f"Connection concurrency limit exceeded: {count} from {namaddr} "
                    f"for service {service}")
        if s.connection_rate_limit:
            rate = self.connections.rate(addr, time.time(), s.rate_time_unit)
            if rate > s.connection_rate_limit and not self._exempt(client):
                return (f"421 4.7.0 {s.myhostname} Error: too many connections from {addr}",
                        f"Connection rate limit exceeded: {rate} from {namaddr} "
                        f"for service {service}")
        return "", ""

    async def _run(self, connection: Connection, addr: str, port: int, count: int,
                   total: int, greeted: bool, early: bytes) -> None:
        s = self.settings
        transport = connection.transport
        assert transport is not None
        client = await self.services.engine.connect(addr, port, s.peername_lookup)
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            client.server_addr, client.server_port = local[0], local[1]
        session = Session(s, self.services, client, connection.conn)
        refusal, warning = self._over_limit(client, count, total, _service(local))
        if refusal:  # (after an early greeting only when the rate grew in between)
            session.log(f"connect from {session.namaddr}")
            session.warn(warning)
            connection.write(refusal.encode() + b"\r\n")
            await connection.drain()
            session.log(f"disconnect from {session.namaddr} commands=0/0")
            return
        if not greeted:  # input that arrived before the greeting (3.7.6+ pipelining check)
            early = connection.conn.buffered(100)
        await session.start(early, greeted)
        try:
            await self._loop(connection, session)
        finally:
            session.finish()

    async def _flush(self, connection: Connection, session: Session) -> bool:
        """Write the queued replies as smtpd's output buffer does: held while commands are
        pending, sent after each tarpit sleep together with the delayed reply. False when
        the client did not take the output in time (smtpd_timeout, smtpd_session_deadline)."""
        out = session.out
        if not out:
            return await connection.drain()
        if len(out) == 1 and out[0][0] <= 0:  # the common case: one reply, no tarpit
            connection.write(out.pop()[1])
            return await connection.drain()
        held = bytearray()
        while out:
            delay, data = out.pop(0)
            if delay > 0:
                metrics = self.services.metrics
                metrics.tarpit(1, delay)
                try:
                    await self.sleep(delay)  # type: ignore[misc]
                finally:
                    metrics.tarpit(-1)
                connection.write(bytes(held) + data)
                held.clear()
                if not await connection.drain():
                    return False
            else:
                held += data
        if held:
            connection.write(bytes(held))
        return await connection.drain()

    async def _loop(self, connection: Connection, session: Session) -> None:
        conn = connection.conn
        deadlines = connection.deadlines
        while not session.closing:
            if conn.mode is Mode.COMMAND and session.over_hard_limit():
                break
            event = conn.next_event()
            if event is NEED_DATA:
                if not (await self._flush(connection, session) and await connection.read()):
                    session.timed_out()
                    break
                continue
            if isinstance(event, Closed):
                session.lost(event)
                return
            await session.handle(event)
            deadlines.new_request()
        if not connection.gone:
            await self._flush(connection, session)
