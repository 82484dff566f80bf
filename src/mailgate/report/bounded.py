"""Counters with a fixed number of keys, so that a report's memory does not grow with the log."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def prune(table: dict[K, V], keep: int, weight: Callable[[V], int]) -> int:
    """Drop the entries weighing least (1, then 2, ...) until at most `keep` remain, in
    place; how many were dropped. Linear passes, not a sort: in a log's long tail most
    entries weigh 1, so one pass usually does it."""
    before = len(table)
    floor = 1
    while len(table) > keep:
        for key in [k for k, v in table.items() if weight(v) <= floor]:
            del table[key]
        floor += 1
    return before - len(table)


class BoundedCounter(Generic[K]):
    """Counts keys; past `cap` distinct keys the keys counted least are dropped until at most
    half remain (the counts of the others stay exact lower bounds; `pruned` says that it
    happened). Heavy hitters, the only keys a "top N" shows, survive: a key dropped had no
    more counts than every key kept at that moment."""

    __slots__ = ("cap", "counts", "pruned")

    def __init__(self, cap: int = 20_000) -> None:
        self.cap = cap
        self.counts: dict[K, int] = {}
        self.pruned = 0  # keys dropped so far

    def add(self, key: K, n: int = 1) -> None:
        counts = self.counts
        value = counts.get(key)
        if value is None:
            if len(counts) >= self.cap:
                self._prune()
            counts[key] = n
        else:
            counts[key] = value + n

    def _prune(self) -> None:
        self.pruned += prune(self.counts, self.cap // 2, int)

    def merge(self, other: BoundedCounter[K]) -> None:
        """Add another counter's counts (a later part of the same log)."""
        for key, n in other.counts.items():
            self.add(key, n)
        self.pruned += other.pruned

    def top(self, n: int) -> list[tuple[K, int]]:
        """The n largest counts, ties by key order of first appearance."""
        return sorted(self.counts.items(), key=lambda kv: -kv[1])[:n]

    def total(self) -> int:
        return sum(self.counts.values())

    def __len__(self) -> int:
        return len(self.counts)
