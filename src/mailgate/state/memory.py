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
        self._shares: dict[str, dict[str, tuple[int, float]]] = {}  # key → node → (n, expiry)
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
            if c.share:
                out.append((self._share(c), c.ttl))
                continue
            value = await self.incr(c.key, c.amount, c.ttl)
            entry = self._data.get(c.key)
            out.append((value, entry[1] - self.clock() if entry else 0.0))
        return out

    def _share(self, c: Change) -> int:
        now = self.clock()
        shares = self._shares.setdefault(c.key, {})
        if c.amount > 0:
            shares[c.share] = (c.amount, now + c.ttl)
        else:
            shares.pop(c.share, None)
        for node in [n for n, (_, exp) in shares.items() if exp <= now]:
            del shares[node]
        if not shares:
            del self._shares[c.key]
        return sum(n for n, _ in shares.values())

    async def items(self, prefix: str) -> list[Item]:
        now = self.clock()
        return [Item(k, v, exp) for k, (v, exp) in sorted(self._data.items())
                if k.startswith(prefix) and exp > now]

    def close(self) -> None:
        self._data.clear()
        self._shares.clear()

    async def aclose(self) -> None:
        self.close()
