"""anvil's counts and policyd's error counts shared by gateways through one real Redis: a rate
limit and a connection limit counted across nodes, and the failure actions when Redis stops."""

from __future__ import annotations

import asyncio
import re
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_module

from conftest import Client, Server, require, wait_until
from mailgate.app import build_engine, build_resolver
from mailgate.config.config import Config
from mailgate.config.settings import SmtpdSettings
from mailgate.maps import default_registry
from mailgate.policy.protocol import Request
from mailgate.policyd.server import PolicydSettings, PolicyService, SharedErrors
from mailgate.state.open import open_store
from mailgate.state.settings import StateSettings
from support.metrics import scrape
from support.redisserver import RedisServer

# every connection from 127.0.0.1 is counted (no exceptions), and accepted for example.test;
# each count asks Redis (the default trusts a count read back for 0.1s: test_cached_counts)
COUNTED = {"smtpd_client_event_limit_exceptions": "", "smtpd_processes": "1",
           "redis_timeout": "0.2s", "redis_count_cache_time": "0"}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(require("redis-server"), tmp_path / "redis").start()
    yield server
    server.stop()


def nodes(server_factory, count: int, redis: RedisServer | None, **params: str  # type: ignore[no-untyped-def]
          ) -> list[Server]:
    shared = {"redis_servers": f"127.0.0.1:{redis.port}"} if redis else {}
    return [server_factory(**COUNTED, **shared, **params).start() for _ in range(count)]


def site_count(redis: RedisServer, name: str) -> int:
    """A site-wide anvil count as Redis holds it (`rcpt:127.0.0.1`, or `conn:127.0.0.1`: a
    hash of each worker's share, "COUNT EXPIRY")."""
    client = redis_module.Redis(port=redis.port, socket_timeout=5, decode_responses=True)
    try:
        key = f"mailgate:{{anvil:{name}}}"
        if name.startswith("conn:"):
            return sum(int(share.split()[0]) for share in client.hvals(key))
        value = client.get(key)
    finally:
        client.close()
    return int(value or 0)


def recipients(node: Server, count: int) -> list[str]:
    """One session to `node` with `count` recipients: each RCPT's reply."""
    client = Client(node.port)
    try:
        assert client.reply().startswith("220 ")
        assert client.cmd("EHLO client.example").startswith("250")
        assert client.cmd("MAIL FROM:<someone@client.example>").startswith("250")
        return [client.cmd("RCPT TO:<alice@example.test>") for _ in range(count)]
    finally:
        client.close()


def test_a_recipient_rate_is_counted_across_the_nodes(server_factory, redis: RedisServer  # type: ignore[no-untyped-def]
                                                     ) -> None:
    """Limit 4 per minute: two recipients on each of two nodes, then the fifth on the third
    node is over the site's limit although that node has seen none."""
    limit = {"smtpd_client_recipient_rate_limit": "4"}
    apart = nodes(server_factory, 3, None, **limit)  # the control: each node alone
    assert all(r.startswith("250 ") for node in apart for r in recipients(node, 2))
    shared = nodes(server_factory, 3, redis, **limit)
    assert all(r.startswith("250") for r in recipients(shared[0], 2) + recipients(shared[1], 2))
    # a worker sends what it counted every few milliseconds (a client it knows costs no wait)
    wait_until(lambda: site_count(redis, "rcpt:127.0.0.1") == 4)
    assert recipients(shared[2], 1) == ["450 4.7.1 Error: too many recipients from 127.0.0.1"]
    shared[2].wait_log(re.escape("warning: Recipient address rate limit exceeded: 5 from "
                       "localhost[127.0.0.1] for service"))
    assert recipients(shared[0], 1)[0].startswith("450 4.7.1")  # the site's count, everywhere


def test_a_connection_count_is_counted_across_the_nodes(server_factory, redis: RedisServer  # type: ignore[no-untyped-def]
                                                        ) -> None:
    """Limit 2 connections: one open on each of two nodes, the third node refuses the
    client; when one of them ends, the third node takes it."""
    first, second, third = nodes(server_factory, 3, redis,
                                 smtpd_client_connection_count_limit="2")
    held = [Client(first.port), Client(second.port)]
    try:
        for client in held:
            assert client.reply().startswith("220 ")
        wait_until(lambda: site_count(redis, "conn:127.0.0.1") == 2)
        refused = Client(third.port)
        assert refused.reply() == \
            "421 4.7.0 mx.example.test Error: too many connections from 127.0.0.1"
        refused.close()
        third.wait_log(re.escape("warning: Connection concurrency limit exceeded: 3 from "
                       "localhost[127.0.0.1] for service"))
        assert held[0].cmd("QUIT").startswith("221")
    finally:
        for client in held:
            client.close()

    def welcomed() -> bool:
        client = Client(third.port)
        try:
            return client.reply().startswith("220 ")
        finally:
            client.close()

    wait_until(welcomed)  # the count went down behind the first session's end


def test_a_connection_rate_is_counted_across_the_nodes(server_factory, redis: RedisServer  # type: ignore[no-untyped-def]
                                                       ) -> None:
    pair = nodes(server_factory, 2, redis, smtpd_client_connection_rate_limit="3")
    for node in (pair[0], pair[1], pair[0]):
        with smtplib.SMTP("127.0.0.1", node.port, timeout=10) as smtp:
            assert smtp.noop()[0] == 250
    wait_until(lambda: site_count(redis, "connect:127.0.0.1") == 3)
    client = Client(pair[1].port)
    assert client.reply() == "421 4.7.0 mx.example.test Error: too many connections from 127.0.0.1"
    client.close()
    pair[1].wait_log(re.escape("warning: Connection rate limit exceeded: 4 from localhost[127.0.0.1] "
                     "for service"))


def test_redis_stopped_with_fail_open_counts_on_each_node(server_factory, redis: RedisServer  # type: ignore[no-untyped-def]
                                                          ) -> None:
    node, = nodes(server_factory, 1, redis, smtpd_client_recipient_rate_limit="2")
    redis.stop()
    assert [r[:3] for r in recipients(node, 3)] == ["250", "250", "450"]  # the node's count
    node.wait_log(re.escape("warning: redis: state backend unavailable:"))
    assert sum("state backend unavailable" in line for line in node.smtpd_log()) == 1


def test_redis_stopped_with_tempfail_refuses_for_now(server_factory, redis: RedisServer  # type: ignore[no-untyped-def]
                                                     ) -> None:
    node, = nodes(server_factory, 1, redis, redis_failure_action="tempfail")
    client = Client(node.port)
    assert client.reply().startswith("220 ")  # counted while Redis answers
    redis.stop()

    def refused() -> bool:  # once a worker found Redis gone (its counts stay a second)
        probe = Client(node.port)
        try:
            return probe.reply() == "421 4.3.5 mx.example.test Server configuration problem"
        finally:
            probe.close()

    wait_until(refused)
    assert client.cmd("QUIT").startswith("221")  # the session in progress goes on
    client.close()
    redis.start()

    def welcomed() -> bool:  # back without a restart (one attempt a second while down)
        probe = Client(node.port)
        try:
            return probe.reply().startswith("220 ")
        finally:
            probe.close()

    wait_until(welcomed)
    node.wait_log(re.escape("warning: redis: state backend available again"))


def _request(addr: str) -> Request:
    return Request({"request": "smtpd_access_policy", "protocol_state": "RCPT",
                    "protocol_name": "ESMTP", "client_address": addr,
                    "client_name": "h.example", "reverse_client_name": "h.example",
                    "helo_name": "h.example", "sender": "s@example.org",
                    "recipient": "r@example.test"})


def test_policyd_error_counts_follow_the_client_to_another_gateway(
        redis: RedisServer, tmp_path: Path) -> None:
    """Two policyd services (two gateways' policy servers) with one Redis: the errors a
    client made at the first count at the second (the tarpit, then 421)."""
    cfg = Config.load(overrides=[
        f"state_database={tmp_path / 'state.db'}", f"redis_servers=127.0.0.1:{redis.port}",
        "policyd_restrictions=reject", "smtpd_soft_error_limit=1",
        "smtpd_hard_error_limit=2"])

    async def service() -> PolicyService:
        registry = default_registry()
        engine, _ = build_engine(cfg, registry, build_resolver(cfg, registry, frozenset()),
                                 lambda text: None, policyd=True,
                                 state=open_store(StateSettings.from_config(cfg),
                                                  lambda text: None))
        settings = PolicydSettings.from_config(cfg)
        assert engine.tables.state.shared
        return PolicyService(engine, settings, SmtpdSettings.from_config(cfg),
                             lambda text: None,
                             SharedErrors(engine.tables.state, settings.state_ttl))

    async def run() -> None:
        first, second = await service(), await service()
        assert await first.answer(_request("192.0.2.1"), "p") == \
            ("554 5.7.1 Access denied", 0.0)
        assert await second.answer(_request("192.0.2.1"), "p") == \
            ("554 5.7.1 Access denied", 1.0)  # the tarpit: one error made elsewhere
        assert await first.answer(_request("192.0.2.1"), "p") == \
            ("421 4.7.0 Error: too many errors", 0.0)
        assert (await second.answer(_request("192.0.2.2"), "p"))[1] == 0.0  # another client
        for svc in (first, second):
            await svc.engine.tables.state.aclose()

    asyncio.run(run())


def test_block_and_report_read_the_shared_state(server_factory, redis: RedisServer  # type: ignore[no-untyped-def]
                                                ) -> None:
    """A block added with `mailgate block` against one gateway's configuration is listed
    by `mailgate report -c` against another's: both read Redis, not a machine's file."""
    first, second = nodes(server_factory, 2, redis, auto_block_threshold="10")

    def cli(node: Server, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailgate.cli", *args, "-c",
                               str(node.root / "etc")], capture_output=True, text=True,
                              timeout=60)

    added = cli(first, "block", "add", "198.51.100.7", "-t", "1h")
    assert added.returncode == 0, added.stderr
    listed = cli(second, "block", "list")
    assert listed.stdout.startswith("198.51.100.7 blocked until"), listed
    report = cli(second, "report", str(second.root / "maillog"))
    assert report.returncode == 0, report.stderr
    section = report.stdout.split(f"Blocks in force now (redis 127.0.0.1:{redis.port})\n")
    assert len(section) == 2, report.stdout
    lines = section[1].splitlines()
    assert lines[1] == "  1 blocks (1 addresses, 0 networks)"
    assert re.match(r"  198\.51\.100\.7 +until .* \((3[56]\d\d)s left\), offence ",
                    lines[2]), lines
    redis.stop()
    down = cli(second, "report", str(second.root / "maillog"))
    assert down.returncode == 0 and "  unavailable: redis: " in down.stdout, down


def test_the_backend_state_is_a_metric(server_factory, redis: RedisServer) -> None:  # type: ignore[no-untyped-def]
    """mailgate_state_backend_up: 1 while Redis answers, 0 once a worker found it gone,
    1 again when it is back (no restart)."""
    node = server_factory(**COUNTED, redis_servers=f"127.0.0.1:{redis.port}",
                          metrics_listen="127.0.0.1:0").start()
    assert node.proc is not None and node.proc.stdout is not None
    found = re.fullmatch(r"mailgate: metrics on (http://127\.0\.0\.1:\d+/metrics)\n",
                         node.proc.stdout.readline())
    assert found
    url = found.group(1)

    def up() -> float | None:
        samples = scrape(url)
        key = ("mailgate_state_backend_up", frozenset())
        return samples.get(key)

    wait_until(lambda: up() == 1.0)
    redis.stop()
    assert recipients(node, 1)[0].startswith("250")  # fail_open: the session goes on
    wait_until(lambda: up() == 0.0)
    redis.start()

    def recovered() -> bool:
        recipients(node, 1)  # a connection asks Redis again (once a second while down)
        return up() == 1.0

    wait_until(recovered)
