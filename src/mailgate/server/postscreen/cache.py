"""postscreen_cache_map in the client state store (decision 0061): one value per client
address in Postfix's format, shared by every worker; the store drops a value when Postfix's
cache cleanup would have. Whatever table the parameter names (btree:, lmdb:, proxy:btree:,
memcache:, ...), the store keeps the values; empty turns the cache off (decision 0065)."""

from __future__ import annotations

from collections.abc import Callable

from mailgate.server.postscreen.record import Record, Test, cache_lifetime
from mailgate.state import StateUnavailable, Store

PREFIX = "postscreen:"


class Cache:
    """get/put of a client's test record; a store that fails is logged and skipped (the
    client is tested as new, as with no cache)."""

    def __init__(self, store: Store, retention: int, cleanup: int,
                 warn: Callable[[str], None]) -> None:
        self.store = store
        self.retention = retention
        self.cleanup = cleanup
        self.warn = warn

    async def get(self, addr: str) -> str | None:
        try:
            return await self.store.get(PREFIX + addr)
        except StateUnavailable as exc:
            self.warn(f"postscreen_cache_map: state database: {exc}")
            return None

    async def put(self, addr: str, value: str, record: Record, enabled: frozenset[Test],
                  now: int) -> None:
        ttl = cache_lifetime(record, enabled, now, self.retention, self.cleanup)
        try:
            await self.store.put(PREFIX + addr, value, ttl)
        except StateUnavailable as exc:
            self.warn(f"postscreen_cache_map: state database: {exc}")
