"""The queue manager: takes committed messages, delivers each recipient, defers and retries."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailgate.config.settings import DeliverySettings
from mailgate.delivery.agent import Agent, DeliveryRequest, DeliveryResult, Status
from mailgate.delivery.router import Router
from mailgate.maillog import MailLog
from mailgate.queue.store import Envelope, QueueStore


def format_delay(seconds: float) -> str:
    """Postfix's delay format: whole seconds from 10 s, one decimal from 1 s, else two."""
    if seconds >= 10:
        return str(int(seconds))
    if seconds >= 1:
        return f"{seconds:.1f}".rstrip("0").rstrip(".")
    if seconds < 0.01:
        return "0"
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


@dataclass
class _Job:
    queue_id: str
    recovered: bool
    picked: float  # when the queue manager took it (end of delay a)
    loaded: tuple[Envelope, bytes] | None = None  # handed over by smtpd: no re-read


class QueueManager:
    """Delivers from active/; a temporary failure moves the message to deferred/ for a retry."""

    def __init__(self, store: QueueStore, settings: DeliverySettings, router: Router,
                 agents: dict[str, Agent], log: MailLog,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.router = router
        self.agents = agents
        self.log = log
        self.clock = clock
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task[None]] = []
        self.idle = asyncio.Event()
        self._busy = 0

    async def start(self, recovered: list[str], retries: bool) -> None:
        """Deliver `recovered` (active/ files found at start-up) and what smtpd hands over.

        With `retries`, this queue manager also runs the deferred queue and picks up stale
        active/ files (left by a worker that died); one worker per server does that.
        """
        for queue_id in recovered:
            self._jobs.put_nowait(_Job(queue_id, True, self.clock()))
        self._update_idle()
        for _ in range(self.settings.concurrency):
            self._tasks.append(asyncio.create_task(self._worker()))
        if retries:
            self._tasks.append(asyncio.create_task(self._retry_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def enqueue(self, queue_id: str, envelope: Envelope | None = None,
                content: bytes | None = None) -> None:
        """Called by smtpd after a message was committed to active/."""
        loaded = (envelope, content) if envelope is not None and content is not None else None
        self._jobs.put_nowait(_Job(queue_id, False, self.clock(), loaded))
        self.idle.clear()

    def _update_idle(self) -> None:
        if self._busy == 0 and self._jobs.empty():
            self.idle.set()
        else:
            self.idle.clear()

    async def _worker(self) -> None:
        while True:
            job = await self._jobs.get()
            self._busy += 1
            try:
                await self._deliver(job)
            except Exception as exc:  # never lose the message: it stays in active/
                self.log.log("qmgr", f"warning: {job.queue_id}: delivery failed: {exc}")
            finally:
                self._busy -= 1
                self._update_idle()

    async def _deliver(self, job: _Job) -> None:
        if job.loaded is not None:
            envelope, content = job.loaded
            job.loaded = None
        else:
            envelope, content = await asyncio.to_thread(self.store.read, "active", job.queue_id)
        qid = envelope.queue_id
        self.log.log("qmgr", f"{qid}: from=<{envelope.sender}>, size={envelope.size}, "
                             f"nrcpt={len(envelope.recipients)} (queue active)")
        deferred = False
        for index, rcpt in enumerate(envelope.recipients):
            if rcpt.done:
                continue
            started = self.clock()
            result = await self._deliver_one(envelope, content, index, rcpt.address,
                                             job.recovered)
            self._log_result(envelope, rcpt.address, result, job.picked, started)
            if result.status is Status.SENT:
                rcpt.done = True
            else:
                deferred = True
        if deferred:
            await self._defer(envelope, content)
        else:
            self.store.remove("active", qid)
            self.log.log("qmgr", f"{qid}: removed")

    async def _deliver_one(self, envelope: Envelope, content: bytes, index: int,
                           recipient: str, recovered: bool) -> DeliveryResult:
        route = self.router.route(recipient)
        if route.transport in self.settings.defer_transports:
            return DeliveryResult(Status.DEFERRED, "4.3.0", "deferred transport", "none")
        agent = self.agents.get(route.transport)
        if route.error or agent is None:
            return DeliveryResult(Status.DEFERRED, "4.3.0", route.error or
                                  f"transport {route.transport} is not available", "none")
        orig = recipient if self.settings.enable_original_recipient else ""
        request = DeliveryRequest(envelope.queue_id, envelope.sender, recipient, orig, index,
                                  envelope.arrival, content, route.nexthop, recovered,
                                  route.uid, route.gid)
        return await agent.deliver(request)

    def _log_result(self, envelope: Envelope, recipient: str, result: DeliveryResult,
                    picked: float, started: float) -> None:
        now = self.clock()
        a = max(picked - envelope.arrival, 0.0)
        b = max(started - picked, 0.0)
        d = max(now - started, 0.0)
        total = max(now - envelope.arrival, 0.0)
        program = result.relay if result.relay in ("virtual", "local") else "error"
        self.log.log(program, f"{envelope.queue_id}: to=<{recipient}>, relay={result.relay}, "
                     f"delay={format_delay(total)}, delays={format_delay(a)}/{format_delay(b)}/"
                     f"0/{format_delay(d)}, dsn={result.dsn}, status={result.status.value} "
                     f"({result.text})")

    async def _defer(self, envelope: Envelope, content: bytes) -> None:
        envelope.attempts += 1
        backoff = min(self.settings.minimal_backoff_time * (2 ** (envelope.attempts - 1)),
                      self.settings.maximal_backoff_time)
        envelope.next_attempt = self.clock() + backoff
        await asyncio.to_thread(self.store.rewrite, "active", envelope, content)
        await asyncio.to_thread(self.store.move, envelope.queue_id, "active", "deferred")

    async def _retry_loop(self) -> None:
        while True:
            await self.flush(only_due=True)
            await asyncio.to_thread(self._sweep_stale)
            await asyncio.sleep(self.settings.queue_run_delay)

    def _sweep_stale(self, age: float = 600.0) -> None:
        """Requeue active/ files untouched for `age` seconds: their worker died mid-delivery.

        Redelivery is safe: recovered messages check the Maildir for their earlier copy.
        """
        now = time.time()
        for queue_id in self.store.list_queue("active"):
            try:
                mtime = self.store.path("active", queue_id).stat().st_mtime
            except FileNotFoundError:
                continue
            if now - mtime > age:
                os.utime(self.store.path("active", queue_id))
                self.loop.call_soon_threadsafe(
                    self._jobs.put_nowait, _Job(queue_id, True, self.clock()))

    async def flush(self, only_due: bool = False) -> int:
        """Move deferred messages (due ones, or all) back to active/ and deliver them."""
        moved = 0
        now = self.clock()
        for queue_id in await asyncio.to_thread(self.store.list_queue, "deferred"):
            try:
                envelope, _ = await asyncio.to_thread(self.store.read, "deferred", queue_id)
            except (OSError, ValueError):
                continue
            if only_due and envelope.next_attempt > now:
                continue
            await asyncio.to_thread(self.store.move, queue_id, "deferred", "active")
            self._jobs.put_nowait(_Job(queue_id, True, now))
            moved += 1
        self._update_idle()
        return moved
