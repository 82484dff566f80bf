"""The asyncio Dovecot authentication client of smtpd (smtpd_sasl_type = dovecot, smtpd_sasl_path).

One `DovecotClient` per smtpd worker: one connection, opened when first needed and again after
it failed, shared by every session; each AUTH gets its own request id and its replies are
routed to it. A session drives one `Exchange` per AUTH command (docs/sasl.md):

    mechanisms = await client.mechanisms(options)          # for EHLO; raises AuthUnavailable
    exchange = client.exchange("LOGIN", offered=mechanisms, local_addr=..., remote_addr=...)
    outcome = await exchange.step(initial_response)       # AUTH; later steps send CONT
    exchange.cancel()                                     # the client sent "*"
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailgate.errors import ConfigError, MailgateError
from mailgate.sasl.protocol import (
    CANNOT_CONNECT,
    CONNECTION_LOST,
    INVALID_CONTINUED,
    INVALID_MECHANISM,
    Challenge,
    Failure,
    Handshake,
    HandshakeReader,
    LineReader,
    Outcome,
    ProtocolError,
    RemoteProtocolError,
    Reply,
    SecurityOptions,
    TemporaryFailure,
    client_handshake,
    first_check,
    format_auth,
    format_cont,
    is_valid_base64,
    offered_mechanisms,
    outcome,
    parse_reply,
)

AUTH_TIMEOUT = 10.0  # Postfix's AUTH_TIMEOUT: connect, handshake, and each reply
MAX_REQUEST_ID = 2**32 - 1  # Postfix's request_id_counter is an unsigned int
Warn = Callable[[str], None]


def _no_warning(text: str) -> None:
    """The default `warn`: drop the text."""


class AuthUnavailable(MailgateError):
    """The authentication server cannot be used now; `reason` is the text for the 454 reply."""

    def __init__(self, reason: str, sets_reply: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sets_reply = sets_reply  # see TemporaryFailure


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the server listens: a UNIX socket `unix`, or `host`:`port`. `name` is the
    smtpd_sasl_path as configured, for warnings."""

    name: str
    unix: str | None = None
    host: str = ""
    port: int = 0


def parse_sasl_path(path: str, base: Path) -> Endpoint:
    """smtpd_sasl_path for Dovecot: `inet:host:port` (`inet:[v6addr]:port`), `unix:path` or a
    path; a relative path is relative to `base` (Postfix: the queue directory, where smtpd
    runs). Raises ConfigError for an inet address without a numeric port."""
    if path.startswith("inet:"):
        hostport = path[5:]
        host, sep, port = hostport.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f'smtpd_sasl_path = {path}: expected "inet:host:port"')
        return Endpoint(path, host=host, port=int(port))
    unix = path[5:] if path.startswith("unix:") else path
    if not unix:
        raise ConfigError("smtpd_sasl_path is empty")
    return Endpoint(path, unix=str(base / unix))


class _Connection:
    """One open connection after its handshake: the writer, and the requests waiting for
    their next reply (id → future), fed by a reader task."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handshake: Handshake, lines: LineReader, warn: Warn) -> None:
        self.writer = writer
        self.handshake = handshake
        self.waiting: dict[int, asyncio.Future[Reply]] = {}
        self.alive = True
        self.lost = False  # the server closed it (Postfix notices at the next request)
        self._warn = warn
        self._task = asyncio.get_running_loop().create_task(self._read(reader, lines))

    async def _read(self, reader: asyncio.StreamReader, lines: LineReader) -> None:
        try:
            while data := await reader.read(65536):
                for line in lines.feed(data):
                    self._dispatch(line)
        except RemoteProtocolError as e:  # a line too long: out of step with the server
            self._warn(str(e))
        except OSError:
            pass
        self.lost = True
        self.close()

    def _dispatch(self, line: str) -> None:
        try:
            reply = parse_reply(line)
        except RemoteProtocolError as e:
            self._warn(str(e))  # Postfix warns and reads on
            return
        if reply is None:
            return
        future = self.waiting.pop(reply.request_id, None)
        if future is not None and not future.done():  # else forgotten: ignored, as Postfix
            future.set_result(reply)

    def send(self, data: bytes) -> bool:
        """Write a request; False when the connection is already closing."""
        if not self.alive or self.writer.transport.is_closing():
            self.close()
            return False
        self.writer.write(data)
        return True

    def close(self) -> None:
        """Drop the connection: every waiting request fails with ConnectionError."""
        self.alive = False
        self.writer.close()
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(ConnectionError(CONNECTION_LOST))
        if self._task is not asyncio.current_task():
            self._task.cancel()


class DovecotClient:
    """The connection of one smtpd worker to the Dovecot auth server (Postfix's
    XSASL_DOVECOT_SERVER_IMPL). `timeout` bounds the connect with its handshake and the wait
    for each reply; `pid` is sent as CPID; `warn` gets Postfix's warning texts."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = AUTH_TIMEOUT,
                 pid: int | None = None, warn: Warn = _no_warning) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.pid = os.getpid() if pid is None else pid
        self.warn = warn
        self._conn: _Connection | None = None
        self._handshake: Handshake | None = None  # the last one read
        self._lock = asyncio.Lock()
        self._last_id = 0

    async def mechanisms(self, options: SecurityOptions) -> tuple[str, ...]:
        """The mechanisms to announce with these smtpd_sasl_security_options (connects when
        needed). Once a handshake was read, its list stands while the server is away (as a
        Postfix smtpd keeps it: AUTH then gets 454); before that, AuthUnavailable."""
        conn = self._conn
        if conn is not None and (conn.alive or conn.lost) and self._handshake is not None:
            handshake = self._handshake  # a lost one is noticed by the next AUTH only
        else:
            try:
                handshake = (await self.connection()).handshake
            except AuthUnavailable:
                if self._handshake is None:
                    raise
                handshake = self._handshake
        return offered_mechanisms(handshake, options)

    def exchange(self, mechanism: str, *, offered: Sequence[str], local_addr: str,
                 remote_addr: str, secured: bool = False) -> Exchange:
        """One AUTH command's exchange. `offered` is what EHLO announced (the mechanism must
        be one of them); `secured` = the session uses TLS."""
        return Exchange(self, mechanism, tuple(offered), local_addr, remote_addr, secured)

    async def connection(self) -> _Connection:
        """The open connection, connecting and reading the handshake when there is none.
        Raises AuthUnavailable (with a warning) when that fails."""
        async with self._lock:
            if self._conn is not None and self._conn.alive:
                return self._conn
            lost = self._conn is not None and self._conn.lost
            self._conn = None
            try:
                async with asyncio.timeout(self.timeout):
                    self._conn = await self._connect()
                self._handshake = self._conn.handshake
            except (OSError, TimeoutError) as e:
                if lost:  # Postfix writes to the closed connection and reads its end
                    raise AuthUnavailable(CONNECTION_LOST) from e
                what = e.strerror if isinstance(e, OSError) and e.strerror else "timed out"
                self.warn(f"SASL: Connect to Dovecot auth socket '{self.endpoint.name}' "
                          f"failed: {what}")
                raise AuthUnavailable(CANNOT_CONNECT, sets_reply=False) from e
            except RemoteProtocolError as e:
                self.warn(str(e))
                raise AuthUnavailable(CANNOT_CONNECT, sets_reply=False) from e
            return self._conn

    async def _connect(self) -> _Connection:
        ep = self.endpoint
        if ep.unix is not None:
            reader, writer = await asyncio.open_unix_connection(ep.unix)
        else:
            reader, writer = await asyncio.open_connection(ep.host, ep.port)
        try:
            writer.write(client_handshake(self.pid))
            lines, shake = LineReader(), HandshakeReader()
            while data := await reader.read(65536):
                for line in lines.feed(data):
                    handshake = shake.feed(line)
                    if handshake is not None:
                        return _Connection(reader, writer, handshake, lines, self.warn)
            raise ConnectionResetError(0, "connection closed during the handshake")
        except BaseException:
            writer.close()
            raise

    def next_id(self) -> int:
        """The next request id: 1, 2, … for the life of the client (over reconnections)."""
        self._last_id = self._last_id % MAX_REQUEST_ID + 1
        return self._last_id

    async def close(self) -> None:
        """Close the connection (requests waiting on it get a TemporaryFailure)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Exchange:
    """One AUTH command's conversation with the server (xsasl_dovecot_server_first/next).
    `step()` returns a Challenge while the mechanism needs more, then a final outcome
    (Success, Failure, TemporaryFailure); `done` tells which. Raises ProtocolError (from
    protocol.py) when stepped after the end."""

    def __init__(self, client: DovecotClient, mechanism: str, offered: tuple[str, ...],
                 local_addr: str, remote_addr: str, secured: bool) -> None:
        self.client = client
        self.mechanism = mechanism
        self.offered = offered
        self.local_addr, self.remote_addr, self.secured = local_addr, remote_addr, secured
        self.request_id = 0
        self.done = False
        self._conn: _Connection | None = None

    async def step(self, response: str | None = None) -> Outcome:
        """The first step sends AUTH (`response` = the initial response, base64, or None);
        the next ones send CONT with the client's base64 `response`."""
        if self.done:
            raise ProtocolError("the exchange is over")
        result = await (self._first(response) if self._conn is None else self._next(response))
        self.done = not isinstance(result, Challenge)
        return result

    async def _first(self, response: str | None) -> Outcome:
        refused = first_check(self.mechanism, self.offered, response)
        if refused is not None:
            return refused
        for _attempt in (1, 2):  # a connection found closed is replaced once, as Postfix
            try:
                conn = await self.client.connection()
            except AuthUnavailable as e:
                return TemporaryFailure(e.reason, e.sets_reply)
            if self.mechanism.upper() not in (
                    m.name.upper() for m in conn.handshake.mechanisms):
                return Failure(INVALID_MECHANISM)  # Dovecot drops a client asking for it
            self.request_id = self.client.next_id()
            data = format_auth(self.request_id, self.mechanism, local_addr=self.local_addr,
                               remote_addr=self.remote_addr, secured=self.secured,
                               initial_response=response)
            future = self._wait(conn)
            if conn.send(data):
                self._conn = conn
                return await self._reply(conn, future)
        return TemporaryFailure(CANNOT_CONNECT)

    async def _next(self, response: str | None) -> Outcome:
        assert self._conn is not None
        if response is None or not is_valid_base64(response):
            return Failure(INVALID_CONTINUED)
        future = self._wait(self._conn)
        if not self._conn.send(format_cont(self.request_id, response)):
            return TemporaryFailure(CONNECTION_LOST)
        return await self._reply(self._conn, future)

    def _wait(self, conn: _Connection) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        conn.waiting[self.request_id] = future
        return future

    async def _reply(self, conn: _Connection, future: asyncio.Future[Reply]) -> Outcome:
        try:
            async with asyncio.timeout(self.client.timeout):
                reply = await future
        except TimeoutError:
            self.client.warn(f"SASL: timeout waiting for Dovecot auth socket "
                             f"'{self.client.endpoint.name}' (request {self.request_id})")
            return TemporaryFailure(CONNECTION_LOST)
        except ConnectionError:
            conn.lost = False  # said once: the next request reconnects (and may fail to)
            return TemporaryFailure(CONNECTION_LOST)
        finally:
            if conn.waiting.get(self.request_id) is future:
                del conn.waiting[self.request_id]
        warnings: list[str] = []
        result = outcome(reply, warnings)
        for text in warnings:
            self.client.warn(text)
        return result

    def cancel(self) -> None:
        """The SMTP client gave up (`*`): forget the request, as Postfix does (nothing is sent;
        a late reply is ignored)."""
        self.done = True
        if self._conn is not None:
            future = self._conn.waiting.pop(self.request_id, None)
            if future is not None:
                future.cancel()
