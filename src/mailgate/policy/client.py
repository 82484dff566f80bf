"""A policy service client as Postfix's attr_clnt/auto_clnt: pooled connections with idle
and lifetime limits, a request limit, retries with a delay, and Postfix's warnings."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mailgate.config.config import Config
from mailgate.errors import ConfigError
from mailgate.policy import service
from mailgate.policy.protocol import encode
from mailgate.policy.service import ServiceSettings, service_names

Warn = Callable[[str], None]
_QUIET = (0, errno.EPIPE, errno.ENOENT, errno.ECONNRESET)  # not worth a warning on try 1


def strerror(code: int) -> str:
    """`%m` as Postfix prints it: errno 0 is "Application error"."""
    return os.strerror(code) if code else "Application error"


class _Conn:
    __slots__ = ("opened", "reader", "requests", "used", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 now: float) -> None:
        self.reader, self.writer = reader, writer
        self.opened = self.used = now
        self.requests = 0

    def close(self) -> None:
        self.writer.close()


@dataclass
class _Failure(Exception):
    code: int  # errno; 0 for a protocol error (already warned about)


class PolicyClient:
    """Requests to one policy service. Each request has a connection to itself (Postfix's
    smtpd process has one); idle connections are reused, at most `connection_limit` exist."""

    def __init__(self, settings: ServiceSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.s = settings
        self.clock = clock
        self.idle: list[_Conn] = []
        self.slots = asyncio.Semaphore(settings.connection_limit)
        self.sweep: asyncio.TimerHandle | None = None

    async def request(self, attrs: dict[str, str], warn: Warn,
                      pinned: dict[str, Any] | None = None) -> bytes | None:
        """The raw `action` value, or None when the service failed `try_limit` times (the
        caller then uses the default action).

        As attr_clnt_request(): a failed try is retried on a new connection after
        `retry_delay`; the last failed try leaves its connection as it is. Postfix keeps
        that connection for the rest of the SMTP session (its smtpd has one), so a server
        that closed it or answered late fails the session's next request at once; `pinned`
        (one dict per session, released by `release()`) keeps it the same way here."""
        data = encode(attrs)
        async with self.slots:
            count = 0
            conn = pinned.pop(self.s.name, None) if pinned is not None else None
            while True:
                code = 0
                try:
                    if conn is None:
                        conn = await self._access(warn)
                    if _readable(conn):
                        raise _Failure(0)  # out of step with the server: nothing is sent
                    action = await self._exchange(conn, data, warn)
                    self._done(conn)
                    return action
                except _Failure as failure:
                    code = failure.code
                count += 1
                if count >= self.s.try_limit or code not in _QUIET:
                    warn(f"problem talking to server {self.s.endpoint}: {strerror(code)}")
                if count >= self.s.try_limit:
                    if conn is not None and pinned is not None:
                        pinned[self.s.name] = conn
                    elif conn is not None:
                        conn.close()
                    return None
                await asyncio.sleep(self.s.retry_delay)
                if conn is not None:
                    conn.close()
                    conn = None

    def _done(self, conn: _Conn) -> None:
        conn.requests += 1
        if self.s.request_limit and conn.requests >= self.s.request_limit:
            conn.close()
        else:
            conn.used = self.clock()
            self.idle.append(conn)
            if self.sweep is None:
                self.sweep = asyncio.get_running_loop().call_later(
                    min(self.s.max_idle, self.s.max_ttl), self._sweep)

    def _stale(self, conn: _Conn, now: float) -> bool:
        """Postfix's event loop closes a connection the server closed (or that has input
        waiting), one idle for max_idle, or older than max_ttl, before the next request."""
        return (conn.writer.is_closing() or _readable(conn)
                or now - conn.used >= self.s.max_idle or now - conn.opened >= self.s.max_ttl)

    def _sweep(self) -> None:
        """Close idle connections past max_idle or max_ttl (Postfix's timers do it at
        once; a sweep is cheaper than a timer per request and late by at most one period)."""
        self.sweep = None
        now = self.clock()
        keep = []
        for conn in self.idle:
            if self._stale(conn, now):
                conn.close()
            else:
                keep.append(conn)
        self.idle[:] = keep
        if keep:
            self.sweep = asyncio.get_running_loop().call_later(
                min(self.s.max_idle, self.s.max_ttl), self._sweep)

    async def _access(self, warn: Warn) -> _Conn:
        """An idle connection that is still good, else a new one (auto_clnt_access)."""
        now = self.clock()
        while self.idle:
            conn = self.idle.pop()
            if self._stale(conn, now):
                conn.close()
                continue
            return conn
        try:
            if self.s.transport == "unix":
                opening = asyncio.open_unix_connection(self.s.path, limit=1 << 16)
            else:
                host, _, port = self.s.endpoint.rpartition(":")
                opening = asyncio.open_connection(host.strip("[]"), int(port), limit=1 << 16)
            reader, writer = await asyncio.wait_for(opening, self.s.timeout)
        except (TimeoutError, OSError, ValueError) as exc:
            code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.ETIMEDOUT
            if isinstance(exc, OSError) and exc.errno is None:
                code = errno.ECONNREFUSED
            warn(f"connect to {self.s.endpoint}: {strerror(code)}")
            raise _Failure(code) from None
        return _Conn(reader, writer, self.clock())

    async def _exchange(self, conn: _Conn, data: bytes, warn: Warn) -> bytes:
        try:
            conn.writer.write(data)
            return await asyncio.wait_for(self._reply(conn.reader, warn), self.s.timeout)
        except TimeoutError:
            raise _Failure(errno.ETIMEDOUT) from None
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _Failure(exc.errno or errno.ECONNRESET) from None
        except OSError as exc:
            raise _Failure(exc.errno or 0) from None

    async def _reply(self, reader: asyncio.StreamReader, warn: Warn) -> bytes:
        """attr_scan_plain() for `action`: other attributes are skipped, the first action
        wins, an empty line ends the reply."""
        action: bytes | None = None
        first = True
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if first and not exc.partial:
                    raise _Failure(0) from None  # the server closed: no warning of its own
                what = "name" if action is not None or b"=" not in exc.partial else "value"
                warn(f"premature end-of-input on {self.s.endpoint} while reading input "
                     f"attribute {what}")
                raise _Failure(0) from None
            except asyncio.LimitOverrunError:
                raise _Failure(0) from None
            first = False
            line = line[:-1]
            if not line:
                if action is None:
                    warn(f"missing attribute action in input from {self.s.endpoint}")
                    raise _Failure(0)
                return action
            name, eq, value = line.partition(b"=")
            if action is None and name == b"action":
                if not eq:
                    warn(f"missing value for string attribute action from {self.s.endpoint}")
                    raise _Failure(0)
                action = value

    async def close(self) -> None:
        if self.sweep is not None:
            self.sweep.cancel()
            self.sweep = None
        for conn in self.idle:
            conn.close()
        self.idle.clear()


def _readable(conn: _Conn) -> bool:
    """Input (or the end of it) waiting before a request is sent: Postfix's `readable()`
    check, the server is out of step. (StreamReader has no public peek.)"""
    reader = conn.reader
    return bool(getattr(reader, "_eof", False) or getattr(reader, "_buffer", b""))


def release(pinned: dict[str, Any]) -> None:
    """The SMTP session ended: close the connections its failed requests left open."""
    for conn in pinned.values():
        conn.close()
    pinned.clear()


def clients(cfg: Config, lists: Mapping[str, tuple[str, ...]]) -> dict[str, PolicyClient]:
    """A client for every check_policy_service endpoint in `lists`, the restriction lists by
    the parameter that sets each (the caller knows which parameters those are); a bad
    endpoint stops start-up with where that parameter is set (main.cf, line N)."""
    base = service.defaults(cfg)
    queue_directory = cfg.get_str("queue_directory")
    clients: dict[str, PolicyClient] = {}
    for param, names in lists.items():
        for name in service_names((names,)):
            if name not in clients:
                try:
                    clients[name] = PolicyClient(service.parse(name, base, queue_directory))
                except ConfigError as exc:
                    raise ConfigError(f"{cfg.origin(param)}: {exc}") from exc
    return clients
