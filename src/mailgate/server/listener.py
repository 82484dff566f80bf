"""The asyncio SMTP listener: the only code that reads and writes client sockets."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import Client
from mailgate.maps.matchlist import HostAddrList
from mailgate.master import ConnectionTable
from mailgate.server.deadline import Deadlines
from mailgate.server.session import Services, Session
from mailgate.smtp.protocol import NEED_DATA, Closed, Mode, ServerConnection

_READ = 65536


def _peek(sock: socket.socket | None) -> bytes:
    """Input that arrived before the greeting (the 3.7.6+ pre-greeting pipelining check)."""
    if sock is None:
        return b""
    # uvloop's transport sockets cannot recv(): peek through a second socket object on the
    # same descriptor, detached afterwards so that it does not close the descriptor.
    peek = socket.socket(sock.family, sock.type, 0, sock.fileno())
    try:
        return peek.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError, OSError):
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
        self.servers: list[asyncio.Server] = []
        self.sessions: set[asyncio.Task[None]] = set()

    async def start(self, sockets: list[socket.socket]) -> None:
        """Serve on listening sockets bound by the master (shared by every worker)."""
        for sock in sockets:
            server = await asyncio.start_server(self._accept, sock=sock, limit=_READ * 4,
                                                backlog=4096)  # asyncio would listen(100)
            self.servers.append(server)

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self.sessions):
            task.cancel()
        await asyncio.gather(*self.sessions, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        peer = writer.get_extra_info("peername") or ("unknown", 0)
        addr = str(peer[0])
        if addr.startswith("::ffff:") and "." in addr:
            addr = addr[7:]
        count, total = self.connections.connect(addr)
        metrics = self.services.metrics
        metrics.connection(1)
        try:
            await self._run(reader, writer, addr, int(peer[1]), count, total)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except RuntimeError:  # uvloop: a write to a transport the peer already closed
            if not writer.transport.is_closing():
                raise
        finally:
            metrics.connection(-1)
            self.connections.disconnect(addr)
            writer.close()
            self.sessions.discard(task)

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
        if not (s.connection_count_limit or s.connection_rate_limit) or self._exempt(client):
            return "", ""
        if s.connection_count_limit and count > s.connection_count_limit:
            return (f"421 4.7.0 {s.myhostname} Error: too many connections from {addr}",
                    f"Connection concurrency limit exceeded: {count} from {namaddr} "
                    f"for service {service}")
        if s.connection_rate_limit:
            rate = self.connections.rate(addr, time.time(), s.rate_time_unit)
            if rate > s.connection_rate_limit:
                return (f"421 4.7.0 {s.myhostname} Error: too many connections from {addr}",
                        f"Connection rate limit exceeded: {rate} from {namaddr} "
                        f"for service {service}")
        return "", ""

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   addr: str, port: int, count: int, total: int) -> None:
        s = self.settings
        deadlines = Deadlines(s, time.monotonic)  # the session deadline runs from accept
        conn = ServerConnection(s.line_length_limit, s.message_size_limit)
        client = await self.services.engine.connect(addr, port, s.peername_lookup)
        local = writer.get_extra_info("sockname")
        if isinstance(local, tuple):
            client.server_addr, client.server_port = local[0], local[1]
        session = Session(s, self.services, client, conn)
        refusal, warning = self._over_limit(client, count, total,
                                            _service(writer.get_extra_info("sockname")))
        if refusal:
            session.log(f"connect from {session.namaddr}")
            session.warn(warning)
            writer.write(refusal.encode() + b"\r\n")
            await self._drain(writer, deadlines)
            session.log(f"disconnect from {session.namaddr} commands=0/0")
            return
        # The transport may already have read early input into the stream's buffer.
        early = bytes(getattr(reader, "_buffer", b""))[:100] or \
            _peek(writer.get_extra_info("socket"))
        await session.start(early)
        try:
            await self._loop(reader, writer, session, conn, deadlines)
        finally:
            session.finish()

    async def _flush(self, writer: asyncio.StreamWriter, session: Session,
                     deadlines: Deadlines) -> bool:
        """Write the queued replies as smtpd's output buffer does: held while commands are
        pending, sent after each tarpit sleep together with the delayed reply. False when
        the client did not take the output in time (smtpd_timeout, smtpd_session_deadline)."""
        out = session.out
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
                writer.write(bytes(held) + data)
                held.clear()
                if not await self._drain(writer, deadlines):
                    return False
            else:
                held += data
        if held:
            writer.write(bytes(held))
        return await self._drain(writer, deadlines)

    @staticmethod
    async def _drain(writer: asyncio.StreamWriter, deadlines: Deadlines) -> bool:
        budget = deadlines.write_budget()
        try:
            async with asyncio.timeout(max(budget, 0.0)):
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()  # close() would wait for a client that does not read
            return False
        return True

    @staticmethod
    async def _read(reader: asyncio.StreamReader, conn: ServerConnection,
                    deadlines: Deadlines) -> bytes | None:
        """The next input (b"" at the end), or None when the time is up."""
        budget = deadlines.read_budget()
        if budget <= 0:
            return None
        started = time.monotonic()
        try:
            async with asyncio.timeout(budget):
                data = await reader.read(_READ)
        except TimeoutError:
            return None
        except ConnectionError:
            data = b""
        deadlines.charge_read(time.monotonic() - started, len(data),
                              conn.mode is Mode.DATA or conn.mode is Mode.BDAT)
        return data

    async def _loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    session: Session, conn: ServerConnection, deadlines: Deadlines) -> None:
        while not session.closing:
            if conn.mode is Mode.COMMAND and session.over_hard_limit():
                break
            event = conn.next_event()
            if event is NEED_DATA:
                data = await self._read(reader, conn, deadlines) \
                    if await self._flush(writer, session, deadlines) else None
                if data is None:
                    session.timed_out()
                    break
                conn.receive_data(data)
                continue
            if isinstance(event, Closed):
                session.lost(event)
                return
            await session.handle(event)
            deadlines.new_request()
        if not writer.transport.is_closing():
            await self._flush(writer, session, deadlines)
