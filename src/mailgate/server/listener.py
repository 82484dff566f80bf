"""The asyncio SMTP listener: accepts or adopts connections and runs one session per client.

One `asyncio.Protocol` per connection (server/connection.py) feeds the sans-IO core
straight from `data_received` (no StreamReader, no timeout object per read) and one
coroutine per session runs the Session against it. Time limits use one timer per
connection, re-armed only when it fires early; output is written once per batch of replies
and drained only when the transport's buffer is full.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import time
from collections.abc import Callable, Sequence

from mailgate.acceptor import Greeter, Handed, Handoff, client_address
from mailgate.anvil import ConnectionTable
from mailgate.config.settings import SmtpdSettings
from mailgate.maps.matchlist import HostAddrList
from mailgate.server.connection import Connection
from mailgate.server.limits import ClientLimits, service_name
from mailgate.server.postscreen import Postscreen, SessionFactory
from mailgate.server.proxied import proxy_failed, proxy_header
from mailgate.server.session import Services, Session
from mailgate.server.sharedlimits import SiteCounts
from mailgate.server.tls import describe
from mailgate.smtp.protocol import NEED_DATA, Closed, Mode, ServerConnection


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


class SmtpServer:
    """Accepts connections and runs one Session per client, bounded by connection limits."""

    def __init__(self, settings: SmtpdSettings, services: Services,
                 limit_exceptions: HostAddrList, connections: ConnectionTable,
                 sleep: Callable[[float], object] = asyncio.sleep,
                 name: str | None = None) -> None:
        self.settings = settings
        self.services = services
        self.connections = connections
        self.sleep = sleep
        self.servers: list[asyncio.AbstractServer] = []
        self.loop: asyncio.AbstractEventLoop  # the worker's loop, set by start()
        self.sessions: set[asyncio.Task[None]] = set()
        state = services.engine.tables.state
        self.greeter = Greeter.from_settings(settings, shared=state.shared)
        self.handoff: Handoff | None = None
        self.worker = 0
        self.channel: socket.socket | None = None
        self.routes: tuple[SmtpServer, ...] = ()  # by listener index (start_handed)
        self.live: set[Connection] = set()  # the connections with a session running
        self.name = name  # the master.cf service name (None: from the listening address)
        self.postscreen: Postscreen | None = None  # a postscreen listener (decision 0065)
        self.limits = ClientLimits(settings, connections, limit_exceptions,
                                   services.xclient_hosts,
                                   SiteCounts(state, settings.rate_time_unit,
                                              settings.site_count_cache)
                                   if state.shared else None)

    async def start(self, sockets: list[socket.socket]) -> None:
        """Serve on listening sockets bound by the master (shared by every worker)."""
        loop = self.loop = asyncio.get_running_loop()
        for sock in sockets:
            server = await loop.create_server(lambda: Connection(self), sock=sock,
                                              backlog=4096)  # asyncio would listen(100)
            self.servers.append(server)

    async def start_handed(self, handoff: Handoff, worker: int,
                           routes: Sequence[SmtpServer] = ()) -> None:
        """Serve the connections that the accept process hands to worker `worker`; with
        `routes` (the server of each listener, by index: master.cf services), this server
        reads the channel for all of them."""
        loop = self.loop = asyncio.get_running_loop()
        for server in (self, *routes):
            server.loop, server.handoff, server.worker = loop, handoff, worker
        self.routes = tuple(routes)
        self.channel = handoff.channel(worker)
        loop.add_reader(self.channel.fileno(), self._receive)

    def _receive(self) -> None:
        assert self.handoff is not None and self.channel is not None
        routes = self.routes
        for handed in self.handoff.receive(self.worker, self.channel):
            server = routes[handed.listener] if handed.listener < len(routes) else self
            task = self.loop.create_task(server._adopt(handed))
            server.sessions.add(task)
            task.add_done_callback(server.sessions.discard)

    async def _adopt(self, handed: Handed) -> None:
        """A connection counted and perhaps greeted by the accept process: its session."""
        assert self.handoff is not None
        try:
            wrapped = self.settings.tls.wrappermode
            try:  # wrapper mode: the handshake first (uvloop reads before anything could
                # pause the transport, so start_tls would miss the client's hello)
                made: list[Connection] = []

                def factory() -> Connection:
                    made.append(Connection(self, adopted=True))
                    return made[-1]

                await self.loop.connect_accepted_socket(
                    factory, handed.sock,
                    ssl=self.services.tls_context if wrapped else None,
                    ssl_handshake_timeout=self.settings.tls.starttls_timeout if wrapped
                    else None)
            except (TimeoutError, OSError, ssl.SSLError, asyncio.CancelledError) as exc:
                handed.sock.close()
                if wrapped and not isinstance(exc, asyncio.CancelledError):
                    await self._wrapper_failed(handed, exc)
                self.connections.disconnect(self.greeter.key(handed.addr))
                return
            connection = made[0]  # (with ssl=, uvloop returns its SSL protocol instead)
            self.services.metrics.connection(1)
            if handed.greeted:
                self.services.metrics.reply(220)
            await self._accept(connection, handed.addr, handed.port, handed.count,
                               handed.total, handed.greeted, handed.early)
        finally:
            self.handoff.finished(self.worker)

    async def _wrapper_failed(self, handed: Handed, exc: BaseException) -> None:
        """A wrapper-mode handshake that failed: Postfix's connect, SSL_accept error, lost
        connection and disconnect lines."""
        s = self.settings
        client = await self.services.engine.connect(handed.addr, handed.port,
                                                    s.peername_lookup)
        session = Session(s, self.services, client,
                          ServerConnection(s.line_length_limit, s.message_size_limit))
        session.log(f"connect from {session.namaddr}")
        session.tls_failed(exc, counted=False)
        session.finish()

    def stop_accepting(self) -> None:
        """No new sessions: take what the (stopped) accept process handed over, then stop
        reading its channel; close the listening sockets."""
        if self.channel is not None:
            self._receive()
            self.loop.remove_reader(self.channel.fileno())
            self.channel = None
        for server in self.servers:
            server.close()

    async def stop(self, drain: float = 0.0) -> None:
        """Stop: sessions may finish for `drain` seconds; then the ones waiting for a
        command get `421 4.3.2 HOST Service shutting down`, and every one still there ends."""
        self.stop_accepting()
        sessions = list(self.sessions)
        if drain > 0 and sessions:
            await asyncio.wait(sessions, timeout=drain)
        text = f"421 4.3.2 {self.settings.myhostname} Service shutting down\r\n".encode()
        for connection in list(self.live):
            if not connection.gone and connection.conn.mode is Mode.COMMAND:
                connection.write(text)
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
        key = self.greeter.key(addr)
        count, total = self.connections.connect(key)
        self.services.metrics.connection(1)
        greeted = self.greeter.early(self.connections, key, count, total)
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
        connection.counted = self.greeter.key(addr)
        self.live.add(connection)
        try:
            await self._run(connection, addr, port, count, total, greeted, early)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.live.discard(connection)
            self.services.metrics.connection(-1)
            self.connections.disconnect(connection.counted, time.time(),
                                        self.settings.rate_time_unit)
            if connection.site_counted and self.limits.site is not None:
                self.limits.site.disconnect(connection.counted)
            connection.close()

    async def _run(self, connection: Connection, addr: str, port: int, count: int,
                   total: int, greeted: bool, early: bytes) -> None:
        s = self.settings
        transport = connection.transport
        assert transport is not None
        local = transport.get_extra_info("sockname")
        server: tuple[str, int] | None = (local[0], local[1]) if isinstance(local, tuple) \
            else None
        if s.upstream_proxy:  # the PROXY header names the client (smtpd_peer_from_haproxy)
            proxied = await proxy_header(s, connection)
            if isinstance(proxied, str):
                await proxy_failed(s, self.services, connection, proxied, addr, port)
                return
            if proxied.client is not None:
                (addr, port), server = proxied.client, proxied.server
                self.connections.disconnect(connection.counted)  # count the real client
                connection.counted = self.greeter.key(addr)
                count, total = self.connections.connect(connection.counted)
        make_session: SessionFactory = Session
        if self.postscreen is not None:  # its tests before smtpd's session, if any
            screened = await self.postscreen.screen(connection, addr, port, server, count)
            if screened is None:
                return
            make_session = screened
        client = await self.services.engine.connect(addr, port, s.peername_lookup)
        if server is not None:
            client.server_addr, client.server_port = server
        session = make_session(s, self.services, client, connection.conn)
        session.service = self.name or service_name(local)
        key = connection.counted
        limits = self.limits
        ident = limits.ident(client, session.service, key)
        if ident:  # (else the session's event_rate() and counted_rate() count nothing)
            session.event_rate = functools.partial(limits.event_rate, key, ident)
            session.counted_rate = functools.partial(limits.counted_rate, key, ident)
        if ident and limits.site is not None:
            # (uncounted when the connection ends; over smtpd_max_connections, never counted)
            connection.site_counted = total <= s.max_connections
        refusal, warning = await limits.over_limit(client, count, total, session.service,
                                                   key, ident)
        if refusal:  # (after an early greeting only when the rate grew in between)
            session.log(f"connect from {session.namaddr}")
            if warning:
                session.warn(warning)
            connection.write(refusal.encode() + b"\r\n")
            await connection.drain()
            session.log(f"disconnect from {session.namaddr} commands=0/0")
            return
        wrapped = s.tls.wrappermode
        if not greeted and not wrapped:  # input before the greeting (3.7.6+ pipelining check)
            early = connection.conn.buffered(100)
        handshake = (lambda: self._wrapped(connection, session)) if wrapped else None
        await session.start(b"" if wrapped else early, greeted, handshake)
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

    async def _starttls(self, connection: Connection, session: Session) -> bool:
        """After `220 2.0.0 Ready to start TLS`: send it, drop plaintext the client
        pipelined behind STARTTLS (CVE-2011-0411), then the handshake."""
        if connection.gone or connection.transport is None:
            session.tls_failed(ConnectionResetError(), counted=True)
            return False
        connection.transport.pause_reading()  # the client's hello is for start_tls to read
        if not await self._flush(connection, session):
            session.timed_out()
            return False
        connection.conn.discard_input()
        return await self._handshake(connection, session, counted=True)

    async def _handshake(self, connection: Connection, session: Session,
                         counted: bool) -> bool:
        """The server side of a TLS handshake on the connection (the session's other
        coroutines wait; other sessions do not), bounded by smtpd_starttls_timeout."""
        context = self.services.tls_context
        assert context is not None and connection.transport is not None
        try:
            transport = await self.loop.start_tls(
                connection.transport, connection, context, server_side=True,
                ssl_handshake_timeout=self.settings.tls.starttls_timeout)
        except Exception as exc:  # whatever the client did: logged, never a crash
            session.tls_failed(exc, counted)
            connection.transport.abort()
            connection.gone = True
            return False
        if transport is None:  # the connection closed during the handshake
            session.tls_failed(ConnectionResetError(), counted)
            return False
        connection.transport = transport
        session.tls_started(describe(transport.get_extra_info("ssl_object"),
                                     self.settings.tls), counted)
        return True

    async def _wrapped(self, connection: Connection, session: Session) -> bool:
        """Wrapper mode: the handshake was made when the connection was adopted."""
        assert connection.transport is not None
        ssl_object = connection.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            session.tls_failed(ConnectionResetError(), counted=False)
            return False
        session.tls_started(describe(ssl_object, self.settings.tls), counted=False)
        return True

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
            if session.starttls_pending and not await self._starttls(connection, session):
                break
        if not connection.gone:
            await self._flush(connection, session)
