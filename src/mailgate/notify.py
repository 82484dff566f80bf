"""systemd's service notifications (sd_notify(3)): READY=1, RELOADING=1, STOPPING=1, STATUS=."""

from __future__ import annotations

import contextlib
import os
import socket


def systemd_notify(state: str) -> None:
    """Send `state` (newline-separated KEY=value lines) to $NOTIFY_SOCKET, if systemd (or a
    test) set one; a path, or `@name` for the abstract namespace. Never fails."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    target = "\0" + path[1:] if path.startswith("@") else path
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(target)
        sock.sendall(state.encode())
