"""Three gateways, one Redis: a dictionary attack spread over the nodes is blocked on every
node, a greylisted triplet passes on another node, and mail keeps flowing when Redis stops.
Each test runs against one redis-server and against a three-master Redis Cluster."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Server, require, wait_until
from mailgate.config.config import Config
from mailgate.state.redisstore import RedisStore, redis_client
from mailgate.state.settings import StateSettings
from support import xclient
from support.redisserver import RedisServer, cluster

ATTACKED = "198.51.100"
REFUSED = "421 4.3.2 Service currently unavailable; client [{}] blocked automatically"


def session(server: Server, addr: str, recipients: list[str], deliver: bool = False
            ) -> list[int] | str:
    return xclient.session(server.port, addr, recipients, deliver)


@dataclass
class Redis:
    """The Redis the nodes share: one server, or the masters of a Cluster."""

    servers: list[RedisServer]
    cluster: bool

    @property
    def params(self) -> dict[str, str]:
        """main.cf: the server, or the Cluster's seed nodes (all of them)."""
        servers = " ".join(f"127.0.0.1:{server.port}" for server in self.servers)
        return {"redis_servers": servers, **({"redis_cluster": "yes"} if self.cluster else {})}

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(params=["server", pytest.param("cluster", marks=pytest.mark.filterwarnings(
    # redis-py's cluster client (test_a_triplet_...'s own) leaves its first probe
    # connection to a seed node for the garbage collector even after aclose()
    "ignore::pytest.PytestUnraisableExceptionWarning"))])
def redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Redis]:
    """One redis-server, or a Cluster of three masters (redis-cli --cluster create)."""
    binary = require("redis-server")
    if request.param == "cluster":
        shared = Redis(cluster(binary, require("redis-cli"), tmp_path / "cluster"), True)
    else:
        shared = Redis([RedisServer(binary, tmp_path / "redis").start()], False)
    try:
        yield shared
    finally:
        shared.stop()


def start_nodes(server_factory: Callable[..., Server], redis: Redis, **params: str
                ) -> list[Server]:
    """Three mailgate nodes, each with its own queue and local state, sharing one Redis."""
    return [server_factory(
        smtpd_processes="1", redis_timeout="0.2s", smtpd_authorized_xclient_hosts="127.0.0.0/8",
        **redis.params, **params).start() for _ in range(3)]


GREYLISTING = "permit_mynetworks, reject_unauth_destination, check_greylist"


def test_a_dictionary_attack_over_the_nodes_is_blocked_on_every_node(
        server_factory: Callable[..., Server], redis: Redis) -> None:
    """Two guesses per address, round-robin over the nodes: no node alone sees the
    threshold (6), the site does after three sessions; then every node refuses the /24."""
    nodes = start_nodes(server_factory, redis, auto_block_threshold="6")
    addresses = iter(range(10, 99))
    for n in range(3):
        assert session(nodes[n], f"{ATTACKED}.{next(addresses)}",
                       ["nobody1", "nobody2"]) == [550, 550]
    wait_until(lambda: any("auto-block: blocked 198.51.100.0/24" in line
                           for node in nodes for line in node.smtpd_log()))
    blocked = [node for node in nodes if any("auto-block: blocked" in line
                                             for line in node.smtpd_log())]
    assert len(blocked) == 1  # one node placed it, for all
    for node in nodes:
        def refused(node: Server = node) -> bool:
            addr = f"{ATTACKED}.{next(addresses)}"
            return session(node, addr, ["nobody3"]) == REFUSED.format(addr)

        wait_until(refused)  # each node's short cache of blocks expires within seconds
    # never delayed: another network on every node
    for n, node in enumerate(nodes):
        assert session(node, f"203.0.113.{n + 1}", ["alice"], deliver=True) == [250]


def test_a_triplet_greylisted_on_one_node_passes_on_another(
        server_factory: Callable[..., Server], redis: Redis) -> None:
    """Node 0 greylists a first attempt; the delay passes (the shared record is aged, no
    sleeping); node 1, which never saw the client, lets the retry through."""
    nodes = start_nodes(server_factory, redis, smtpd_recipient_restrictions=GREYLISTING)
    assert session(nodes[0], "203.0.113.50", ["alice"]) == [450]
    key = "greylist:triplet:203.0.113.0/someone@client.example/alice@example.test"

    async def age() -> None:
        store = RedisStore(redis_client(StateSettings.from_config(Config.load(overrides=[
            f"{name}={value}" for name, value in redis.params.items()]))))
        record = await store.get(key)
        assert record is not None  # node 0 wrote it to Redis
        then = int(time.time()) - 400
        await store.put(key, f"{then},{then}", 86400)
        await store.aclose()

    asyncio.run(age())
    assert session(nodes[1], "203.0.113.50", ["alice"], deliver=True) == [250]
    wait_until(lambda: len(nodes[1].maildir_files("alice")) == 1)
    assert "X-Greylist: delayed " in nodes[1].maildir_files("alice")[0].read_text()
    # the same /24 (greylist_ipv4_prefix_length = 24), sender and recipient: the same
    # triplet, on the third node too; another recipient is a new triplet
    assert session(nodes[2], "203.0.113.51", ["alice"]) == [250]
    assert session(nodes[2], "203.0.113.50", ["bob"]) == [450]


def test_mail_keeps_flowing_when_redis_stops(server_factory: Callable[..., Server],
                                            redis: Redis) -> None:
    """redis_failure_action = fail_open (default): with Redis gone, every node accepts a
    legitimate client (greylisting and blocks let it through) and logs one warning."""
    nodes = start_nodes(server_factory, redis, smtpd_recipient_restrictions=GREYLISTING,
                        auto_block_threshold="6")
    assert session(nodes[0], "192.0.2.10", ["alice"]) == [450]  # Redis works: greylisted
    redis.stop()
    for n, node in enumerate(nodes):
        assert session(node, f"192.0.2.{20 + n}", ["bob"], deliver=True) == [250]
        node.wait_log(r"warning: redis: state backend unavailable: .*; "
                      r"redis_failure_action = fail_open")

    def delivered(node: Server) -> bool:
        return len(node.maildir_files("bob")) == 1

    for node in nodes:
        wait_until(functools.partial(delivered, node))
