"""The state interface every backend implements (get, put, delete, incr, add, items)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class StateUnavailable(Exception):
    """The backend could not answer (locked, unreachable, full): a temporary failure.
    `fail_open`: the administrator chose that such a failure lets the client through
    (`redis_failure_action = fail_open`); otherwise the feature answers as for a table
    that failed (`451 4.3.5`) or by its own documented rule."""

    def __init__(self, reason: str, fail_open: bool = False) -> None:
        super().__init__(reason)
        self.fail_open = fail_open


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    value: str
    expires: float  # absolute time (the store's clock)


@dataclass(frozen=True, slots=True)
class Change:
    """One counter's change in Store.counts(). Without `share`, incr(): `amount` added to a
    fixed window of `ttl` seconds. With `share` (a node's name), the key is a sum of the
    nodes' shares: this node's share becomes `amount` (0: none), and lives `ttl` seconds
    unless set again, so what a node that died left behind is gone after `ttl`."""

    key: str
    amount: int
    ttl: float
    share: str = ""


class Store(Protocol):
    """Keys with values and an expiry time. Times are the store's clock (handed in)."""

    shared: bool  # True when other nodes share it (Redis): counts are then site-wide

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

    async def add(self, key: str, amount: int, ttl: float) -> int:
        """Add `amount` (negative: subtract) to a gauge, never below zero, and return it; the
        gauge expires `ttl` seconds after its last change (a sliding lifetime: connection
        counts, policyd's error counts)."""
        ...

    async def counts(self, changes: Sequence[Change]) -> list[tuple[int, float]]:
        """Several counters changed together (one round trip to a remote store): each a
        fixed window (incr) or a node's share of a sum (Change.share); returns each one's
        value (the window's count, or the sum of the live shares) and the seconds left of
        its lifetime (a share's: `ttl`)."""
        ...

    async def items(self, prefix: str) -> list[Item]:
        """Every live key starting with `prefix` (administration: `mailgate block list`)."""
        ...

    def close(self) -> None:
        """Release what can be released without the event loop (at process exit)."""
        ...

    async def aclose(self) -> None:
        """Close the connections, in the event loop that used them."""
        ...
