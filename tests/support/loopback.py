"""Loopback helpers for tests and benchmarks: a threaded TCP server on 127.0.0.1 (each
accepted connection gets a thread), and waiting until another server's port accepts."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


def wait_listening(port: int, timeout: float = 15.0) -> None:
    """Readiness of a server started elsewhere: 127.0.0.1:`port` accepts a connection
    (bounded in time; raises the last OSError when it never does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class LoopbackServer:
    """Listens on 127.0.0.1 (`port` 0: any free port); `session(conn)` runs per connection
    in a thread of its own (the default says nothing and keeps the connection open).
    `close()` closes the listener and every connection."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(20)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # close() while the session reads
            self.session(conn)

    def session(self, conn: socket.socket) -> None:
        """One connection (runs in its own thread)."""

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()
