"""SiteCounts over an in-memory store: batching, the short trust in a count read back, and
connection counts that survive a failing store without drifting."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mailgate.server.sharedlimits import CONNECTIONS, LEASE, RENEW, TEMPFAIL, SiteCounts
from mailgate.state import Change, MemoryStore, StateUnavailable


class Counting(MemoryStore):
    """A store that counts its round trips and can fail like a guarded Redis."""

    def __init__(self) -> None:
        super().__init__()
        self.trips = 0
        self.down: StateUnavailable | None = None

    async def counts(self, changes: Sequence[Change]) -> list[tuple[int, float]]:
        self.trips += 1
        await asyncio.sleep(0)  # (a round trip lets the loop run)
        if self.down is not None:
            raise self.down
        return await super().counts(changes)


async def connections(store: MemoryStore, client: str) -> int:
    """The site's open connections from `client`: the sum of the nodes' shares."""
    ((count, _),) = await MemoryStore.counts(store, [Change(CONNECTIONS + client, 0, LEASE,
                                                            "observer")])
    return count


def test_a_busy_client_costs_a_round_trip_per_batch_not_per_event() -> None:
    async def run() -> None:
        store = Counting()
        site = SiteCounts(store, 60, fresh=10.0)
        assert await site.event("192.0.2.1", "rcpt", 1) == 1  # new: asked at once
        assert store.trips == 1
        rates = [await site.event("192.0.2.1", "rcpt", 0) for _ in range(50)]
        assert rates == list(range(2, 52)) and store.trips == 1  # known: no wait
        await site.drain()
        assert store.trips == 2 and await store.get("anvil:rcpt:192.0.2.1") == "51"

    asyncio.run(run())


def test_another_nodes_counts_are_seen() -> None:
    async def run() -> None:
        store = Counting()
        first, second = SiteCounts(store, 60, fresh=0.0), SiteCounts(store, 60, fresh=0.0)
        for _ in range(3):
            await first.event("192.0.2.1", "mail", 0)
        assert await second.event("192.0.2.1", "mail", 1) == 4

    asyncio.run(run())


def test_connection_counts_do_not_drift_when_the_store_fails() -> None:
    async def run() -> None:
        store = Counting()
        site = SiteCounts(store, 60, fresh=0.0)
        assert await site.connect("192.0.2.1", 1, 1) == (1, 1)
        store.down = StateUnavailable("redis: timeout", fail_open=True)
        assert await site.connect("192.0.2.1", 2, 2) == (2, 2)  # the node's own counts
        site.disconnect("192.0.2.1")
        site.disconnect("192.0.2.1")
        await site.flush()  # fails: the connections' ends are kept
        store.down = None
        await site.flush()
        assert await connections(store, "192.0.2.1") == 0

    asyncio.run(run())


def test_tempfail_until_the_store_answers() -> None:
    async def run() -> None:
        store = Counting()
        site = SiteCounts(store, 60, fresh=0.0)
        store.down = StateUnavailable("redis: connection refused")
        assert await site.event("192.0.2.1", "rcpt", 1) == TEMPFAIL
        assert await site.connect("192.0.2.1", 1, 1) == (TEMPFAIL, TEMPFAIL)
        store.down = None
        await site.flush()
        assert await site.event("192.0.2.1", "rcpt", 1) == 1  # (a failed batch's events: gone)
        assert await connections(store, "192.0.2.1") == 1  # kept, then sent

    asyncio.run(run())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_shares_of_a_node_that_died_expire_and_live_ones_are_renewed() -> None:
    async def run() -> None:
        clock = Clock()
        store = Counting()
        store.clock = clock
        dead, live = SiteCounts(store, 60, fresh=0.0), SiteCounts(store, 60, fresh=0.0)
        assert await dead.connect("192.0.2.1", 1, 1) == (1, 1)
        assert await dead.connect("192.0.2.1", 2, 2) == (2, 2)
        assert await live.connect("192.0.2.1", 1, 1) == (3, 3)
        assert dead._renewal is not None
        dead._renewal.cancel()  # killed: no renewal, no drain
        for _ in range(int(LEASE // RENEW) + 1):  # the live node renews; time passes
            clock.now += RENEW
            live.renew()  # (what its timer calls every RENEW seconds)
            await live.flush()
        assert await connections(store, "192.0.2.1") == 1  # the dead node's two are gone
        assert await live.connect("192.0.2.1", 2, 4) == (2, 4)
        live.disconnect("192.0.2.1")
        live.disconnect("192.0.2.1")
        await live.drain()
        assert await connections(store, "192.0.2.1") == 0
        assert live._renewal is None

    asyncio.run(run())
