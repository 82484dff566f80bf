"""Real redis-server processes for tests: one server, a Sentinel pair, a three-node Cluster."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def _ping(port: int) -> bool:
    """Readiness: the server answers PING on 127.0.0.1:port (`+PONG`, or an error when
    the default user is off: it answers all the same)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64)[:1] in (b"+", b"-")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server on 127.0.0.1 with its own directory; stopped by its PID."""

    binary: str
    directory: Path
    port: int = 0
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.directory), "--save", "", "--appendonly", "no", "--daemonize", "no",
             "--logfile", str(self.directory / "redis.log"), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start: {log}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def cluster(binary: str, cli: str, directory: Path, nodes: int = 3) -> list[RedisServer]:
    """`nodes` cluster-enabled servers joined with `redis-cli --cluster create`, every slot
    covered before it returns."""
    servers = [RedisServer(binary, directory / f"node{i}", extra=[
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "2000",
        "--cluster-port", str(_free_port())]).start()  # (else port + 10000)
        for i in range(nodes)]
    try:
        subprocess.run([cli, "--cluster", "create",
                        *(f"127.0.0.1:{s.port}" for s in servers),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while True:  # readiness: every node says the cluster is ok
            infos = [subprocess.run([cli, "-p", str(s.port), "cluster", "info"],
                                    capture_output=True, text=True, timeout=10).stdout
                     for s in servers]
            if all("cluster_state:ok" in info for info in infos):
                return servers
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster not ok: {infos}")
            time.sleep(0.05)
    except BaseException:
        for server in servers:
            server.stop()
        raise


def sentinel(binary: str, master: RedisServer, directory: Path,
             name: str = "mailmaster") -> RedisServer:
    """A Sentinel watching `master` under `name`, once it knows the master."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    conf = directory / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                    f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
                    f"sentinel down-after-milliseconds {name} 1000\n")
    server = RedisServer(binary, directory, port=port, extra=[])
    server.proc = subprocess.Popen([binary, str(conf), "--sentinel"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not _ping(port):
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("redis-sentinel did not start")
        time.sleep(0.02)
    return server


def binaries() -> tuple[str, str] | None:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None
