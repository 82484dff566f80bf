"""The state backends keep one contract: expiry by the handed-in clock, fixed-window counters."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mailgate.state import Change, LocalStore, MemoryStore, StateUnavailable, Store


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Store, Clock]:
    clock = Clock()
    if request.param == "memory":
        return MemoryStore(clock), clock
    return LocalStore(str(tmp_path / "state.db"), clock), clock


def test_values_expire_by_the_clock(store: tuple[Store, Clock]) -> None:
    db, clock = store

    async def run() -> None:
        assert await db.get("k") is None
        await db.put("k", "v1", 10)
        assert await db.get("k") == "v1"
        clock.now += 9.9
        assert await db.get("k") == "v1"
        clock.now += 0.2
        assert await db.get("k") is None
        assert await db.delete("k") is False  # expired: not there
        await db.put("k", "v2", 5)
        assert await db.delete("k") is True
        assert await db.get("k") is None

    asyncio.run(run())


def test_counters_are_fixed_windows(store: tuple[Store, Clock]) -> None:
    db, clock = store

    async def run() -> None:
        assert await db.incr("c", 1, 60) == 1
        clock.now += 30
        assert await db.incr("c", 2, 60) == 3  # the window does not move
        clock.now += 31
        assert await db.incr("c", 1, 60) == 1  # a new window
        assert await db.get("c") == "1"

    asyncio.run(run())


def test_gauges_slide_and_never_go_below_zero(store: tuple[Store, Clock]) -> None:
    db, clock = store

    async def run() -> None:
        assert await db.add("g", 1, 60) == 1
        clock.now += 50
        assert await db.add("g", 1, 60) == 2  # every change restarts the lifetime
        clock.now += 50
        assert await db.add("g", -1, 60) == 1
        assert await db.add("g", -3, 60) == 0  # clamped: a lost disconnect cannot go below
        assert await db.add("g", 1, 60) == 1
        clock.now += 61
        assert await db.get("g") is None
        assert await db.add("g", -1, 60) == 0

    asyncio.run(run())


def test_counts_change_several_counters_at_once(store: tuple[Store, Clock]) -> None:
    db, clock = store

    async def run() -> None:
        both = [Change("w", 2, 60), Change("g", 1, 30, share="a")]
        assert await db.counts(both) == [(2, 60.0), (1, 30.0)]
        clock.now += 10
        both = [Change("w", 2, 60), Change("g", 3, 30, share="b")]
        assert await db.counts(both) == [(4, 50.0), (4, 30.0)]  # the window, a's + b's shares
        assert await db.counts([Change("g", 2, 30, share="a")]) == [(5, 30.0)]  # set, not added
        clock.now += 25
        assert await db.counts([Change("g", 1, 30, share="c")]) == [(6, 30.0)]
        clock.now += 10  # a's and b's shares were not sent again: gone (a node that died)
        assert await db.counts([Change("g", 0, 30, share="d")]) == [(1, 30.0)]
        assert await db.counts([Change("g", 0, 30, share="c")]) == [(0, 30.0)]
        assert await db.counts([Change("g", 0, 30, share="c")]) == [(0, 30.0)]

    asyncio.run(run())


def test_items_by_prefix_live_only(store: tuple[Store, Clock]) -> None:
    db, clock = store

    async def run() -> None:
        await db.put("block:192.0.2.0/24", "a", 100)
        await db.put("block:198.51.100.7", "b", 10)
        await db.put("blocked_not", "c", 100)
        await db.put("block%x", "d", 100)  # LIKE's wildcards are literal in a prefix
        clock.now += 50
        items = await db.items("block:")
        assert [(i.key, i.value, i.expires) for i in items] == [
            ("block:192.0.2.0/24", "a", 1_000_100.0)]
        assert [i.key for i in await db.items("block%")] == ["block%x"]

    asyncio.run(run())


def test_the_local_store_is_shared_by_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    db = LocalStore(path)
    asyncio.run(db.incr("n", 1, 60))  # the parent's connection exists before the fork
    pids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for _ in range(50):
                    asyncio.run(db.incr("n", 1, 60))
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in pids)
    assert asyncio.run(db.get("n")) == "151"


def test_an_unusable_database_is_unavailable_not_empty(tmp_path: Path) -> None:
    db = LocalStore(str(tmp_path / "missing" / "state.db"))
    with pytest.raises(StateUnavailable):
        asyncio.run(db.get("k"))
