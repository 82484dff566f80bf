"""The Redis state backend against real redis-server processes: one server, Sentinel, Cluster,
and what happens when Redis stops, is slow, and comes back."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Client, Server, require
from mailgate.config.config import Config
from mailgate.state import Change, MemoryStore, StateUnavailable
from mailgate.state.guard import GuardedStore
from mailgate.state.open import open_store
from mailgate.state.redisstore import RedisStore, redis_client
from mailgate.state.settings import StateSettings
from support.redisserver import RedisServer, cluster, sentinel


@pytest.fixture(scope="module")
def redis_bin() -> tuple[str, str]:
    return require("redis-server"), require("redis-cli")


@pytest.fixture
def server(redis_bin: tuple[str, str], tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(redis_bin[0], tmp_path / "redis").start()
    yield redis
    redis.stop()


def settings(tmp_path: Path, **params: str) -> StateSettings:
    cfg = Config.load(overrides=[f"state_database={tmp_path / 'state.db'}",
                                 *(f"{k}={v}" for k, v in params.items())])
    return StateSettings.from_config(cfg)


def contract(store: RedisStore | GuardedStore) -> None:
    async def run() -> None:
        assert await store.get("k") is None
        await store.put("k", "v1", 100)
        assert await store.get("k") == "v1"
        assert await store.incr("c:1", 1, 60) == 1
        assert await store.incr("c:1", 4, 60) == 5
        assert await store.add("g:1", 2, 60) == 2
        assert await store.add("g:1", -5, 60) == 0
        counted = await store.counts([Change("c:1", 1, 60), Change("s:1", 3, 30, share="n1")])
        assert [value for value, _ in counted] == [6, 3]
        assert 59 < counted[0][1] <= 60 and counted[1][1] == 30
        assert 59 < (await store.items("c:"))[0].expires - time.time() <= 60.5
        counted = await store.counts([Change("s:1", 2, 30, share="n2"),
                                      Change("s:1", 1, 30, share="n1")])
        assert [value for value, _ in counted] == [5, 3]  # n1's share is set, not added
        await store.counts([Change("s:1", 4, 0.05, share="n3")])  # n3 dies: its share goes
        deadline = time.monotonic() + 10
        while (await store.counts([Change("s:1", 0, 30, share="n4")]))[0][0] != 3:
            assert time.monotonic() < deadline, "a share outlived its lifetime"
        assert (await store.counts([Change("s:1", 0, 30, share="n1"),
                                    Change("s:1", 0, 30, share="n2")]))[1][0] == 0
        await store.put("block:192.0.2.0/24", "x", 100)
        await store.put("block*odd", "y", 100)
        items = await store.items("block:")
        assert [(i.key, i.value) for i in items] == [("block:192.0.2.0/24", "x")]
        assert 95 < items[0].expires - time.time() <= 100.5
        assert await store.delete("k") is True
        assert await store.delete("k") is False
        assert await store.get("k") is None
        await store.aclose()

    asyncio.run(run())


def test_one_server(server: RedisServer, tmp_path: Path, redis_bin: tuple[str, str]) -> None:
    cfg = settings(tmp_path, redis_servers=f"127.0.0.1:{server.port}",
                   redis_key_prefix="mg-test:")
    contract(RedisStore(redis_client(cfg), cfg.key_prefix))
    keys = subprocess.run([redis_bin[1], "-p", str(server.port), "--scan"], check=True,
                          capture_output=True, text=True).stdout.split()
    # documented key shape: prefix, then the key in a hash tag; counters carry their window
    assert "mg-test:{c:1}" in keys
    ttl = subprocess.run([redis_bin[1], "-p", str(server.port), "pttl", "mg-test:{c:1}"],
                         check=True, capture_output=True, text=True).stdout
    assert 0 < int(ttl) <= 60_000


def test_password_and_user(redis_bin: tuple[str, str], tmp_path: Path) -> None:
    redis = RedisServer(redis_bin[0], tmp_path / "redis", extra=[
        "--user", "default", "off", "--user", "mailgate", "on", ">s3cret", "~*", "+@all"]
    ).start()
    try:
        (tmp_path / "pw").write_text("s3cret\n")
        cfg = settings(tmp_path, redis_servers=f"127.0.0.1:{redis.port}",
                       redis_username="mailgate", redis_password_file=str(tmp_path / "pw"))
        contract(RedisStore(redis_client(cfg)))
        wrong = settings(tmp_path, redis_servers=f"127.0.0.1:{redis.port}")
        async def refused() -> None:
            store = RedisStore(redis_client(wrong))
            try:
                with pytest.raises(StateUnavailable):
                    await store.get("k")
            finally:
                await store.aclose()

        asyncio.run(refused())
    finally:
        redis.stop()


def test_sentinel(redis_bin: tuple[str, str], server: RedisServer, tmp_path: Path) -> None:
    watcher = sentinel(redis_bin[0], server, tmp_path / "sentinel")
    try:
        cfg = settings(tmp_path, redis_sentinels=f"127.0.0.1:{watcher.port}",
                       redis_sentinel_master="mailmaster")
        contract(RedisStore(redis_client(cfg)))
    finally:
        watcher.stop()


# redis-py's cluster client leaves its first probe connection to the seed node for the
# garbage collector even after aclose(): its ResourceWarning is not ours
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cluster(redis_bin: tuple[str, str], tmp_path: Path) -> None:
    nodes = cluster(redis_bin[0], redis_bin[1], tmp_path / "cluster")
    try:
        cfg = settings(tmp_path, redis_cluster="yes",
                       redis_servers=" ".join(f"127.0.0.1:{n.port}" for n in nodes))
        contract(RedisStore(redis_client(cfg)))
    finally:
        for node in nodes:
            node.stop()


def guarded(server: RedisServer, tmp_path: Path, action: str,
            warnings: list[str]) -> GuardedStore:
    cfg = settings(tmp_path, redis_servers=f"127.0.0.1:{server.port}",
                   redis_failure_action=action, redis_timeout="0.2s")
    store = open_store(cfg, warnings.append)
    assert isinstance(store, GuardedStore)
    return store


@pytest.mark.parametrize("action", ["fail_open", "tempfail", "local"])
def test_redis_stopped_and_back(server: RedisServer, tmp_path: Path, action: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Each operation answers within the deadline with the configured action; one warning
    when Redis goes, one when it is back; the counts then come from Redis again."""
    import mailgate.state.guard as guard

    monkeypatch.setattr(guard, "RETRY", 0.0)  # try Redis on every call: no waiting in tests
    warnings: list[str] = []
    store = guarded(server, tmp_path, action, warnings)

    async def run() -> None:
        assert await store.incr("n", 1, 60) == 1
        server.stop()
        outcomes = []
        for _ in range(5):
            started = time.monotonic()
            try:
                outcomes.append(await store.incr("n", 1, 60))
            except StateUnavailable as exc:
                outcomes.append("open" if exc.fail_open else "tempfail")
            assert time.monotonic() - started < 2.0  # bounded: never stalls the loop
        expected: dict[str, list[object]] = {"fail_open": ["open"] * 5,
                                              "tempfail": ["tempfail"] * 5,
                                              "local": [1, 2, 3, 4, 5]}
        assert outcomes == expected[action]
        assert len(warnings) == 1 and "state backend unavailable" in warnings[0]
        assert f"redis_failure_action = {action}" in warnings[0]
        server.start()  # the same port
        assert await store.get("n") is None  # a fresh Redis (no persistence in this test)
        assert await store.incr("n", 1, 60) == 1
        assert warnings[1:] == ["redis: state backend available again"]
        await store.aclose()

    asyncio.run(run())


def test_a_slow_redis_is_a_failure_within_the_deadline(tmp_path: Path,
                                                      redis_bin: tuple[str, str]) -> None:
    server = RedisServer(redis_bin[0], tmp_path / "slow",
                         extra=["--enable-debug-command", "yes"]).start()
    warnings: list[str] = []
    sleeper: list[subprocess.Popen[bytes]] = []

    async def run() -> float:
        store = guarded(server, tmp_path, "fail_open", warnings)
        await store.put("k", "v", 60)
        sleeper.append(subprocess.Popen(
            [redis_bin[1], "-p", str(server.port), "debug", "sleep", "2"],
            stdout=subprocess.DEVNULL))
        deadline = time.monotonic() + 5
        failed: StateUnavailable | None = None
        while failed is None and time.monotonic() < deadline:  # until DEBUG SLEEP holds it
            started = time.monotonic()
            try:
                await store.get("k")
            except StateUnavailable as exc:
                failed = exc
            elapsed = time.monotonic() - started
        assert failed is not None
        assert failed.fail_open
        await store.aclose()
        return elapsed

    try:
        assert asyncio.run(run()) < 0.5  # the 0.2 s deadline, not the 2 s sleep
        assert "timeout after 0.2s" in warnings[0]
    finally:
        for proc in sleeper:
            proc.wait(10)
        server.stop()


def test_local_backend_when_no_redis_is_named(tmp_path: Path) -> None:
    store = open_store(settings(tmp_path), lambda text: None)
    assert type(store).__name__ == "LocalStore"
    assert not isinstance(store, MemoryStore)


def test_an_access_table_in_redis(server: RedisServer, server_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                                  redis_bin: tuple[str, str]) -> None:
    """A site pushes a sender block into Redis: the next MAIL FROM sees it, without a reload;
    Redis gone is a temporary failure, never an accepted sender."""
    table = tmp_path / "redis-senders.cf"
    table.write_text(f"# pushed by the site's blocklist tool\nhosts = 127.0.0.1:{server.port}\n"
                     "key_format = sender:%s\ntimeout = 0.2s\n")
    smtpd: Server = server_factory(
        smtpd_sender_restrictions=f"check_sender_access redis:{table}").start()

    def rcpt_from(sender: str) -> str:
        client = Client(smtpd.port)
        client.reply()
        client.send("HELO client.example")
        client.reply()
        client.send(f"MAIL FROM:<{sender}>")
        client.reply()
        client.send("RCPT TO:<alice@example.test>")  # smtpd_delay_reject: judged here
        reply = client.reply()
        client.close()
        return reply

    assert rcpt_from("spammer@bad.example").startswith("250 ")
    subprocess.run([redis_bin[1], "-p", str(server.port), "set",
                    "sender:spammer@bad.example", "REJECT pushed block"], check=True,
                   capture_output=True)
    assert rcpt_from("Spammer@Bad.Example").startswith("554 5.7.1 ")  # folded, as hash:
    assert rcpt_from("friend@good.example").startswith("250 ")
    server.stop()
    assert rcpt_from("friend@good.example").startswith("451 4.3.5 ")
    smtpd.wait_log(rf"warning: redis:{table} lookup error for \"friend@good.example\"")


def test_a_full_redis_is_a_failure_reported_once(tmp_path: Path,
                                                 redis_bin: tuple[str, str]) -> None:
    """maxmemory reached with noeviction: writes are refused (OOM) while reads still work;
    the writes get the failure action, with one warning, not one per success of a read."""
    import redis as redis_module

    full = RedisServer(redis_bin[0], tmp_path / "full",
                       extra=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]).start()
    try:
        filler = redis_module.Redis(port=full.port)
        try:
            for n in range(10_000):  # (bounded: 4 MiB is reached long before)
                filler.set(f"filler:{n}", "x" * 4096)
        except redis_module.exceptions.OutOfMemoryError:
            pass
        else:
            raise AssertionError("Redis never filled up")
        finally:
            filler.close()
        warnings: list[str] = []
        store = guarded(full, tmp_path, "fail_open", warnings)

        async def run() -> None:
            await store.get("anything")  # reads work
            for _ in range(3):
                with pytest.raises(StateUnavailable) as refused:
                    await store.put("k", "v", 60)
                assert refused.value.fail_open
                assert await store.get("k") is None  # a read succeeds...
            await store.aclose()

        import mailgate.state.guard as guard
        saved, guard.RETRY = guard.RETRY, 0.0  # try Redis at every call
        try:
            asyncio.run(run())
        finally:
            guard.RETRY = saved
        assert len(warnings) == 1 and "maxmemory" in warnings[0], warnings  # ...not "back"
    finally:
        full.stop()
