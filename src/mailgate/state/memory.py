"""The in-process state backend: a dict of (value, expiry); for one process and for tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from mailgate.state.store import Change, Item


class MemoryStore:
    """Store in a dict. Expired entries are dropped when met and on every 1,024th write."""

    shared = False  # this machine's alone (the counts stay per gateway)

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._data: dict[str, tuple[str, float]] = {}
        self._writes = 0

    def _live(self, key: str) -> tuple[str, float] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] <= self.clock():
            del self._data[key]
            return None
        return entry

    def _wrote(self) -> None:
        self._writes += 1
        if not self._writes % 1024:
            now = self.clock()
            for key in [k for k, (_, exp) in self._data.items() if exp <= now]:
                del self._data[key]

    async def get(self, key: str) -> str | None:
        entry = self._live(key)
        return entry[0] if entry else None

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._data[key] = (value, self.clock() + ttl)
        self._wrote()

    async def delete(self, key: str) -> bool:
        return self._live(key) is not None and self._data.pop(key, None) is not None

    async def incr(self, key: str, amount: int, ttl: float) -> int:
        entry = self._live(key)
        if entry is None:
            count, expires = amount, self.clock() + ttl
        else:
            count, expires = int(entry[0]) + amount, entry[1]
        self._data[key] = (str(count), expires)
        self._wrote()
        return count

    async def add(self, key: str, amount: int, ttl: float) -> int:
        entry = self._live(key)
        count = max((int(entry[0]) if entry else 0) + amount, 0)
        self._data[key] = (str(count), self.clock() + ttl)
        self._wrote()
        return count

    async def counts(self, changes: Sequence[Change]) -> list[tuple[int, float]]:
        out = []
        for c in changes:
            value = await (self.add if c.gauge else self.incr)(c.key, c.amount, c.ttl)
            entry = self._data.get(c.key)
            out.append((value, entry[1] - self.clock() if entry else 0.0))
        return out

    async def items(self, prefix: str) -> list[Item]:
        now = self.clock()
        return [Item(k, v, exp) for k, (v, exp) in sorted(self._data.items())
                if k.startswith(prefix) and exp > now]

    def close(self) -> None:
        self._data.clear()

    async def aclose(self) -> None:
        self.close()
