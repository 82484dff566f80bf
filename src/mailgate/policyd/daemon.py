"""`mailgate policyd -c DIR`: the policy server's sockets (TCP and UNIX) and process."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import signal
import socket
import stat
from collections import deque
from pathlib import Path

from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings, host_port
from mailgate.errors import ConfigError
from mailgate.maillog import MailLog
from mailgate.master import address, listen_socket
from mailgate.metrics import create as create_metrics
from mailgate.policy.protocol import PolicyReader, ProtocolError, Request, reply
from mailgate.policyd.server import ClientErrors, PolicydSettings, PolicyService, SharedErrors
from mailgate.privileges import Owner, drop, hand_file, hand_over, mail_owner, preload
from mailgate.state.open import open_store
from mailgate.state.settings import StateSettings

PROGRAM = "policyd"


def bind(items: tuple[str, ...], origin: str) -> list[socket.socket]:
    """Listening sockets for `policyd_listen`: `host:port`, `inet:host:port`, `unix:/path`."""
    out = []
    for item in items:
        if item.startswith("unix:"):
            path = item[5:]
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)  # a socket left by an earlier run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
            except OSError as exc:
                raise ConfigError(f"{origin}: bind {path}: {exc.strerror}") from exc
            os.chmod(path, 0o666)  # Postfix's smtpd runs as another user
            sock.listen(4096)
        else:
            where = host_port(item.removeprefix("inet:"))
            if where is None:
                raise ConfigError(f"{origin}: bad policyd_listen address: {item!r} (use "
                                  "host:port, [ipv6]:port or unix:/path)")
            try:
                sock = listen_socket(where.host, where.port)
            except OSError as exc:
                raise ConfigError(f"{origin}: bind {item}: {exc.strerror}") from exc
        sock.setblocking(False)
        out.append(sock)
    return out


class PolicyConnection(asyncio.Protocol):
    """One client connection: requests answered in order by a worker of its own (so a
    request waiting for DNS holds only its connection). The connection lives as long as the
    client keeps it (Postfix closes it after max_idle / max_ttl). A protocol, not streams,
    and one long-lived worker, not a task per request: both cost more than the engine does
    for a table-only request."""

    def __init__(self, service: PolicyService, deadlines: Deadlines) -> None:
        self.service = service
        self.deadlines = deadlines
        self.parser = PolicyReader()
        self.queue: deque[Request | ProtocolError] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "unix"
        self.started = 0.0  # when the request being answered arrived (0: none)
        self.expired = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"

    def data_received(self, data: bytes) -> None:
        items = self.parser.feed(data)
        if not items:
            return
        self.queue.extend(items)
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.deadlines.active.discard(self)
        if self.worker is not None:
            self.worker.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while self.transport is not None:
            while self.queue:
                item = self.queue.popleft()
                self.started = loop.time()
                self.deadlines.active.add(self)
                try:
                    action, delay = await self.service.answer(item, self.peer)
                except asyncio.CancelledError:
                    if not self.expired:
                        raise
                    self.expired = False
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
                    action, delay = self.service.expired(item, self.peer), 0.0
                self.deadlines.active.discard(self)
                self.service.metrics.policyd(action, loop.time() - self.started)
                self.started = 0.0
                if delay:
                    await asyncio.sleep(delay)  # the tarpit, past the deadline's reach
                if self.transport is None:
                    return
                self.transport.write(reply(action))
            self.waiter = loop.create_future()
            await self.waiter
            self.waiter = None

    def expire(self) -> None:
        """The deadline passed: the request being answered gets the default action."""
        if self.worker is not None and self.started and not self.expired:
            self.expired = True
            self.worker.cancel()


class Deadlines:
    """Enforces `policyd_reply_deadline` by a sweep every tenth of it, not a timer per
    request: a request that waits too long (DNS, a chained policy service) is cancelled."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.active: set[PolicyConnection] = set()
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in [c for c in self.active if now - c.started >= self.deadline]:
            self.active.discard(conn)
            conn.expire()
        self.handle = loop.call_later(max(self.deadline / 10, 0.05), self.start)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


async def main(cfg: Config, sockets: list[socket.socket], errors: ClientErrors,
               metrics: bool = False, owner: Owner | None = None) -> None:
    """One policyd process: an event loop serving the shared sockets; with `owner`, it
    loads its tables as root, then becomes mail_owner before the first request."""
    from mailgate.app import build_engine, build_resolver, interface_addresses
    from mailgate.maps import MapOptions, default_registry

    loop = asyncio.get_running_loop()
    smtpd = SmtpdSettings.from_config(cfg)
    log = MailLog.from_config(cfg)
    log.batch_in(loop)
    registry = default_registry(MapOptions.from_config(cfg))
    policyd_log = functools.partial(log.log, PROGRAM)
    local = interface_addresses(cfg, [a.host for a in smtpd.listen])
    resolver = build_resolver(cfg, registry, local, policyd_log)
    counted = create_metrics(metrics)
    state = open_store(StateSettings.from_config(cfg),
                       lambda text: log.log(PROGRAM, f"warning: {text}"),
                       observe=counted.state_backend)
    if state.shared:
        counted.state_backend(True)
    engine, _ = build_engine(cfg, registry, resolver, policyd_log, local, policyd=True,
                             metrics=counted, state=state)
    settings = PolicydSettings.from_config(cfg)
    service = PolicyService(engine, settings, smtpd, policyd_log,
                            SharedErrors(state, settings.state_ttl) if state.shared
                            else errors, counted)
    counted.start(loop)
    drop(owner)

    gc.freeze()  # the tables and settings live forever: keep them out of collections
    deadlines = Deadlines(service.s.deadline)
    deadlines.start()

    def protocol() -> PolicyConnection:
        return PolicyConnection(service, deadlines)

    servers = []
    for sock in sockets:
        if sock.family == socket.AF_UNIX:
            servers.append(await loop.create_unix_server(protocol, sock=sock, backlog=4096))
        else:
            servers.append(await loop.create_server(protocol, sock=sock, backlog=4096))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log.reopen)
    await stop.wait()
    for server in servers:
        server.close()
    deadlines.stop()
    if engine.tables.dns is not None:
        engine.tables.dns.resolver.close()
    for client in engine.tables.policy.values():
        await client.close()
    counted.stop()
    log.batch_in(None)  # the loop ends: later lines are written at once
    log.close()


def run(cfg: Config) -> int:
    """Bind, print a readiness line, run `policyd_processes` workers until SIGTERM."""
    from mailgate.app import restriction_lists
    from mailgate.engine.greylist import GreylistSettings
    from mailgate.engine.settings import EngineSettings
    from mailgate.metrics import exporter
    from mailgate.policy.client import clients
    from mailgate.serve import raise_fd_limit, run_loop
    from mailgate.supervisor import run_workers

    settings = PolicydSettings.from_config(cfg)  # parameter errors before binding
    EngineSettings.from_config(cfg, policyd=True)
    GreylistSettings.from_config(cfg)  # greylist_action
    clients(cfg, restriction_lists(cfg, policyd=True))  # bad services
    raise_fd_limit()
    log = MailLog.from_config(cfg)
    http = exporter.listen(cfg, Path(cfg.get_str("queue_directory")) / "policyd" / "metrics")
    owner = mail_owner(cfg)  # started as root: requests are read as mail_owner
    state = Path(cfg.get_str("state_database")).parent
    state.mkdir(parents=True, exist_ok=True)  # greylisting's triplets (decision 0061)
    if owner is not None:
        preload(metrics=http is not None)
        hand_over([Path(cfg.get_str("queue_directory")) / "policyd" / "metrics", state], owner)
        hand_file(log.path, owner)
    sockets = bind(cfg.get_list("policyd_listen"), cfg.origin("policyd_listen"))
    for warning in (*cfg.warnings, *cfg.unused_parameters()):
        log.warning(PROGRAM, warning)
    log.log(PROGRAM, f"daemon started -- version {cfg.get_str('mail_version')}, "
            f"configuration {cfg.config_dir or '(embedded)'}")
    print("mailgate policyd: listening on " + " ".join(address(s) for s in sockets),
          flush=True)
    if http is not None:
        print(f"mailgate policyd: metrics on http://{address(http)}/metrics", flush=True)
    errors = ClientErrors(settings.state_ttl, settings.state_size)  # before the fork
    processes = cfg.get_int("policyd_processes") or os.cpu_count() or 1
    count, work, on_exit = exporter.processes(
        processes, lambda index: run_loop(main(cfg, sockets, errors, http is not None, owner)),
        http, None)

    def run_one(index: int) -> None:
        if index >= processes:  # the metrics process
            drop(owner)
        work(index)

    code = run_workers(count, run_one, lambda text: log.log(PROGRAM, text), log.reopen, PROGRAM,
                       on_exit)
    if not code:
        log.log(PROGRAM, "terminating on signal")
    log.close()
    return code
