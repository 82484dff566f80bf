"""The master process: binds the listeners, recovers the queue, runs and watches smtpd workers.

Like Postfix's master(8): one process owns the listening sockets and starts
`smtpd_processes` workers that inherit them (the kernel spreads connections over them). Each
worker runs one event loop with sessions, its own queue manager and Maildir agents. State
that must be shared (per-client connection counts, the global session count) lives in a
small shared-memory table. Workers die with the master (PR_SET_PDEATHSIG), so `kill -9` of
the master stops everything and a restart recovers the queue.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import multiprocessing
import os
import select
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailgate.config.settings import ListenAddress

_BUCKETS = 65536
_SLOT = struct.Struct("=i")
_RATE = struct.Struct("=qi")  # window start (s), connections in the window
EVENTS = ("auth", "newtls")  # smtpd_client_auth_rate_limit, ..._new_tls_session_rate_limit


class ConnectionTable:
    """Concurrent-connection counts shared by all workers (anvil's count, in shared memory).

    Addresses are hashed into 65,536 buckets; the last slot holds the total.
    """

    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, _SLOT.size * (_BUCKETS + 1))
        self._rates = mmap.mmap(-1, _RATE.size * _BUCKETS)
        # anvil's other rates: AUTH commands and new TLS sessions, per client
        self._events = {kind: mmap.mmap(-1, _RATE.size * _BUCKETS) for kind in EVENTS}
        self._deaths = mmap.mmap(-1, _SLOT.size)
        self._lock = multiprocessing.Lock()

    def worker_died(self) -> None:
        """The master counts each worker that died (only the master writes this slot)."""
        _SLOT.pack_into(self._deaths, 0, self.deaths() + 1)

    def deaths(self) -> int:
        """Workers died so far: a change tells the queue-running worker to claim their mail."""
        value: int = _SLOT.unpack_from(self._deaths, 0)[0]
        return value

    def _index(self, addr: str) -> int:
        return (zlib.crc32(addr.encode()) % _BUCKETS) * _SLOT.size

    def _add(self, offset: int, delta: int) -> int:
        value: int = max(_SLOT.unpack_from(self._mem, offset)[0] + delta, 0)
        _SLOT.pack_into(self._mem, offset, value)
        return value

    def connect(self, addr: str) -> tuple[int, int]:
        """Count a new connection; return (connections from addr, all connections)."""
        with self._lock:
            return (self._add(self._index(addr), 1), self._add(_BUCKETS * _SLOT.size, 1))

    def rate(self, addr: str, now: float, unit: float, count: bool = True,
             event: str = "") -> int:
        """Count a connection (or an `event` of EVENTS) in the client's current
        `unit`-second window (anvil's rate: the window starts with the first event and
        restarts when it has passed); with `count` false, what the count would be, without
        counting."""
        table = self._events[event] if event else self._rates
        offset = (zlib.crc32(addr.encode()) % _BUCKETS) * _RATE.size
        with self._lock:
            start, seen = _RATE.unpack_from(table, offset)
            if not seen or now - start >= unit:
                start, seen = int(now), 0
            if count:
                _RATE.pack_into(table, offset, start, seen + 1)
            return int(seen) + 1

    def disconnect(self, addr: str) -> None:
        with self._lock:
            self._add(self._index(addr), -1)
            self._add(_BUCKETS * _SLOT.size, -1)


def listen_socket(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A TCP listening socket on host:port (IPv6 only for an IPv6 host; port 0: any free
    port), for the smtpd, policyd and metrics listeners. OSError if it cannot listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def address(sock: socket.socket) -> str:
    """A listening socket's address as readiness lines show it: `host:port`, `[v6]:port`,
    `unix:/path`."""
    where = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{where}"
    return f"[{where[0]}]:{where[1]}" if sock.family == socket.AF_INET6 else \
        f"{where[0]}:{where[1]}"


def bind(listen: tuple[ListenAddress, ...]) -> list[socket.socket]:
    """Create the listening sockets (port 0 picks a free port once, for every worker)."""
    sockets = []
    for addr in listen:
        sock = listen_socket(addr.host, addr.port)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def accept_stop_signals() -> None:
    """In a worker of a Generation that `holds_signals`: its handlers are in place, let
    SIGTERM/SIGINT/SIGHUP (held since the fork) through."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _spawn(index: int, worker: Callable[[int], None], master_pid: int,
           holds_signals: bool = False) -> int:
    """Fork one worker; in the child run `worker(index)` and never return."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        _die_with_parent()
        if os.getppid() != master_pid:
            os._exit(1)
        signal.set_wakeup_fd(-1)  # the master's wakeup pipe is the master's
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD,
                    signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        if not holds_signals:  # (else the worker lets them through once it handles them)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # held by the fork
        worker(index)
    except BaseException as exc:  # a worker must never return into the master's code
        print(f"mailgate: worker {index}: {exc!r}", file=sys.stderr)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


@dataclass(eq=False)
class Generation:
    """One configuration's processes: `count` of them running `worker(index)`. The `first`
    indexes (the accept process) are stopped before the others, so that no connection is
    accepted that no worker will take; `retired()` runs once all of them are gone."""

    count: int
    worker: Callable[[int], None]
    first: tuple[int, ...] = ()
    retired: Callable[[], None] = lambda: None
    stopping_since: float = 0.0  # when it was told to stop (0: it serves)
    rest_told: bool = False
    rest_signal: int = signal.SIGTERM  # SIGHUP when a reload retires it (long drain)
    # the workers hold the stop signals until their handlers are in place (a stop or
    # reload while one starts would otherwise kill it, and the sessions handed to it)
    holds_signals: bool = False
    started: Callable[[], None] = lambda: None  # once the previous generation stopped accepting


_GRACE = 5.0  # seconds the `first` processes have to end before the others are told


def run_workers(count: int | Generation, worker: Callable[[int], None] | None,
                log: Callable[[str], None], on_reopen: Callable[[], None],
                name: str = "smtpd", on_exit: Callable[[int], None] = lambda pid: None,
                throttle_max: float = 60.0,
                reload: Callable[[], Generation | None] | None = None,
                notify: Callable[[str], None] = lambda state: None) -> int:
    """Run a generation of workers (`count` running `worker(index)`, or a Generation);
    restart ones that die; stop on SIGTERM (the `first` ones, then the others, each told to
    finish what it has); on SIGHUP, `reload()` gives the next generation (None: keep this
    one), which starts at once while the old one finishes its sessions. `on_exit(pid)` is
    told of every worker that ended; `notify` of READY, RELOADING and STOPPING (systemd).
    Like Postfix's master, it never gives up: when workers keep dying (more than 10
    restarts in a minute) it throttles, 1 s, then twice as long each time, up to
    `throttle_max`. Returns 0 after SIGTERM."""
    current = count if isinstance(count, Generation) else Generation(count, worker or _none)
    children: dict[int, tuple[Generation, int]] = {}
    flags = {"stop": False, "reload": False}
    master_pid = os.getpid()

    def start(gen: Generation, index: int) -> None:
        # SIGTERM held while forking: a child forked but not yet in `children` would never
        # be told to stop, and the master would wait for it forever.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            children[_spawn(index, gen.worker, master_pid, gen.holds_signals)] = (gen, index)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def tell(gen: Generation, first: bool) -> None:
        for pid, (owner, index) in list(children.items()):
            if owner is gen and (index in gen.first) == first:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM if first else gen.rest_signal)

    def retire(gen: Generation, rest_signal: int = signal.SIGTERM) -> None:
        if not gen.stopping_since:
            gen.stopping_since = time.monotonic()
            gen.rest_signal = rest_signal
            tell(gen, first=True)
        elif rest_signal == signal.SIGTERM and gen.rest_signal != signal.SIGTERM:
            gen.rest_signal = signal.SIGTERM  # a stop during a reload's drain: stop's deadline
            if gen.rest_told:
                tell(gen, first=False)

    def progress() -> None:
        """Tell the rest of a stopping generation once its first ones are gone; run its
        retired() once nothing of it is left."""
        now = time.monotonic()
        for gen in {owner for owner, _ in children.values()} | {current}:
            if not gen.stopping_since or gen.rest_told:
                continue
            first_alive = any(g is gen and i in gen.first for g, i in children.values())
            if not first_alive or now - gen.stopping_since > _GRACE:
                gen.rest_told = True
                tell(gen, first=False)

    def stop(signum: int, frame: Any) -> None:
        flags["stop"] = True

    def hangup(signum: int, frame: Any) -> None:
        flags["reload"] = True

    def reopen(signum: int, frame: Any) -> None:
        on_reopen()
        forward(signal.SIGUSR1, frame)

    def forward(signum: int, frame: Any) -> None:  # `mailgate queue flush`, log reopen
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    old_wakeup = signal.set_wakeup_fd(wake_w)
    for sig, handler in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, hangup),
                         (signal.SIGUSR1, reopen), (signal.SIGUSR2, forward),
                         (signal.SIGCHLD, _ignore)):
        signal.signal(sig, handler)

    def throttle(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not flags["stop"] and time.monotonic() < deadline:
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))

    try:
        for index in range(current.count):
            if flags["stop"]:  # SIGTERM while starting: the rest never start
                break
            start(current, index)
        notify("READY=1")
        restarts: list[float] = []
        delay = 1.0
        stopping = False
        while children or not stopping:
            with contextlib.suppress(InterruptedError):
                select.select([wake_r], [], [], 0.5)
            with contextlib.suppress(OSError):
                while os.read(wake_r, 512):
                    pass
            if flags["stop"] and not stopping:
                stopping = True
                notify("STOPPING=1")
                for gen in {owner for owner, _ in children.values()} | {current}:
                    retire(gen)
            if flags["reload"] and not stopping:
                flags["reload"] = False
                notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
                new = reload() if reload is not None else None
                if new is not None:
                    old, current = current, new
                    for index in range(current.count):
                        start(current, index)
                    retire(old, signal.SIGHUP)
                    wait_first(old, children)
                    current.started()
                notify("READY=1")
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                gen, index = children.pop(pid, (current, -1))
                if index >= 0:
                    on_exit(pid)
                if gen.stopping_since or index < 0 or stopping:
                    if gen.stopping_since and not any(g is gen for g, _ in children.values()):
                        gen.retired()
                    continue
                log(f"warning: process {name} pid {pid} killed by signal "
                    f"{os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else
                    f"warning: process {name} pid {pid} exit status "
                    f"{os.waitstatus_to_exitcode(status)}")
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 10:
                    log(f"warning: {name}: workers keep dying -- throttling for {delay:g}s")
                    throttle(delay)
                    delay = min(delay * 2, throttle_max)
                    if flags["stop"]:
                        continue
                elif len(restarts) == 1:
                    delay = 1.0
                start(gen, index)
            progress()
            if stopping and not children:
                break
    finally:
        signal.set_wakeup_fd(old_wakeup)
        os.close(wake_r)
        os.close(wake_w)
    return 0


def wait_first(gen: Generation, children: dict[int, tuple[Generation, int]]) -> None:
    """Wait (bounded) until the `first` processes of a retired generation ended: from then
    on only the new one accepts. Their exits are reaped by the master's loop."""
    pids = [pid for pid, (owner, index) in children.items()
            if owner is gen and index in gen.first]
    deadline = time.monotonic() + _GRACE
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        if pids:
            time.sleep(0.01)


def _alive(pid: int) -> bool:
    """Whether a child is still running (a zombie counts as ended; not reaped here)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _none(index: int) -> None:
    raise RuntimeError("no worker function")


def _ignore(signum: int, frame: Any) -> None:
    """SIGCHLD: only wakes the master's loop (through the wakeup fd)."""
