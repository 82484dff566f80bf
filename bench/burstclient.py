"""The burst's load generator: N SMTP sessions on one epoll loop, timed by the kernel.

Latencies are measured from just before a request leaves (the connect() or send() call) to
the kernel's receive timestamp of the reply (SO_TIMESTAMPNS on the socket, read with
recvmsg), so they do not include the time this process takes to get to the reply: on a
2-core machine the server's workers keep the load generator waiting for a CPU, and
asyncio streams add their own queueing (the earlier client's floor against smtp-sink was
100-135 ms at p99 for 500 sessions; this one's is a few ms).
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

_TS = struct.Struct("qq")  # struct timespec
_CMSG = socket.CMSG_SPACE(_TS.size)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


@dataclass
class Result:
    greet: list[float] = field(default_factory=list)  # seconds
    rcpt: list[float] = field(default_factory=list)  # seconds
    accepted: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0  # s, until the last session that ended well
    cpu: float | None = None  # server CPU seconds during the burst
    client_cpu: float = 0.0
    dns_cpu: float = 0.0


@dataclass
class _Session:
    sock: socket.socket
    steps: list[tuple[bytes, bytes, str]]  # (what to send, expected code, what it is)
    step: int = -1  # -1: waiting for the greeting
    sent_ns: int = 0
    buffer: bytes = b""


def dialogue(i: int, client: str, xclient: bool) -> list[tuple[bytes, bytes, str]]:
    """The commands of session i after the greeting: one message to bench@example.test."""
    domain = f"s{client.replace('.', '-')}.senders.bench.test"
    announce = (f"XCLIENT ADDR={client} NAME=[UNAVAILABLE]\r\n".encode(), b"220", "XCLIENT")
    return [
        *([announce] if xclient else []),
        (f"EHLO c{i}.client.bench.test\r\n".encode(), b"250", "EHLO"),
        (f"MAIL FROM:<u{i}@{domain}>\r\n".encode(), b"250", "MAIL"),
        (b"RCPT TO:<bench@example.test>\r\n", b"250", "RCPT"),
        (b"DATA\r\n", b"354", "DATA"),
        (f"Subject: burst {i}\r\n\r\nbody\r\n.\r\n".encode(), b"250", "end of data"),
        (b"QUIT\r\n", b"221", "QUIT")]


def _receive(sess: _Session) -> tuple[bytes, int]:
    """What arrived and the kernel's timestamp of it (CLOCK_REALTIME ns; 0: none)."""
    data, ancdata, _, _ = sess.sock.recvmsg(65536, _CMSG)
    stamp = 0
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= _TS.size:
            sec, nsec = _TS.unpack_from(value)
            stamp = sec * 1_000_000_000 + nsec
    return data, stamp


def _reply(sess: _Session) -> bytes | None:
    """The last line of a complete (possibly multi-line) reply in the buffer, or None."""
    while True:
        end = sess.buffer.find(b"\n")
        if end < 0:
            return None
        line, sess.buffer = sess.buffer[: end + 1], sess.buffer[end + 1 :]
        if line[3:4] != b"-":
            return line


def run(port: int, clients: list[str], bind: list[str], xclient: bool,
        timeout: float) -> Result:
    """Open len(clients) sessions at once (socket i bound to bind[i]) and play them."""
    res = Result()
    ep = select.epoll()
    sessions: dict[int, _Session] = {}
    for i, (client, source) in enumerate(zip(clients, bind, strict=True)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((source, 0))
        sessions[sock.fileno()] = _Session(sock, dialogue(i, client, xclient))
    start_ns = time.time_ns()
    for fd, sess in sessions.items():
        sess.sent_ns = time.time_ns()
        try:
            sess.sock.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        except OSError as exc:
            _fail(res, sessions, ep, fd, f"connect: {exc.strerror}")
            continue
        ep.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
    deadline = time.monotonic() + timeout
    while sessions and time.monotonic() < deadline:
        for fd, _ in ep.poll(min(1.0, max(deadline - time.monotonic(), 0.0)), 1024):
            ready = sessions.get(fd)
            if ready is not None:
                _ready(res, sessions, ep, fd, ready, start_ns)
    for fd in list(sessions):
        _fail(res, sessions, ep, fd, f"no answer within {timeout:.0f} s")
    ep.close()
    return res


def _ready(res: Result, sessions: dict[int, _Session], ep: select.epoll, fd: int,
           sess: _Session, start_ns: int) -> None:
    try:
        data, stamp = _receive(sess)
    except OSError as exc:
        _fail(res, sessions, ep, fd, f"{type(exc).__name__}: {exc.strerror}")
        return
    if not data:
        _fail(res, sessions, ep, fd, "connection closed")
        return
    sess.buffer += data
    line = _reply(sess)
    if line is None:
        return
    stamp = stamp or time.time_ns()
    latency = (stamp - sess.sent_ns) / 1e9
    expected, what = (b"220", "greeting") if sess.step < 0 else sess.steps[sess.step][1:]
    if what == "greeting":
        res.greet.append(latency)
    elif what == "RCPT":
        res.rcpt.append(latency)
    if not line.startswith(expected):
        _fail(res, sessions, ep, fd, f"{what}: {line.decode(errors='replace').strip()}")
        return
    if what == "end of data":
        res.accepted += 1
    sess.step += 1
    if sess.step == len(sess.steps):  # QUIT answered
        res.wall = max(res.wall, (time.time_ns() - start_ns) / 1e9)
        _close(sessions, ep, fd)
        return
    sess.sent_ns = time.time_ns()
    try:
        sess.sock.send(sess.steps[sess.step][0])  # a few dozen bytes: never a short send
    except OSError as exc:
        _fail(res, sessions, ep, fd, f"{type(exc).__name__}: {exc.strerror}")


def _close(sessions: dict[int, _Session], ep: select.epoll, fd: int) -> None:
    sess = sessions.pop(fd)
    try:
        ep.unregister(fd)
    except (OSError, ValueError):
        pass
    sess.sock.close()


def _fail(res: Result, sessions: dict[int, _Session], ep: select.epoll, fd: int,
          what: str) -> None:
    res.failures[what[:120]] += 1
    _close(sessions, ep, fd)
