"""The state interface every backend implements (get, put, delete, incr, items)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StateUnavailable(Exception):
    """The backend could not answer (locked, unreachable, full): a temporary failure."""


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    value: str
    expires: float  # absolute time (the store's clock)


class Store(Protocol):
    """Keys with values and an expiry time. Times are the store's clock (handed in)."""

    async def get(self, key: str) -> str | None:
        """The value, or None when the key is absent or expired."""
        ...

    async def put(self, key: str, value: str, ttl: float) -> None:
        """Set the value; it expires `ttl` seconds from now."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the key; True if it was there (and not expired)."""
        ...

    async def incr(self, key: str, amount: int, ttl: float) -> int:
        """Add `amount` to a counter and return the new count. A counter that is absent or
        expired starts at `amount` and expires `ttl` seconds from now (a fixed window)."""
        ...

    async def items(self, prefix: str) -> list[Item]:
        """Every live key starting with `prefix` (administration: `mailgate block list`)."""
        ...

    def close(self) -> None: ...
