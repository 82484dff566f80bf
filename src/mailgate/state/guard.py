"""A remote state backend made safe: a deadline per operation, a failure action, one warning per change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from mailgate.state.store import Change, Item, StateUnavailable, Store

_WRITES = frozenset({"put", "delete", "incr", "add", "counts"})
RETRY = 1.0  # seconds between two attempts at a backend that failed (no stall per command)


class GuardedStore:
    """Calls `remote` within `timeout` seconds. When it fails or is slow: `local` answers
    (action `local`: this machine's counts, merged with nobody's), or StateUnavailable is
    raised with `fail_open` set (`fail_open`) or not (`tempfail`). After a failure the remote
    is left alone for RETRY seconds (one attempt, not one per command, while it is down).
    `warn` gets one line when the backend goes away and one when it is back; `observe(up)`
    feeds a metric."""

    shared = True  # every node sees the same state (the counts are site-wide)

    def __init__(self, remote: Store, action: str, local: Store, timeout: float,
                 warn: Callable[[str], None], name: str = "redis",
                 observe: Callable[[bool], None] = lambda up: None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.remote = remote
        self.local = local
        self.action = action
        self.timeout = timeout
        self.warn = warn
        self.name = name
        self.observe = observe
        self.monotonic = monotonic
        self._down_since: float | None = None
        self._next_try = 0.0
        self._reason = ""
        self._write_failed = False  # it went down refusing a write (full: reads still work)

    @property
    def clock(self) -> Callable[[], float]:
        clock: Callable[[], float] = getattr(self.remote, "clock", time.time)
        return clock

    async def _call(self, name: str, *args: Any) -> Any:
        if self._down_since is None or self.monotonic() >= self._next_try:
            try:
                result = await asyncio.wait_for(getattr(self.remote, name)(*args), self.timeout)
            except Exception as exc:  # (whatever the client library raises: never a crash)
                if self._down_since is None:
                    self._write_failed = name in _WRITES
                self._failed(exc)
            else:
                # (a read does not prove a Redis that refused a write, full, is back)
                if self._down_since is not None and (name in _WRITES or not self._write_failed):
                    self._down_since = None
                    self.warn(f"{self.name}: state backend available again")
                    self.observe(True)
                return result
        if self.action == "local":
            return await getattr(self.local, name)(*args)
        raise StateUnavailable(f"{self.name}: {self._reason}",
                               fail_open=self.action == "fail_open")

    def _failed(self, exc: BaseException) -> None:
        reason = str(exc) or (f"timeout after {self.timeout:g}s"
                              if isinstance(exc, TimeoutError) else type(exc).__name__)
        self._reason = reason
        self._next_try = self.monotonic() + RETRY
        if self._down_since is None:
            self._down_since = self.monotonic()
            self.warn(f"{self.name}: state backend unavailable: {reason}; "
                      f"redis_failure_action = {self.action}")
            self.observe(False)

    async def get(self, key: str) -> str | None:
        value: str | None = await self._call("get", key)
        return value

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self._call("put", key, value, ttl)

    async def delete(self, key: str) -> bool:
        return bool(await self._call("delete", key))

    async def incr(self, key: str, amount: int, ttl: float) -> int:
        return int(await self._call("incr", key, amount, ttl))

    async def add(self, key: str, amount: int, ttl: float) -> int:
        return int(await self._call("add", key, amount, ttl))

    async def counts(self, changes: Sequence[Change]) -> list[tuple[int, float]]:
        counted: list[tuple[int, float]] = await self._call("counts", changes)
        return counted

    async def items(self, prefix: str) -> list[Item]:
        items: list[Item] = await self._call("items", prefix)
        return items

    def close(self) -> None:
        self.remote.close()
        self.local.close()

    async def aclose(self) -> None:
        await self.remote.aclose()
        await self.local.aclose()
