"""Real redis-server processes for tests: one server, a Sentinel pair, a three-node Cluster,
and a Sentinel group (a master, its replica and three sentinels) that fails over."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    port = _free_port()
    return _sentinel_process(binary, directory, port, (
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"sentinel monitor {name} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {name} 1000\n"))


def _sentinel_process(binary: str, directory: Path, port: int, conf: str) -> RedisServer:
    """Start `redis-server CONF --sentinel` with `conf`; ready once it answers PING."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "sentinel.conf"
    path.write_text(conf)
    server = RedisServer(binary, directory, port=port, extra=[])
    server.proc = subprocess.Popen([binary, str(path), "--sentinel"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not _ping(port):
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("redis-sentinel did not start")
        time.sleep(0.02)
    return server


def client(port: int, timeout: float = 5.0) -> Any:
    """A synchronous redis-py client to 127.0.0.1:port (a server or a sentinel)."""
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout,
                       socket_connect_timeout=timeout, decode_responses=True)


def _poll(what: str, condition: Callable[[], bool], timeout: float) -> None:
    """Wait for a readiness condition (bounded); redis errors meanwhile count as "not yet"."""
    from redis.exceptions import RedisError

    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis: {what}: not reached in {timeout:g}s")
        time.sleep(0.05)


def _asks(port: int, call: Callable[[Any], Any]) -> Any:
    with client(port) as c:
        return call(c)


@dataclass
class SentinelGroup:
    """A master, its replica(s) and the sentinels that watch them under `name`: what a
    site runs for `redis_sentinels`. Every process is stopped by its PID in stop()."""

    name: str
    servers: list[RedisServer]  # the first master, then its replicas
    sentinels: list[RedisServer]

    @property
    def addresses(self) -> str:
        """The sentinels as `redis_sentinels` takes them."""
        return ", ".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def reported(self) -> list[tuple[str, int] | None]:
        """The master address each sentinel gives (None: it did not answer)."""
        from redis.exceptions import RedisError

        out: list[tuple[str, int] | None] = []
        for s in self.sentinels:
            try:
                addr = _asks(s.port, lambda c: c.sentinel_get_master_addr_by_name(self.name))
            except (RedisError, OSError):
                addr = None
            out.append((str(addr[0]), int(addr[1])) if addr else None)
        return out

    def master(self) -> RedisServer:
        """The server every sentinel names as the master now."""
        (addr,) = set(self.reported())
        assert addr is not None
        (server,) = [s for s in self.servers if s.port == addr[1]]
        return server

    def role(self, server: RedisServer) -> str:
        """`master` or `slave`, as the server itself says (INFO replication)."""
        return str(_asks(server.port, lambda c: c.info("replication"))["role"])

    def ready(self) -> bool:
        """Every sentinel knows the master (not down), every replica (its link up) and the
        other sentinels: a failover can be decided and carried out."""
        replicas = len(self.servers) - 1
        for s in self.sentinels:
            state = _asks(s.port, lambda c: c.sentinel_master(self.name))
            if (not state["is_master"] or state["is_sdown"] or state["is_odown"]
                    or state["num-slaves"] != replicas
                    or state["num-other-sentinels"] != len(self.sentinels) - 1):
                return False
            known = _asks(s.port, lambda c: c.sentinel_slaves(self.name))
            if len(known) != replicas or any(
                    r["is_sdown"] or r["is_disconnected"] or r["master-link-status"] != "ok"
                    for r in known):
                return False
        return True

    def wait(self, what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
        _poll(what, condition, timeout)

    def failover(self) -> None:
        """`SENTINEL FAILOVER name` to a sentinel: the planned switch to a replica (asked
        again while the sentinel finds no replica fit yet, bounded)."""
        from redis.exceptions import ResponseError

        deadline = time.monotonic() + 30
        while True:
            try:
                _asks(self.sentinels[0].port, lambda c: c.sentinel_failover(self.name))
                return
            except ResponseError as exc:
                if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def stop(self) -> None:
        for server in (*self.sentinels, *self.servers):
            if server.proc is not None and server.proc.poll() is None:
                os.kill(server.proc.pid, signal.SIGCONT)  # a test may have paused it
            server.stop()


def sentinel_group(binary: str, directory: Path, name: str = "mailmaster",
                   replicas: int = 1, sentinels: int = 3, down_after_ms: int = 1000,
                   failover_timeout_ms: int = 10000) -> SentinelGroup:
    """A master, `replicas` replicas of it and `sentinels` sentinels (quorum: a majority)
    watching it, every one on 127.0.0.1 with its own directory, ready (see
    SentinelGroup.ready) before it returns. A master down `down_after_ms` is failed over."""
    group = SentinelGroup(name, [], [])
    try:
        master = RedisServer(binary, directory / "master", extra=[
            "--repl-diskless-sync-delay", "0"]).start()
        group.servers.append(master)
        for i in range(replicas):
            group.servers.append(RedisServer(binary, directory / f"replica{i}", extra=[
                "--replicaof", "127.0.0.1", str(master.port)]).start())
        _poll("replicas in sync", lambda: all(
            _asks(r.port, lambda c: c.info("replication"))["master_link_status"] == "up"
            for r in group.servers[1:]), 30)
        for i in range(sentinels):
            port = _free_port()
            where = directory / f"sentinel{i}"
            group.sentinels.append(_sentinel_process(binary, where, port, (
                f"port {port}\nbind 127.0.0.1\ndir {where}\nlogfile {where / 'sentinel.log'}\n"
                f"sentinel monitor {name} 127.0.0.1 {master.port} {sentinels // 2 + 1}\n"
                f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
                f"sentinel failover-timeout {name} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {name} 1\n")))
        group.wait("sentinels ready", group.ready)
        return group
    except BaseException:
        group.stop()
        raise


def binaries() -> tuple[str, str] | None:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None
