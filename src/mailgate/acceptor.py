"""The accept process: takes every connection, greets it at once, hands it to the least busy worker.

A worker accepts only between two passes of its event loop, and under a burst a pass takes
tens of milliseconds, so with the listening socket shared by the workers a client's
greeting waited for the busiest of them (decision 0049). This process does nothing else:
accept, count the client (the shared ConnectionTable), peek for input sent before the
greeting, write the `220` when nothing can refuse the client before its name is known,
and pass the descriptor over a UNIX socket (SCM_RIGHTS) to the worker with the fewest
sessions (a stream socket of fixed-size records: a datagram channel would hold only
`net.unix.max_dgram_qlen` of them, 10 by default). Worker `i` reads its channel
(`Handoff.channel(i)`) and publishes how many connections it took and how many sessions it
runs, so the choice needs no message back.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import signal
import socket
import struct
import time
from dataclasses import dataclass

from mailgate.anvil import ConnectionTable, client_key
from mailgate.config.settings import SmtpdSettings
from mailgate.master import accept_stop_signals

# listener index, address family, greeted, count, total, port, early-input length; then the
# early input and the address
HEADER = struct.Struct("=BBBiiHB")
RECORD = 256  # a record's size: header, early input (<= 100 bytes), address (<= 45)
_SLOT = struct.Struct("=qq")  # per worker: connections received, sessions running
_BATCH = 64  # connections accepted per listener before the others get a turn
_PATIENCE = 60.0  # how long a connection waits for a worker to take it


@dataclass(frozen=True)
class Handed:
    """One connection as a worker receives it."""

    sock: socket.socket
    listener: int
    greeted: bool
    count: int
    total: int
    addr: str
    port: int
    early: bytes


class Handoff:
    """The channels from the accept process to the workers, and the workers' load table.

    Made by the master before it forks: both ends of every channel stay open in the
    master, so connections handed to a worker that died wait for its replacement.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                       for _ in range(workers)]
        self._load = mmap.mmap(-1, _SLOT.size * workers)

    def close(self) -> None:
        """Close every channel (the master, at the end)."""
        for pair in self._pairs:
            for sock in pair:
                sock.close()

    # --- a worker's side ------------------------------------------------------------------
    def channel(self, index: int) -> socket.socket:
        """Worker `index`'s end (non-blocking); it has no sessions yet."""
        sock = self._pairs[index][1]
        sock.setblocking(False)
        received, _ = _SLOT.unpack_from(self._load, index * _SLOT.size)
        _SLOT.pack_into(self._load, index * _SLOT.size, received, 0)
        return sock

    def receive(self, index: int, channel: socket.socket) -> list[Handed]:
        """The connections waiting on worker `index`'s channel (at most a batch)."""
        handed: list[Handed] = []
        space = socket.CMSG_SPACE(_INT.size)
        for _ in range(_BATCH):
            try:
                data, ancillary, _flags, _addr = channel.recvmsg(RECORD, space)
            except (BlockingIOError, InterruptedError):
                break
            fds = [_INT.unpack_from(d)[0] for level, kind, d in ancillary
                   if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
                   and len(d) >= _INT.size]
            if not data:
                break  # the accept side is closed (only when the master is gone)
            if len(data) != RECORD or len(fds) != 1:  # never written so: nothing to serve
                for fd in fds:
                    os.close(fd)
                continue
            listener, family, greeted, count, total, port, early_len = \
                HEADER.unpack_from(data)
            body = data[HEADER.size:]
            early = body[:early_len]
            addr = body[early_len:].rstrip(b"\0").decode("ascii", "replace")
            sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET,
                                 socket.SOCK_STREAM, 0, fileno=fds[0])
            handed.append(Handed(sock, listener, bool(greeted), count, total, addr, port,
                                 early))
        if handed:
            self._add(index, len(handed), len(handed))
        return handed

    def finished(self, index: int) -> None:
        """A session of worker `index` ended."""
        self._add(index, 0, -1)

    def _add(self, index: int, received: int, running: int) -> None:
        offset = index * _SLOT.size
        was_received, was_running = _SLOT.unpack_from(self._load, offset)
        _SLOT.pack_into(self._load, offset, was_received + received,
                        max(was_running + running, 0))

    # --- the accept process's side --------------------------------------------------------
    def pick(self, sent: list[int], start: int) -> list[int]:
        """Workers by load (sessions running plus connections sent, not yet received),
        least first; equal loads in turn from `start`."""
        load = []
        for i in range(self.workers):
            received, running = _SLOT.unpack_from(self._load, i * _SLOT.size)
            load.append((running + max(sent[i] - received, 0), (i - start) % self.workers, i))
        load.sort()
        return [i for _, _, i in load]

    def sender(self, index: int) -> socket.socket:
        sock = self._pairs[index][0]
        sock.setblocking(False)
        return sock


_INT = struct.Struct("=i")


@dataclass(frozen=True)
class Greeter:
    """What the accept process needs of smtpd's settings."""

    greeting: bytes
    delay_reject: bool
    max_connections: int
    count_limit: int
    rate_limit: int
    rate_unit: float
    wrapper: bool = False  # smtpd_tls_wrappermode: the greeting goes out over TLS
    proxy: bool = False  # smtpd_upstream_proxy_protocol: the header comes before it
    sliding: bool = False  # anvil_rate_window = sliding
    ipv4_prefix: int = 32  # smtpd_client_ipv4_prefix_length
    ipv6_prefix: int = 128  # smtpd_client_ipv6_prefix_length
    screened: bool = False  # postscreen's tests come first (it sends its own `220-`)
    shared: bool = False  # the client limits count every node's connections (Redis)

    @classmethod
    def from_settings(cls, s: SmtpdSettings, screened: bool = False,
                      shared: bool = False) -> Greeter:
        return cls(f"220 {s.banner}\r\n".encode("utf-8", "surrogateescape"), s.delay_reject,
                   s.max_connections, s.connection_count_limit, s.connection_rate_limit,
                   s.rate_time_unit, s.tls.wrappermode, s.upstream_proxy,
                   s.rate_window_sliding, s.client_ipv4_prefix_length,
                   s.client_ipv6_prefix_length, screened, shared)

    def key(self, addr: str) -> str:
        """The name anvil counts the client under (its address, or its network)."""
        return client_key(addr, self.ipv4_prefix, self.ipv6_prefix)

    def early(self, connections: ConnectionTable, key: str, count: int, total: int) -> bool:
        """Whether the greeting can go out before the client's name lookup ends: nothing
        before it needs the name (smtpd_delay_reject = yes) and no connection limit can
        refuse the client, whatever its name (a refusal replaces the greeting)."""
        if self.wrapper or self.proxy or self.screened or not self.delay_reject \
                or total > self.max_connections:
            return False
        if self.count_limit and count > self.count_limit:
            return False
        if self.shared and (self.count_limit or self.rate_limit):
            return False  # only the site-wide counts can tell: the worker asks the store
        return not self.rate_limit or connections.event(
            key, "connect", time.time(), self.rate_unit, self.sliding,
            count=False) < self.rate_limit


def client_address(peer: object) -> tuple[str, int]:
    """A peer address as smtpd names the client: IPv4-mapped IPv6 as plain IPv4."""
    if not isinstance(peer, tuple):
        return "unknown", 0
    addr = str(peer[0])
    if addr.startswith("::ffff:") and "." in addr:
        addr = addr[7:]
    return addr, int(peer[1])


def peek(sock: socket.socket) -> bytes:
    """Input already in the kernel's buffer before the greeting (the 3.7.6+ pre-greeting
    pipelining check)."""
    try:
        return sock.recv(100, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # BlockingIOError: nothing there (the usual case)
        return b""


def run(listeners: list[socket.socket], handoff: Handoff, connections: ConnectionTable,
        greeters: list[Greeter]) -> None:
    """The accept process's loop. SIGTERM (stop, reload) ends it between two connections:
    every connection accepted has been handed to a worker; the ones still in the listen
    queue wait there for the next accept process. The master sends every child its
    log-reopen and queue-flush signals: nothing to do here, and their default action would
    kill the process."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.append(signum))
    accept_stop_signals()
    senders = [handoff.sender(i) for i in range(handoff.workers)]
    sent = [0] * handoff.workers
    poll = select.epoll()
    by_fd = {}
    for index, sock in enumerate(listeners):
        sock.setblocking(False)
        poll.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = (index, sock)
    turn = 0
    while not stop:
        for fd, _events in poll.poll(0.5):
            index, listener = by_fd[fd]
            for _ in range(_BATCH):
                try:
                    conn, peer = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # out of descriptors, a connection reset before accept
                    time.sleep(0.01)
                    break
                turn = (turn + 1) % handoff.workers
                _hand(conn, peer, index, handoff, connections, greeters[index], senders, sent,
                      turn)


def _hand(conn: socket.socket, peer: object, listener: int, handoff: Handoff,
          connections: ConnectionTable, greeter: Greeter, senders: list[socket.socket],
          sent: list[int], turn: int) -> None:
    addr, port = client_address(peer)
    key = greeter.key(addr)
    count, total = connections.connect(key)
    greeted = greeter.early(connections, key, count, total)
    early = b""
    if greeted:
        early = peek(conn)  # (a wrapper-mode client's first bytes are its TLS hello)
        with contextlib.suppress(OSError):  # a client gone already: its worker finds out
            conn.send(greeter.greeting, socket.MSG_DONTWAIT)
    family = 6 if conn.family == socket.AF_INET6 else 4
    payload = (HEADER.pack(listener, family, greeted, count, total, port, len(early)) + early
               + addr.encode("ascii", "replace"))[:RECORD].ljust(RECORD, b"\0")
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _INT.pack(conn.fileno()))]
    deadline = time.monotonic() + _PATIENCE
    try:
        while True:
            for worker in handoff.pick(sent, turn):
                try:
                    # a record is written whole or not at all: it is far below the buffer
                    senders[worker].sendmsg([payload], rights)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # never: the master holds the other end
                    continue
                sent[worker] += 1
                return
            left = deadline - time.monotonic()
            if left <= 0:
                break
            select.select([], senders, [], min(left, 0.1))  # every worker is behind
        connections.disconnect(key)  # no worker took it for a minute: the client retries
    finally:
        conn.close()
