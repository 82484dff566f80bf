"""Counting bad events per client address and network, blocking past the threshold, refusing
blocked clients at connect (auto_block_*, decision 0064)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mailgate.autoblock.events import classify
from mailgate.autoblock.records import AUTO, BLOCK, EVENTS, OFFENCES, Block, duration, network
from mailgate.autoblock.settings import BlockSettings
from mailgate.engine.context import CheckState, Client
from mailgate.errors import MapError
from mailgate.maps.matchlist import HostAddrList
from mailgate.metrics import NO_METRICS, Metrics
from mailgate.state import StateUnavailable, Store

CACHE_SECONDS = 2.0  # how long a worker trusts what it read of a block (or of no block)
CACHE_SIZE = 65_536  # targets remembered; the cache starts over when it is full
REFUSAL = "421 4.3.2 Service currently unavailable; client [{addr}] blocked automatically"


class Blocks:
    """Automatic blocks switched off (auto_block_threshold = 0): nothing is counted, nobody
    is refused. The session calls these two methods whatever the setting."""

    enabled = False

    async def refusal(self, client: Client) -> str | None:
        """The reply refusing `client` at connect, or None (not blocked, or exempt)."""
        return None

    def replied(self, st: CheckState, code: int, line: str) -> None:
        """smtpd sent a reply (`line`: after the code); count it if it is a bad event."""


NO_BLOCKS = Blocks()


class AutoBlocks(Blocks):
    """Bad events counted in the state store per address and per network, in fixed windows
    of auto_block_window. An address with auto_block_threshold events is blocked; else its
    network is, when its events (from more than one address) reach the threshold. Blocks
    last auto_block_time, doubled for each earlier block of the same target that ended less
    than auto_block_max_time ago, up to auto_block_max_time. The store failing lets every
    client in (one warning when it fails, one line when it is back)."""

    enabled = True

    def __init__(self, settings: BlockSettings, store: Store, exceptions: HostAddrList,
                 log: Callable[[str], None], metrics: Metrics = NO_METRICS,
                 trusted: Callable[[Client], bool] = lambda client: False,
                 clock: Callable[[], float] = time.time) -> None:
        self.s = settings
        self.store = store
        self.exceptions = exceptions
        self.trusted = trusted  # smtpd_authorized_xclient_hosts: the proxies themselves
        self.log = log
        self.metrics = metrics
        self.clock = clock
        self._cache: dict[str, tuple[float, float]] = {}  # target → (until, trusted until)
        self._pending: list[tuple[str, str, str]] = []  # (address, name[address], event)
        self._task: asyncio.Task[None] | None = None
        self._down = ""  # why the store failed, while it does

    def exempt(self, client: Client) -> bool:
        """auto_block_exceptions and XCLIENT-authorized hosts; a failing lookup exempts."""
        if client.addr == "unknown":
            return True
        try:
            return self.exceptions.match(client.name, client.addr) or self.trusted(client)
        except MapError:
            return True

    def network(self, addr: str) -> str | None:
        return network(addr, self.s.ipv4_prefix, self.s.ipv6_prefix)

    # --- at connect -------------------------------------------------------------------
    async def refusal(self, client: Client) -> str | None:
        if await self.blocked(client.addr) is None or self.exempt(client):
            return None
        self.metrics.auto_block_refusal()
        return REFUSAL.format(addr=client.addr)

    async def blocked(self, addr: str) -> str | None:
        """The blocked target (the address or its network) that covers `addr`, or None."""
        now = self.clock()
        for target in (addr, self.network(addr)):
            if target is not None and await self._until(target, now) > now:
                return target
        return None

    async def _until(self, target: str, now: float) -> float:
        """Until when `target` is blocked (0: it is not), from the cache or the store."""
        hit = self._cache.get(target)
        if hit is not None and now < hit[1]:
            return hit[0]
        try:
            value = await self.store.get(BLOCK + target)
        except StateUnavailable as exc:
            self._failed(exc)
            return 0.0
        self._back()
        block = Block.parse(target, value) if value is not None else None
        until = block.until if block is not None else now + CACHE_SECONDS if value else 0.0
        self._remember(target, until, now)
        return until

    def _remember(self, target: str, until: float, now: float) -> None:
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[target] = (until, now + CACHE_SECONDS)

    # --- bad events -------------------------------------------------------------------
    def replied(self, st: CheckState, code: int, line: str) -> None:
        if code < 400 and code != 221:
            return
        event = classify(code, line)
        if event is None or st.sasl_username is not None or self.exempt(st.client):
            return
        self.metrics.auto_block_event(event)
        self._pending.append((st.client.addr, st.namaddr, event))
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self.flush())
            except RuntimeError:  # no loop (a test): flush() counts them
                pass

    async def flush(self) -> None:
        """Count the events seen so far in the store; block what crosses the threshold."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                for addr, namaddr, event in batch:
                    await self._count(addr, namaddr, event)
            except StateUnavailable as exc:
                self._failed(exc)
                self._pending.clear()
                return
            self._back()

    async def _count(self, addr: str, namaddr: str, event: str) -> None:
        s, store = self.s, self.store
        count = await store.incr(EVENTS + addr, 1, s.window)
        net = self.network(addr)
        net_count = await store.incr(EVENTS + net, 1, s.window) if net is not None else 0
        if count == s.threshold:
            await self._block(addr, count, "address", event, namaddr)
            if net is not None:  # the network is judged by its other addresses' events
                await store.incr(EVENTS + net, -count, s.window)
        elif net is not None and net_count == s.threshold:
            await self._block(net, net_count, "network", event, namaddr)

    async def _block(self, target: str, count: int, kind: str, event: str,
                     namaddr: str) -> None:
        """Block `target` (its count starts over); nothing more while it is blocked."""
        s, store = self.s, self.store
        await store.delete(EVENTS + target)
        now = self.clock()
        if await self._until(target, now) > now:
            return
        offence = await store.incr(OFFENCES + target, 1, s.max_time)
        seconds = duration(offence, s.time, s.max_time)
        await store.put(OFFENCES + target, str(offence), seconds + s.max_time)
        reason = f"{count} bad events from the {kind}, last {event} from {namaddr}"
        block = Block(target, now + seconds, offence, AUTO, reason)
        await store.put(BLOCK + target, block.value(), seconds)
        self._remember(target, block.until, now)
        self.log(f"warning: auto-block: blocked {target} for {seconds:.0f}s "
                 f"(offence {offence}): {reason}")
        self.metrics.auto_block(kind)

    # --- the store failing ------------------------------------------------------------
    def _failed(self, exc: StateUnavailable) -> None:
        if not self._down:
            self._down = str(exc) or type(exc).__name__
            self.log(f"warning: auto-block: state unavailable: {self._down}; no client is "
                     "counted or refused until it is back")

    def _back(self) -> None:
        if self._down:
            self._down = ""
            self.log("auto-block: state available again")
