"""anvil's client counts kept site-wide in the shared state store, for gateways behind one MX."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from mailgate.state import StateUnavailable, Store

CONNECTIONS = "anvil:conn:"  # a gauge per client key: its open connections on every node
# A gauge forgets a client this long after its count last changed: what a node killed with
# connections open leaves behind lasts no longer than a quiet spell of this length.
CONNECTION_TTL = 600.0
TEMPFAIL = -1  # a count the store could not give with redis_failure_action = tempfail


class SiteCounts:
    """The counts anvil keeps per client (connections, and the rates of connections, MAIL,
    RCPT and AUTH), shared by every node through the store (decision 0068). Rates are the
    store's fixed windows of anvil_rate_time_unit (anvil's own windows: they begin with the
    first event). Each node still counts in its own anvil table (its statistics, and the
    answer when the store fails with `fail_open` or `local`): a site-wide count is never
    smaller than the node's own, so the larger of the two is the one compared."""

    def __init__(self, store: Store, unit: float) -> None:
        self.store = store
        self.unit = max(float(int(unit)), 1.0)
        self.pending: set[asyncio.Task[int]] = set()

    async def _count(self, call: Awaitable[int], local: int) -> int:
        try:
            value = await call
        except StateUnavailable as exc:
            return local if exc.fail_open else TEMPFAIL
        return max(value, local)

    async def event(self, key: str, kind: str, local: int) -> int:
        """Count one `kind` event (mail, rcpt, auth) site-wide: the rate, TEMPFAIL, or
        `local` when the store failed and the failure action lets the client through."""
        return await self._count(self.store.incr(f"anvil:{kind}:{key}", 1, self.unit), local)

    async def connect(self, key: str, count: int, rate: int) -> tuple[int, int]:
        """A new connection: the client's (connections, connection rate) on every node,
        asked together (one round trip's wait). TEMPFAIL in both when the store failed so."""
        counted, rated = await asyncio.gather(
            self._count(self.store.add(CONNECTIONS + key, 1, CONNECTION_TTL), count),
            self._count(self.store.incr(f"anvil:connect:{key}", 1, self.unit), rate))
        if TEMPFAIL in (counted, rated):
            return TEMPFAIL, TEMPFAIL
        return counted, rated

    def disconnect(self, key: str) -> None:
        """The connection ended: its site-wide count goes down, behind the session's end."""
        task = asyncio.get_running_loop().create_task(self._disconnect(key))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _disconnect(self, key: str) -> int:
        try:
            return await self.store.add(CONNECTIONS + key, -1, CONNECTION_TTL)
        except StateUnavailable:
            return 0  # (gone with the store: the gauge's lifetime ends it)
