"""A real Dovecot (Debian's dovecot-core) serving only its auth service, for the SASL client tests.

`DovecotAuth(top).start()` writes a configuration under `top` (its own base_dir, log, state and
a passwd-file of USERS), runs `dovecot -F` and returns once the UNIX listener and the TCP
listener on 127.0.0.1 accept connections; `stop()` sends SIGTERM to the PID in
base_dir/master.pid and waits for the process to end; `start()` again reuses the same
socket path and port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from support.loopback import wait_listening

# user → password; alice uses a SHA512-CRYPT hash of "secret" made at start-up by doveadm
USERS = {"alice@example.test": "secret", "bob": "hunter2"}
SOCKET = "mailgate-auth"  # the unix_listener, relative to base_dir


def wait_unix_listening(path: Path, timeout: float = 15.0) -> None:
    """Readiness: the UNIX socket `path` accepts a connection (bounded; raises the last
    OSError when it never does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(str(path))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class DovecotAuth:
    """One Dovecot instance under `top` (a directory Dovecot's unprivileged processes may
    traverse); `port` is its auth inet_listener on 127.0.0.1."""

    def __init__(self, binary: str, top: Path, port: int) -> None:
        self.binary = binary
        self.top = top
        self.port = port
        self.run = top / "run"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.run / SOCKET

    @property
    def log_path(self) -> Path:
        return self.top / "dovecot.log"

    def _users(self) -> str:
        crypt = subprocess.run(
            [shutil.which("doveadm") or "/usr/bin/doveadm", "pw", "-s", "SHA512-CRYPT",
             "-p", USERS["alice@example.test"]],
            check=True, capture_output=True, text=True, timeout=30).stdout.strip()
        return f"alice@example.test:{crypt}\nbob:{{PLAIN}}{USERS['bob']}\n"

    def write_config(self) -> Path:
        users = self.top / "users"
        if not users.exists():
            users.write_text(self._users())
            users.chmod(0o644)
        conf = self.top / "dovecot.conf"
        conf.write_text(f"""\
base_dir = {self.run}
state_dir = {self.top}/state
log_path = {self.log_path}
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={self.top}/home/%u
}}
service auth {{
  unix_listener {SOCKET} {{
    mode = 0666
  }}
  inet_listener {{
    address = 127.0.0.1
    port = {self.port}
  }}
}}
""")
        return conf

    def start(self) -> DovecotAuth:
        conf = self.write_config()
        self.proc = subprocess.Popen([self.binary, "-F", "-c", str(conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            wait_unix_listening(self.socket_path)
            wait_listening(self.port)
        except OSError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM to the master (its PID from master.pid) and wait for it. Dovecot's service
        processes outlive their master while they have clients (an auth process keeps
        answering on its open connections), so the ones it had started get a SIGTERM too,
        by their PIDs, and are waited for: the server is then gone, as after a real stop."""
        if self.proc is None:
            return
        try:
            pid = int((self.run / "master.pid").read_text().strip())
        except (OSError, ValueError):
            pid = self.proc.pid  # it died before writing its PID file
        if pid == self.proc.pid:
            children = _children(pid)
            if self.proc.poll() is None:
                os.kill(pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while any(_alive(child) for child in children) and time.monotonic() < deadline:
                time.sleep(0.02)
        self.proc = None


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, ppid, …); [] when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def _children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (Dovecot's services)."""
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and _stat(int(name))[1:2] == [str(parent)]]
