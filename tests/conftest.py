"""Shared fixtures: a real `mailgate serve` process on a loopback port chosen by the OS."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from support.certs import Certs
    from support.dovecotauth import DovecotAuth
    from support.reference import Instance

SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.exists():  # CI: shared/ sits beside the clone
    SHARED = Path(os.environ.get("MAILGATE_SHARED", "../shared")).resolve()

USERS = ("postmaster", "alice", "bob")
DOMAIN = "example.test"
HOSTNAME = "mx.example.test"


DNS_SERVER: list[str] = []  # set by the session's dns_server fixture


def searchable(path: Path) -> None:
    """Let other users search `path` and its parents (pytest makes its directories 0700):
    a server started as root works as mail_owner, which must reach its queue and tables
    there, as it reaches /var/spool and /etc on an installed system."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & 0o001:
            directory.chmod((mode & 0o7777) | 0o011)


@pytest.fixture(scope="session", autouse=True)
def searchable_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every temporary directory of the session (tmp_path included) is searchable()."""
    made = tmp_path_factory.mktemp

    def mktemp(basename: str, numbered: bool = True) -> Path:
        path = made(basename, numbered)
        searchable(path)
        return path

    tmp_path_factory.mktemp = mktemp  # type: ignore[method-assign]


@pytest.fixture(scope="session", autouse=True)
def dns_server() -> Iterator[str]:
    """The test DNS server (authoritative for tests/data/dns), for the whole session: servers
    started by the tests resolve through it (resolver_servers), never the machine's."""
    from support.dns import start

    server = start()
    DNS_SERVER.append(server.address)
    try:
        yield server.address
    finally:
        DNS_SERVER.clear()
        server.stop()


def base_main_cf(root: Path) -> str:
    """A test configuration like the reference Postfix's: virtual domain + local demo."""
    vmailbox = root / "etc" / "vmailbox"
    vmailbox.parent.mkdir(parents=True, exist_ok=True)
    vmailbox.write_text("".join(
        f"{u}@{DOMAIN} {DOMAIN}/{u}/\n{u}@localhost localhost/{u}/\n"
        f"{u}@{HOSTNAME} localhost/{u}/\n" for u in USERS))
    return (
        f"myhostname = {HOSTNAME}\n"
        "mydestination = $myhostname, localhost\n"
        "mynetworks = 127.0.0.0/8\n"
        "inet_interfaces = 127.0.0.1\n"
        f"virtual_mailbox_domains = {DOMAIN}\n"
        f"virtual_mailbox_maps = texthash:{vmailbox}\n"
        "local_recipient_maps = $virtual_mailbox_maps\n"
        f"mailgate_home = {root / 'data'}\n"
        f"virtual_mailbox_base = {root / 'mail'}\n"
        f"maillog_file = {root / 'maillog'}\n"
        "smtpd_listen = 127.0.0.1:0\n"
        f"resolver_servers = {' '.join(DNS_SERVER)}\n"
        "resolver_timeout = 1s\n"
        # Tests deliver only to next hops they start on loopback (transport_maps): mail for
        # other domains waits in the queue instead of going to an MX on the Internet.
        "default_transport = retry:tests deliver only to loopback next hops\n"
        "relay_transport = retry:tests deliver only to loopback next hops\n"
    )


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass
class Server:
    """A running `mailgate serve`; stopped by its PID."""

    root: Path
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.root / "maillog"

    @property
    def mail(self) -> Path:
        return self.root / "mail"

    def write_config(self) -> None:
        text = base_main_cf(self.root)
        if "smtpd_processes" not in self.extra:  # two workers test them; faster to start
            text += "smtpd_processes = 2\n"
        text += "".join(f"{k} = {v}\n" for k, v in self.extra.items())
        (self.root / "etc" / "main.cf").write_text(text)

    def start(self, timeout: float = 20.0) -> Server:
        self.write_config()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailgate.cli", "serve", "-c", str(self.root / "etc")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the readiness signal: "mailgate: listening on"
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"mailgate did not start: {line!r} {err}")
        self.port = int(m.group(1))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream:
                    stream.close()
        self.proc = None

    def workers(self) -> list[int]:
        assert self.proc is not None
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    out.append(int(entry.name))
        return out

    def kill9(self) -> None:
        """kill -9 the master; its workers die with it (PR_SET_PDEATHSIG): wait for that."""
        assert self.proc is not None
        workers = self.workers()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers):
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {workers} outlived their master")
            time.sleep(0.01)
        self.stop()

    def log(self) -> list[str]:
        """Log lines with the syslog prefix removed (`name/prog[pid]: text` → `prog: text`)."""
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            m = re.match(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ [^/]+/(\w+)\[\d+\]: (.*)$", line)
            if m:
                out.append(f"{m.group(1)}: {m.group(2)}")
        return out

    def smtpd_log(self) -> list[str]:
        return [line[len("smtpd: "):] for line in self.log() if line.startswith("smtpd: ")]

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 15.0) -> list[str]:
        """Wait until `count` log lines match `pattern` (bounded in time)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            hits = [line for line in self.log() if regex.search(line)]
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                raise AssertionError(f"log has no {count}x {pattern!r}:\n" + "\n".join(self.log()))
            time.sleep(0.02)

    def maildir_files(self, user: str, domain: str = DOMAIN) -> list[Path]:
        new = self.mail / domain / user / "new"
        return sorted(new.iterdir()) if new.exists() else []


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[type[Server] | object]:
    servers: list[Server] = []

    def make(**params: str) -> Server:
        root = tmp_path / f"mg{len(servers)}"
        root.mkdir()
        server = Server(root, extra=dict(params))
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(server_factory) -> Server:  # type: ignore[no-untyped-def]
    return server_factory().start()  # type: ignore[no-any-return]


class Client:
    """A raw SMTP client for byte-exact dialogues (smtplib hides too much)."""

    def __init__(self, port: int, timeout: float = 10.0, source: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.buf = b""

    def line(self) -> str:
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server closed the connection")
            self.buf += data
        raw, self.buf = self.buf.split(b"\n", 1)
        return raw.rstrip(b"\r").decode("utf-8", "surrogateescape")

    def reply(self) -> str:
        """One complete reply; multi-line replies joined with newlines."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return "\n".join(lines)

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data if isinstance(data, bytes) else data.encode() + b"\r\n")

    def cmd(self, text: str | bytes) -> str:
        self.send(text)
        return self.reply()

    def closed(self) -> bool:
        """True if the server closed the connection (EOF or reset) with no more output."""
        try:
            self.sock.settimeout(5)
            data = self.buf or self.sock.recv(1)
            return data == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect(server: Server) -> Iterator[object]:
    clients: list[Client] = []

    def make(port: int | None = None, greet: bool = True) -> Client:
        client = Client(port or server.port)
        clients.append(client)
        if greet:
            assert client.reply().startswith("220 ")
        return client

    yield make
    for client in clients:
        client.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll a condition (bounded in time); fail the test if it never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def port_accepts(port: int) -> bool:
    """True once something listens on 127.0.0.1:port (the readiness signal of servers that
    print none: smtp-sink, Dovecot)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def free_port() -> int:
    """A loopback port for a server that needs one in its configuration (Dovecot, Postfix)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(tool: str) -> str:
    """The path of an external tool; missing tools fail in CI (set-up installs them), else skip."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}")
                                  else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed: run scripts/test-setup")
        pytest.skip(f"{tool} is not installed (scripts/test-setup installs it)")
    return path


REFERENCE_SCRIPT = SHARED / "postfix" / "reference-postfix.sh"


def reference_postfix(tmp_path_factory: pytest.TempPathFactory, name: str, port: int = 0
                      ) -> Iterator[Instance]:
    """For a module-scoped fixture: one reference Postfix (support.reference.Instance) on a
    free loopback port (or `port`), stopped at the end; skips without ../shared or Postfix."""
    from support.reference import Instance

    require("postfix")
    if not REFERENCE_SCRIPT.exists():
        pytest.skip("shared/postfix/reference-postfix.sh not present")
    instance = Instance(REFERENCE_SCRIPT, tmp_path_factory.mktemp(name) / "ref",
                        port or free_port())
    try:
        yield instance
    finally:
        instance.stop()


def dovecot_auth() -> Iterator[DovecotAuth]:
    """For a module-scoped fixture: a real Dovecot serving only its auth service
    (support.dovecotauth) on a free loopback port, stopped by its PID at the end."""
    import tempfile

    from support.dovecotauth import DovecotAuth

    binary = require("dovecot")
    top = Path(tempfile.mkdtemp(prefix="mailgate-auth-"))
    top.chmod(0o755)  # Dovecot's auth process (user dovecot) reads the passwd-file here
    server = DovecotAuth(binary, top, free_port())
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A test CA with RSA and ECDSA server certificates for HOSTNAME and two client
    certificates (support.certs), made once per module with the openssl CLI."""
    from support.certs import make

    require("openssl")
    return make(tmp_path_factory.mktemp("certs"), HOSTNAME)
