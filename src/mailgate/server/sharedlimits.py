"""anvil's client counts kept site-wide in the shared state store, for gateways behind one MX."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Callable

from mailgate.state import Change, StateUnavailable, Store

CONNECTIONS = "anvil:conn:"  # per client key: each node's share of its open connections
# A node's share lives this long unless sent again; a node sends its shares again every
# RENEW seconds, so what a node killed with connections open left behind is gone after
# LEASE seconds, and a share lost in a failover comes back within RENEW.
LEASE = 60.0
RENEW = 20.0
TEMPFAIL = -1  # a count the store could not give with redis_failure_action = tempfail
BATCH = 0.02  # seconds a worker gathers its changes before sending them in one round trip
RETRY = 1.0  # seconds before sending again after the store failed
KNOWN = 65_536  # site counts remembered; the expired ones are dropped beyond this


class SiteCounts:
    """The counts anvil keeps per client (connections, and the rates of connections, MAIL,
    RCPT and AUTH), shared by every node through the store (decision 0069).

    A worker counts an event at once. For a client whose site count it read back in the last
    redis_count_cache_time (0.1s), it answers with that count plus what it counted since,
    waiting for nothing; every BATCH seconds it sends what it counted, every key in one
    round trip (Store.counts), and reads each key's site count back. For a client it has
    not heard of lately, the event waits for that round trip, sent at once. So a busy client
    costs Redis one command per batch instead of one per event and its sessions no wait,
    and a client spread over the nodes is counted site-wide from its first event on each;
    what other nodes counted in the last cache time plus a batch can be missing (0: none).
    Rates are the store's fixed windows of anvil_rate_time_unit (anvil's windows: they
    begin with the first event). Each node still counts in its own anvil table; the larger
    of the two is the one compared. A connection count is the sum of the nodes' shares:
    each worker sends how many connections it has open from the client (an absolute
    number, so a resend never counts twice), renewed while they stay open.

    The store failing: `fail_open` and `local` leave the node's own counts (the local
    store's, with `local`) to decide; `tempfail` makes every count TEMPFAIL until the store
    answers again. Connection counts that could not be sent are sent later, so a count
    never drifts; rate events are dropped (their window has moved on)."""

    def __init__(self, store: Store, unit: float, fresh: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.unit = max(float(int(unit)), 1.0)
        self.fresh = fresh  # redis_count_cache_time: how long a count read back is trusted
        self.clock = clock
        self._pending: dict[str, int] = {}  # rate key → events not sent yet
        self._open: dict[str, int] = {}  # connection key → this worker's open connections
        self._sent: dict[str, int] = {}  # connection key → the share the store has
        self._dirty: set[str] = set()  # connection keys whose share is to be sent
        self._node = ""  # this worker's name in the shares (made in the worker: its pid)
        self._renewal: asyncio.TimerHandle | None = None
        self._known: dict[str, tuple[int, float]] = {}  # key → (site count, trusted until)
        self._failed = False  # the store failed with tempfail: counts are TEMPFAIL
        self._timer: asyncio.TimerHandle | None = None
        self._sending: asyncio.Task[None] | None = None
        self._batch: asyncio.Future[None] | None = None  # done when the pending ones are sent
        self._urgent = False  # someone waits for the pending batch

    # --- what the limits ask -------------------------------------------------------------
    async def event(self, key: str, kind: str, local: int) -> int:
        """Count one `kind` event (mail, rcpt, auth): the site's rate, or TEMPFAIL."""
        site = await self._site(f"anvil:{kind}:{key}", 1)  # (counted even when failing:
        return TEMPFAIL if self._failed else max(site, local)  # sending it finds the store)

    async def connect(self, key: str, count: int, rate: int) -> tuple[int, int]:
        """A new connection: the client's (connections, connection rate) on every node."""
        name = CONNECTIONS + key
        self._open[name] = self._open.get(name, 0) + 1
        self._dirty.add(name)
        if self._renewal is None:
            self._renewal = asyncio.get_running_loop().call_later(RENEW, self.renew)
        counted, rated = await asyncio.gather(self._site(name, 0),
                                              self._site(f"anvil:connect:{key}", 1))
        if self._failed:  # (still counted: its end is, too)
            return TEMPFAIL, TEMPFAIL
        return max(counted, count), max(rated, rate)

    def disconnect(self, key: str) -> None:
        """A connection counted by connect() ended."""
        name = CONNECTIONS + key
        left = self._open.get(name, 0) - 1
        if left > 0:
            self._open[name] = left
        else:
            self._open.pop(name, None)
        self._dirty.add(name)
        self._schedule()

    def renew(self) -> None:
        """Send every open connection's share again (they expire after LEASE); run every
        RENEW seconds while connections are open."""
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        if self._open:
            self._dirty.update(self._open)
            self._schedule()
            self._renewal = asyncio.get_running_loop().call_later(RENEW, self.renew)

    async def _site(self, key: str, delta: int) -> int:
        """Count `delta` and return the site's count: at once when this worker read it back
        lately (its busy clients), else after the round trip that sends the change (a
        client new to this worker: the one the other nodes may have seen)."""
        site = self._change(key, delta)
        if site is not None:
            return site
        done = self._batch
        assert done is not None
        self._hurry()
        await asyncio.shield(done)
        known = self._known.get(key)  # (just read back: whatever the cache time)
        return max((known[0] if known is not None else 0) + self._unsent(key), 0)

    def _change(self, key: str, delta: int) -> int | None:
        """Count `delta` for the next batch; the site's count if known, else None."""
        if delta:
            self._pending[key] = self._pending.get(key, 0) + delta
        self._schedule()
        return self._estimate(key)

    def _schedule(self) -> None:
        """Have the pending changes sent in the next batch."""
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
        if self._timer is None and self._sending is None:
            self._timer = asyncio.get_running_loop().call_later(BATCH, self._send_soon)

    def _estimate(self, key: str) -> int | None:
        known = self._known.get(key)
        if known is None or known[1] <= self.clock():
            return None
        return max(known[0] + self._unsent(key), 0)

    def _unsent(self, key: str) -> int:
        """What this worker counted that the store's count does not hold yet."""
        if key.startswith(CONNECTIONS):
            return self._open.get(key, 0) - self._sent.get(key, 0)
        return self._pending.get(key, 0)

    # --- sending -------------------------------------------------------------------------
    def _hurry(self) -> None:
        """Send the pending batch now (or right after the one on its way)."""
        self._urgent = True
        if self._timer is not None:
            self._timer.cancel()
            self._send_soon()

    def _send_soon(self) -> None:
        self._timer = None
        self._urgent = False
        self._sending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        delay = BATCH
        done, self._batch = self._batch, None
        try:
            delay = await self.flush()
        finally:
            self._sending = None
            if done is not None and not done.done():
                done.set_result(None)
            if self._pending or self._dirty:
                loop = asyncio.get_running_loop()
                if self._urgent and delay == BATCH:
                    self._send_soon()
                else:
                    self._timer = loop.call_later(delay, self._send_soon)

    async def flush(self) -> float:
        """Send what was counted; return how long to wait before the next batch."""
        batch, self._pending = self._pending, {}
        dirty, self._dirty = self._dirty, set()
        if dirty and not self._node:
            self._node = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"
        changes = [Change(key, delta, self.unit) for key, delta in batch.items() if delta]
        changes += [Change(key, self._open.get(key, 0), LEASE, self._node) for key in dirty]
        if not changes:
            if not self._failed:
                return BATCH
            changes = [Change("anvil:probe", 0, 1.0)]  # is the store back?
        try:
            counted = await self.store.counts(changes)
        except StateUnavailable as exc:
            self._failed = not exc.fail_open
            self._known.clear()
            self._dirty |= dirty  # connections are sent again; rate events are dropped
            return RETRY
        self._failed = False
        now = self.clock()
        if len(self._known) > KNOWN:
            self._known = {k: v for k, v in self._known.items() if v[1] > now}
        for change, (value, left) in zip(changes, counted, strict=True):
            self._known[change.key] = (value, now + min(left, self.fresh))
            if change.share and change.amount:
                self._sent[change.key] = change.amount
            elif change.share:
                self._sent.pop(change.key, None)
        return BATCH

    async def drain(self) -> None:
        """At stop: send what is left (the connections that ended), once."""
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)
        if self._pending or self._dirty:
            await self.flush()
