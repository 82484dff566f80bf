"""The master process: binds the listeners, recovers the queue, runs and watches smtpd workers.

Like Postfix's master(8): one process owns the listening sockets and starts
`smtpd_processes` workers that inherit them (the kernel spreads connections over them). Each
worker runs one event loop with sessions, its own queue manager and Maildir agents. State
that must be shared (per-client connection counts and rates, the global session count)
lives in a shared-memory table (anvil.py). Workers die with the master
(PR_SET_PDEATHSIG), so `kill -9` of the master stops everything and a restart recovers the
queue.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from collections.abc import Callable

from mailgate.config.settings import ListenAddress
from mailgate.privileges import die_with_parent


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


def spawn(index: int, worker: Callable[[int], None], master_pid: int,
           holds_signals: bool = False) -> int:
    """Fork one worker; in the child run `worker(index)` and never return."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        die_with_parent()
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
