"""The Redis backend of the client state: one key per entry, atomic counters by a Lua script."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from mailgate.state.settings import StateSettings
from mailgate.state.store import Change, Item, StateUnavailable

# INCRBY, and the window's expiry set by the event that opened it: atomic, one round trip
_INCR = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return count
"""
# a gauge: INCRBY clamped at zero, its lifetime restarted by every change
_ADD = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count < 0 then count = 0; redis.call('SET', KEYS[1], 0) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return count
"""
# a window with the lifetime left: {value, PTTL} (sent with EVAL in a pipeline: Redis keeps
# the compiled script by its digest, and Cluster routes it by key)
_COUNT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {count, redis.call('PTTL', KEYS[1])}
"""
# a node's share of a sum: a hash of node → "count expiry" (Redis' own clock, in ms); sets
# ARGV[3]'s share to ARGV[1] (0: drops it) for ARGV[2] ms, drops the expired ones and returns
# {the sum of the live shares, ARGV[2]}; the hash lives as long as its longest-lived share
_SHARE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if tonumber(ARGV[1]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[3], ARGV[1] .. ' ' .. (now + ttl))
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
else
  redis.call('HDEL', KEYS[1], ARGV[3])
end
local sum = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local n, expires = string.match(all[i + 1], '^(%d+) (%d+)$')
  if n and tonumber(expires) > now then
    sum = sum + tonumber(n)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return {sum, ttl}
"""
MASTER_CHECK = 1.0  # seconds between two questions to Sentinel about the master
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def redis_client(settings: StateSettings) -> Any:
    """A redis.asyncio client for the settings: a Sentinel-managed master, a Cluster, or one
    server (the first of redis_servers), with the deadline as socket timeouts."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel

    options: dict[str, Any] = {
        "socket_timeout": settings.timeout, "socket_connect_timeout": settings.timeout,
        "password": settings.password, "username": settings.username,
        "decode_responses": True}
    if settings.tls:
        options["ssl"] = True
    if settings.sentinels:
        sentinel = Sentinel(list(settings.sentinels), sentinel_kwargs={  # type: ignore[no-untyped-call]
            "socket_timeout": settings.timeout, "socket_connect_timeout": settings.timeout},
            **options)
        master = sentinel.master_for(settings.sentinel_master)
        master.mailgate_sentinels = sentinel.sentinels  # (closed with the master: aclose)
        master.mailgate_sentinel_pool = master.connection_pool  # (asked: _follow_master)
        return master
    if settings.cluster:
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in settings.servers],
                            **options)
    host, port = settings.servers[0]
    return aioredis.Redis(host=host, port=port, **options)


class RedisStore:
    """Store in Redis: `PREFIX{key}` (the braces are a hash tag: each entry's slot is its
    own key's in a Cluster), values as strings, expiry by Redis (PX). Errors and timeouts
    raise StateUnavailable; the GuardedStore above decides what that means."""

    shared = True  # every node sees the same state (the counts are site-wide)

    def __init__(self, client: Any, prefix: str = "mailgate:",
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self._incr = client.register_script(_INCR)
        self._add = client.register_script(_ADD)
        self._master_checked = time.monotonic()  # (Sentinel: when the master was asked)
        self._checking: asyncio.Task[None] | None = None

    def _key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}"

    async def _do(self, call: Any) -> Any:
        from redis.exceptions import RedisClusterException, RedisError

        self._follow_master()
        try:
            return await call
        except (RedisError, RedisClusterException, OSError) as exc:
            # (RedisClusterException, "cannot be connected", is not a RedisError)
            raise StateUnavailable(f"redis: {exc}") from exc
        except (AttributeError, TypeError, ValueError) as exc:  # a connection torn down
            raise StateUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    def _follow_master(self) -> None:
        """With Sentinel, ask once a second which server is the master: after a planned
        failover the old master still takes writes until Sentinel demotes it (seconds),
        and pooled connections would keep writing there; a new master empties the pool."""
        pool = getattr(self.client, "mailgate_sentinel_pool", None)
        now = time.monotonic()
        if pool is None or now < self._master_checked + MASTER_CHECK or \
                (self._checking is not None and not self._checking.done()):
            return
        self._master_checked = now

        async def check() -> None:
            before = pool.master_address
            try:
                await asyncio.wait_for(pool.get_master_address(), MASTER_CHECK)
                if before is not None and pool.master_address != before:
                    # (redis-py drops the idle ones; those in use would go back to the
                    # pool still talking to the old master: a split between connections)
                    await pool.disconnect(inuse_connections=True)
            except Exception:  # (the operation itself will say what is wrong)
                pass

        self._checking = asyncio.get_running_loop().create_task(check())

    async def get(self, key: str) -> str | None:
        value = await self._do(self.client.get(self._key(key)))
        return None if value is None else str(value)

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self._do(self.client.set(self._key(key), value, px=max(int(ttl * 1000), 1)))

    async def delete(self, key: str) -> bool:
        return bool(await self._do(self.client.delete(self._key(key))))

    async def incr(self, key: str, amount: int, ttl: float) -> int:
        return int(await self._do(self._incr(keys=[self._key(key)],
                                             args=[amount, max(int(ttl * 1000), 1)])))

    async def add(self, key: str, amount: int, ttl: float) -> int:
        return int(await self._do(self._add(keys=[self._key(key)],
                                            args=[amount, max(int(ttl * 1000), 1)])))

    async def counts(self, changes: Sequence[Change]) -> list[tuple[int, float]]:
        async def send() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for c in changes:
                    if c.share:
                        pipe.eval(_SHARE, 1, self._key(c.key), c.amount,
                                  max(int(c.ttl * 1000), 1), c.share)
                    else:
                        pipe.eval(_COUNT, 1, self._key(c.key), c.amount,
                                  max(int(c.ttl * 1000), 1))
                replies: list[Any] = await pipe.execute()
                return replies

        replies = await self._do(send())
        return [(int(value), max(int(pttl), 0) / 1000) for value, pttl in replies]

    async def items(self, prefix: str) -> list[Item]:
        pattern = self.prefix.translate(_GLOB) + "{" + prefix.translate(_GLOB) + "*"
        keys: list[str] = []

        async def scan() -> None:
            async for name in self.client.scan_iter(match=pattern, count=1000):
                keys.append(str(name))

        await self._do(scan())
        out = []
        now = self.clock()
        for name in sorted(keys):
            value, pttl = await self._do(self._value_and_ttl(name))
            if value is not None and pttl is not None and pttl > 0:
                out.append(Item(name[len(self.prefix) + 1:-1], str(value), now + pttl / 1000))
        return out

    async def _value_and_ttl(self, name: str) -> tuple[Any, Any]:
        value = await self.client.get(name)
        pttl = await self.client.pttl(name)
        return value, pttl

    def close(self) -> None:
        """Nothing without the loop: aclose() closes the connections."""

    async def aclose(self) -> None:
        from redis.asyncio import Redis

        if self._checking is not None:
            self._checking.cancel()
            await asyncio.gather(self._checking, return_exceptions=True)

        if isinstance(self.client, Redis):  # (Sentinel's pool is not the client's own)
            await self.client.aclose(close_connection_pool=True)
        else:
            await self.client.aclose()
        for sentinel in getattr(self.client, "mailgate_sentinels", ()):
            await sentinel.aclose()
