"""Redis failing under live SMTP traffic (issue 23): a Sentinel failover while a client
sends, and a Redis paused with SIGSTOP. Real redis-server processes (the sentinels are
`redis-server --sentinel`), real mailgate nodes, smtplib clients, all on 127.0.0.1.

What must hold: every message that got `250` after DATA is in a Maildir; every session ends
before the client's own timeout (no command waits on Redis); once Redis is back the nodes
share their state again without a restart; one warning when Redis goes and one when it is
back; `redis_failure_action = tempfail` answers `451 4.3.5` instead of waiting."""

from __future__ import annotations

import functools
import itertools
import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import Server, require, wait_until
from support import xclient
from support.redisserver import RedisServer, SentinelGroup, client, sentinel_group

PREFIX = "mailgate:"  # redis_key_prefix's default
REFUSED = "421 4.3.2 Service currently unavailable; client [{}] blocked automatically"
UNAVAILABLE = "warning: redis: state backend unavailable: "
AVAILABLE = "warning: redis: state backend available again"
GREYLISTED = "RCPT 450 4.2.0 <alice@example.test>: Recipient address rejected: Greylisted"
TEMPFAIL = ("RCPT 451 4.3.5 <alice@example.test>: Recipient address rejected: Server "
            "configuration error")
# greylisting (a new triplet waits greylist_delay, 300 s) and automatic blocks: the store is
# read at every connect (blocks) and read and written at every RCPT (triplets)
STATEFUL = {"smtpd_processes": "1", "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination, "
                                            "reject_unlisted_recipient, check_greylist",
            "auto_block_threshold": "4"}
SPAMMERS = "198.51.100"


def triplet(network: str, sender: str) -> str:
    """The Redis key of the greylisting triplet of a client in `network` (`10.1.2`, a /24)
    sending to alice (docs/greylisting.md, docs/redis.md)."""
    return f"{PREFIX}{{greylist:triplet:{network}.0/{sender}/alice@example.test}}".lower()


def aged(redis: Any, network: str, sender: str) -> None:
    """The triplet as first seen 400 s ago (greylist_delay is over: no waiting), through a
    redis-py client or pipeline."""
    then = int(time.time()) - 400
    redis.set(triplet(network, sender), f"{then},{then}", px=86_400_000)


def deliver(port: int, addr: str, sender: str, subject: str, timeout: float) -> str:
    """One message to alice from a client named ADDR by XCLIENT: `DATA 250` when accepted,
    else the step and the reply that refused it. Every reply is read within `timeout`
    seconds; a slower one raises (socket.timeout): a stuck session is a failure."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as smtp:
        code, text = smtp.docmd("XCLIENT", f"ADDR={addr} NAME=unknown")
        if code != 220:
            return f"XCLIENT {code} {text.decode()}"
        smtp.ehlo("client.example")
        code, text = smtp.mail(sender)
        if code != 250:
            return f"MAIL {code} {text.decode()}"
        code, text = smtp.rcpt("alice@example.test")
        if code != 250:
            return f"RCPT {code} {text.decode()}"
        try:
            smtp.data(f"Subject: {subject}\r\nMessage-ID: <{subject}@client.example>\r\n\r\n"
                      f"{subject}\r\n")
        except smtplib.SMTPResponseException as exc:
            error = exc.smtp_error
            return f"DATA {exc.smtp_code} {error.decode() if isinstance(error, bytes) else error}"
        return "DATA 250"


def maildir(node: Server) -> list[tuple[str, str]]:
    """alice's messages on the node: (Subject, the whole text)."""
    out = []
    for path in node.maildir_files("alice"):
        text = path.read_text(errors="replace")
        subject = re.search(r"^Subject: (.*)$", text, re.M)
        out.append((subject.group(1) if subject else str(path), text))
    return out


def subjects(*nodes: Server) -> list[str]:
    """The Subjects of alice's messages on the nodes, sorted (a message twice: twice)."""
    return sorted(subject for node in nodes for subject, _ in maildir(node))


def stderr(node: Server) -> str:
    """What the node's processes wrote to stderr so far (tracebacks of a session or a task
    that died: the client may never see them)."""
    assert node.proc is not None and node.proc.stderr is not None
    fd = node.proc.stderr.fileno()
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@dataclass
class Sent:
    subject: str
    node: int
    outcome: str  # deliver()'s answer, or the exception that ended the session


class Traffic(threading.Thread):
    """A client sending one message a session, in turn to each node, each from a /24 of its
    own (the connect reads the store, the RCPT reads and writes it), until stop() or
    `limit`, at most one message each `gap` seconds (so a failover of a few seconds falls
    inside it). Message n comes from client(n), a triplet seed() made old: it passes."""

    limit = 2000
    gap = 0.02

    def __init__(self, nodes: list[Server]) -> None:
        super().__init__(daemon=True)
        self.nodes = nodes
        self.sent: list[Sent] = []
        self.halt = threading.Event()

    @staticmethod
    def client(n: int) -> tuple[str, str]:
        """The network and the sender of message n."""
        return f"10.{1 + n // 250}.{n % 250}", f"sender{n}@client.example"

    def seed(self, port: int) -> None:
        """Every triplet of the traffic aged in the master at `port`, and in its replica."""
        with client(port) as redis:
            pipe = redis.pipeline(transaction=False)
            for n in range(self.limit):
                aged(pipe, *self.client(n))
            pipe.execute()
            assert redis.wait(1, 30_000) == 1  # the replica has them

    def run(self) -> None:
        for n in range(self.limit):
            if self.halt.wait(self.gap):
                return
            node = n % len(self.nodes)
            subject = f"traffic-{n}"
            network, sender = self.client(n)
            try:
                outcome = deliver(self.nodes[node].port, f"{network}.7", sender, subject,
                                  timeout=10)
            except (OSError, smtplib.SMTPException) as exc:
                outcome = repr(exc)
            self.sent.append(Sent(subject, node, outcome))

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=120)


@pytest.fixture
def redis_binary() -> str:
    return require("redis-server")


def attack_until_blocked(node: Server) -> str:
    """Dictionary attacks on `node` (four unknown recipients from each next address of
    SPAMMERS) until it logs a block (auto_block_threshold = 4): an address it covers."""
    tried: list[str] = []
    addresses = (f"{SPAMMERS}.{i}" for i in range(1, 250))

    def blocked() -> bool:
        for line in node.smtpd_log():
            m = re.match(rf"warning: auto-block: blocked ({re.escape(SPAMMERS)}\.\S+) for ",
                         line)
            if m and (m.group(1) in tried or m.group(1).endswith("/24")):
                tried.append(m.group(1) if "/" not in m.group(1) else tried[-1])
                return True
        tried.append(next(addresses))
        answer = xclient.session(node.port, tried[-1], [f"nobody{i}" for i in range(4)])
        # (a network blocked meanwhile, by events of several addresses, refuses the next)
        assert answer in ([550] * 4, REFUSED.format(tried[-1])), answer
        return False

    wait_until(blocked, timeout=60)
    return tried[-1]


TRIGGERS = ("SENTINEL FAILOVER", "master killed", "master paused")


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_mail_and_shared_state_survive_a_sentinel_failover(
        server_factory: Callable[..., Server], redis_binary: str, tmp_path: Path,
        trigger: str) -> None:
    """Two nodes behind three sentinels watching a master and its replica; a client sends
    while the master is replaced by the replica: SENTINEL FAILOVER (planned), SIGKILL (a
    crash), SIGSTOP (a blackhole). No accepted message is lost and no session hangs;
    afterwards, without a restart, each node greylists in the new master, a triplet one
    node greylisted passes on the other, and a block one node places the other enforces."""
    group: SentinelGroup = sentinel_group(redis_binary, tmp_path / "redis")
    traffic: Traffic | None = None
    try:
        nodes = [server_factory(redis_sentinels=group.addresses,
                                redis_sentinel_master=group.name, **STATEFUL).start()
                 for _ in range(2)]
        old = group.master()
        traffic = Traffic(nodes)
        traffic.seed(old.port)
        traffic.start()
        wait_until(lambda: len(traffic.sent) >= 10, timeout=60)  # the nodes use the store
        assert old.proc is not None
        before = len(traffic.sent)
        if trigger == "SENTINEL FAILOVER":
            group.failover()
        elif trigger == "master killed":
            os.kill(old.proc.pid, signal.SIGKILL)
            old.proc.wait(30)
        else:  # connections open, nothing answers (SIGCONT in group.stop())
            os.kill(old.proc.pid, signal.SIGSTOP)
        group.wait("a new master", lambda: all(
            addr is not None and addr[1] != old.port for addr in group.reported()))
        new = group.master()
        during = len(traffic.sent)
        assert during > before and traffic.is_alive(), "no traffic during the failover"
        wait_until(lambda: len(traffic.sent) >= max(60, during + 10), timeout=120)
        traffic.stop()
        assert not traffic.is_alive(), "a session is still running"
        sent = traffic.sent

        # every session ended with its message accepted (its triplet is old, and a store
        # that fails lets legitimate mail through: fail_open); none timed out
        failed = [s for s in sent if s.outcome != "DATA 250"]
        assert not failed, failed

        # each node greylists in the new master again: a new triplet gets 450 and is there.
        # (After SENTINEL FAILOVER the old master stays a writable master until Sentinel
        # demotes it, some 10 s later; a node asks the sentinels for the master once a
        # second and then empties its pool, so it writes there for a second at most.)
        greylisted = []
        for n, node in enumerate(nodes):
            network, sender = f"10.200.{n}", f"probe{n}@client.example"
            probes = itertools.count()

            def in_new_master(node: Server = node, n: int = n, network: str = network,
                              sender: str = sender,
                              probes: Iterator[int] = probes) -> bool:
                subject = f"probe-{n}-{next(probes)}"
                outcome = deliver(node.port, f"{network}.7", sender, subject, timeout=10)
                if outcome == "DATA 250":  # the store failed (fail_open): not back yet
                    sent.append(Sent(subject, n, outcome))
                    return False
                assert outcome.startswith(GREYLISTED), outcome
                with client(new.port) as redis:
                    return bool(redis.exists(triplet(network, sender)))

            wait_until(in_new_master, timeout=60)
            greylisted.append((network, sender))

        # node 0's triplet, once its delay is over (aged in the new master: no waiting),
        # passes on node 1 with postgrey's header: node 1 read what node 0 wrote
        network, sender = greylisted[0]
        with client(new.port) as redis:
            aged(redis, network, sender)
        attempts = itertools.count()

        def passes_on_node_1() -> bool:
            subject = f"retry-{next(attempts)}"
            outcome = deliver(nodes[1].port, f"{network}.9", sender, subject, timeout=10)
            assert outcome == "DATA 250", outcome
            sent.append(Sent(subject, 1, outcome))
            return any(got == subject and "X-Greylist: delayed " in text
                       for got, text in maildir(nodes[1]))

        wait_until(passes_on_node_1, timeout=30)

        # a block that node 0 places through the store, node 1 enforces at connect
        spammer = attack_until_blocked(nodes[0])
        wait_until(lambda: xclient.session(nodes[1].port, spammer, ["alice"]) ==
                   REFUSED.format(spammer), timeout=30)

        # no accepted message lost: each one is in a Maildir, once
        wait_until(lambda: subjects(*nodes) == sorted(s.subject for s in sent), timeout=30)
        for node in nodes:  # no session or task died on an exception
            assert node.proc is not None and node.proc.poll() is None
            assert "Traceback" not in (errors := stderr(node)), errors
    finally:
        if traffic is not None:
            traffic.stop()
        group.stop()


def mailgate_block_add(node: Server, target: str) -> subprocess.CompletedProcess[str]:
    """`mailgate block add` on the node's configuration (its Redis), with a deadline of its
    own: the operator's tool, run while the nodes serve."""
    return subprocess.run([sys.executable, "-m", "mailgate.cli", "block", "add", "-c",
                           str(node.root / "etc"), "-o", "redis_timeout=5s", target],
                          capture_output=True, text=True, timeout=60)


def test_a_paused_redis_neither_stalls_sessions_nor_stays_forgotten(
        server_factory: Callable[..., Server], redis_binary: str, tmp_path: Path) -> None:
    """Redis stopped with SIGSTOP (connections open, nothing answers). A node with the
    default 50 ms deadline and fail_open accepts legitimate mail, one with tempfail answers
    451 4.3.5 where greylisting needs the store; each reply comes before the client's
    timeout, each node logs one warning for the whole outage. After SIGCONT each logs one
    line that Redis is back, greylists again, and enforces a block added through Redis."""
    redis = RedisServer(redis_binary, tmp_path / "redis").start()
    assert redis.proc is not None
    pid = redis.proc.pid
    paused = False
    try:
        params = dict(STATEFUL, redis_servers=f"127.0.0.1:{redis.port}")
        open_node = server_factory(**params).start()
        temp_node = server_factory(**params, redis_failure_action="tempfail").start()
        nodes = [open_node, temp_node]
        networks = (f"10.{1 + i // 250}.{i % 250}" for i in itertools.count())
        accepted: list[str] = []

        def greylisted(node: Server) -> bool:
            """A new triplet gets 450: the node reads and writes the store."""
            network = next(networks)
            subject = f"grey-{network}"
            outcome = deliver(node.port, f"{network}.7", f"{subject}@client.example",
                              subject, timeout=10)
            if outcome == "DATA 250":  # a 50 ms deadline missed on a busy machine
                accepted.append(subject)
            return outcome.startswith(GREYLISTED)

        for node in nodes:  # Redis works: both greylist, their guards are up
            wait_until(functools.partial(greylisted, node), timeout=30)
        marks = [len(node.smtpd_log()) for node in nodes]

        os.kill(pid, signal.SIGSTOP)
        paused = True
        outcomes: list[tuple[int, str, str]] = []
        started = time.monotonic()
        # sessions over several of the guard's retry periods (one attempt a second)
        while time.monotonic() - started < 3.5 or len(outcomes) < 8:
            for n, node in enumerate(nodes):
                network = next(networks)
                subject = f"paused-{network}"
                outcomes.append((n, subject, deliver(  # a reply slower than 5 s raises
                    node.port, f"{network}.7", f"{subject}@client.example", subject,
                    timeout=5)))
        os.kill(pid, signal.SIGCONT)
        paused = False

        assert all(outcome == "DATA 250" for n, _, outcome in outcomes if n == 0), outcomes
        assert all(outcome == TEMPFAIL for n, _, outcome in outcomes if n == 1), outcomes
        accepted += [subject for n, subject, _ in outcomes if n == 0]

        # back: each node greylists again and said once that Redis went, once that it is back
        def said_back(node: Server, mark: int) -> bool:
            return AVAILABLE in node.smtpd_log()[mark:]

        for node, mark in zip(nodes, marks, strict=True):
            wait_until(functools.partial(greylisted, node), timeout=30)
            wait_until(functools.partial(said_back, node, mark))
            lines = node.smtpd_log()[mark:]
            outage = lines[:lines.index(AVAILABLE)]
            went = [line for line in outage if line.startswith(UNAVAILABLE)]
            action = "fail_open" if node is open_node else "tempfail"
            assert len(went) == 1 and went[0].endswith(f"; redis_failure_action = {action}"), \
                outage

        # shared again: a block added through Redis is enforced by both nodes
        added = mailgate_block_add(open_node, "192.0.2.66")
        assert added.returncode == 0, added.stderr

        def refuses(node: Server) -> bool:
            return xclient.session(node.port, "192.0.2.66", ["alice"]) == \
                REFUSED.format("192.0.2.66")

        for node in nodes:
            wait_until(functools.partial(refuses, node), timeout=30)

        wait_until(lambda: subjects(open_node) == sorted(accepted), timeout=30)
        assert subjects(temp_node) == []
        for node in nodes:
            assert "Traceback" not in (errors := stderr(node)), errors
    finally:
        if paused:
            os.kill(pid, signal.SIGCONT)
        redis.stop()
