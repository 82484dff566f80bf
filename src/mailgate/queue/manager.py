"""The queue manager: takes committed messages, delivers each recipient, defers and retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mailgate.config.settings import DeliverySettings
from mailgate.delivery.agent import Agent, DeliveryRequest, DeliveryResult, Status
from mailgate.delivery.router import Route, Router
from mailgate.errors import QueueError
from mailgate.maillog import MailLog
from mailgate.metrics import NO_METRICS, Metrics
from mailgate.queue.bounce import Failed, notification
from mailgate.queue.runs import Job, QueueRuns
from mailgate.queue.store import CorruptQueueFile, Envelope, QueueStore, Recipient

_PROGRAMS = {"relay": "relay/smtp", "none": "error", "retry": "error"}


def _builtin(transport: str, nexthop: str) -> DeliveryResult | None:
    """discard:, error: and retry: (Postfix's discard(8) and error(8))."""
    if transport == "discard":
        return DeliveryResult(Status.SENT, "2.0.0", nexthop or "discarded", "none")
    if transport in ("error", "retry"):
        text = nexthop or ("delivery temporarily suspended" if transport == "retry"
                           else "mail for this destination is not deliverable")
        final = transport == "error"
        dsn = text.split(" ", 1)[0] if text[:1] in "45" and text[1:2] == "." else \
            ("5.0.0" if final else "4.0.0")
        if dsn != ("5.0.0" if final else "4.0.0"):
            text = text.split(" ", 1)[1] if " " in text else text
        return DeliveryResult(Status.BOUNCED if final else Status.DEFERRED, dsn, text, "none")
    return None


def format_delay(seconds: float) -> str:
    """Postfix's delay format: whole seconds from 10 s, one decimal from 1 s, else two."""
    if seconds >= 10:
        return str(int(seconds))
    if seconds >= 1:
        return f"{seconds:.1f}".rstrip("0").rstrip(".")
    if seconds < 0.01:
        return "0"
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


class QueueManager(QueueRuns):
    """Delivers from active/; a temporary failure moves the message to deferred/ for a retry."""

    def __init__(self, store: QueueStore, settings: DeliverySettings, router: Router,
                 agents: dict[str, Agent], log: MailLog,
                 clock: Callable[[], float] = time.time, metrics: Metrics = NO_METRICS,
                 deaths: Callable[[], int] = lambda: 0) -> None:
        self.store = store
        self.metrics = metrics
        self.settings = settings
        self.router = router
        self.agents = agents
        self.log = log
        self.clock = clock
        self.deaths = deaths  # the master's count of dead workers (their mail is orphaned)
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task[None]] = []
        self._flushes: set[asyncio.Task[int]] = set()
        self.idle = asyncio.Event()
        self._busy = 0

    async def start(self, recovered: list[str], retries: bool) -> None:
        """Deliver `recovered` (active/ files found at start-up) and what smtpd hands over.

        With `retries`, this queue manager also runs the deferred queue and claims the
        active/ files that no live worker owns (left by a worker that died, or by the last
        run); one worker per server does that. A file is only delivered by the worker that
        holds its lock (QueueStore.claim), so nothing is picked up twice.
        """
        for queue_id in recovered:
            if self.store.claim("active", queue_id):
                self._jobs.put_nowait(Job(queue_id, True, self.clock()))
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
                content: bytes | None = None, announced: bool = False) -> None:
        """Called by smtpd after a message was committed to active/."""
        loaded = (envelope, content) if envelope is not None and content is not None else None
        self._jobs.put_nowait(Job(queue_id, False, self.clock(), loaded, announced))
        self.idle.clear()

    async def deliver_first(self, envelope: Envelope, content: bytes) -> bool | None:
        """The first delivery attempt, made by smtpd before `250` when every recipient goes
        to a local Maildir (decision 0047): the Maildir files, fsync'd, are then the durable
        copy and no queue file is needed.

        None: not such a message (nothing done, nothing logged). True: every recipient was
        delivered and the message is gone (its lines are logged, `removed` included). False:
        some recipient was not; the ones delivered are marked done in `envelope`, and the
        caller must queue it and `enqueue(..., announced=True)`: the rest is then delivered,
        deferred or bounced as for any message, with one `from=` line in all.
        """
        if not self.settings.direct_delivery:
            return None
        routes = []
        for rcpt in envelope.recipients:
            route = self.router.route(rcpt.address)
            agent = self.agents.get(route.transport)
            if agent is None or route.error or not getattr(agent, "direct", False) \
                    or route.transport in self.settings.defer_transports:
                return None
            routes.append((agent, route))
        picked = self.clock()
        results = await asyncio.gather(*(
            agent.deliver(self._request(envelope, content, index, rcpt, route, False))
            for index, (rcpt, (agent, route)) in enumerate(
                zip(envelope.recipients, routes, strict=True))))
        qid = envelope.queue_id
        sent = [result.status is Status.SENT for result in results]
        if any(sent):
            self._announce(envelope)
        for rcpt, result, (_, route), ok in zip(envelope.recipients, results, routes, sent,
                                                strict=True):
            if ok:  # a failed one is tried again from the queue, logged there
                rcpt.done = True
                self._log_result(envelope, rcpt.address, result, picked, picked,
                                 route.transport)
        if not all(sent):
            return False
        self.log.log("qmgr", f"{qid}: removed")
        return True

    def _request(self, envelope: Envelope, content: bytes, index: int, rcpt: Recipient,
                 route: Route, recovered: bool) -> DeliveryRequest:
        """What an agent gets for one recipient (`index`: its place in the envelope)."""
        return DeliveryRequest(
            envelope.queue_id, envelope.sender, rcpt.address,
            rcpt.address if self.settings.enable_original_recipient else "", index,
            envelope.arrival, content, route.nexthop, recovered, route.uid, route.gid)

    def _announce(self, envelope: Envelope) -> None:
        self.log.log("qmgr", f"{envelope.queue_id}: from=<{envelope.sender}>, "
                             f"size={envelope.size}, nrcpt={len(envelope.recipients)} "
                             "(queue active)")

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
                self.store.release(job.queue_id)  # delivered, deferred, or left to a sweep
                self._busy -= 1
                self._update_idle()

    async def _load(self, job: Job) -> tuple[Envelope, bytes] | None:
        """The job's message; None when its file is corrupt (then moved to corrupt/)."""
        if job.loaded is not None:
            loaded, job.loaded = job.loaded, None
            return loaded
        try:
            return await asyncio.to_thread(self.store.read, "active", job.queue_id)
        except CorruptQueueFile as exc:
            await self._save_corrupt("active", job.queue_id, str(exc))
            return None

    async def _deliver(self, job: Job) -> None:
        loaded = await self._load(job)
        if loaded is None:
            return
        envelope, content = loaded
        qid = envelope.queue_id
        if not job.announced:
            self._announce(envelope)
        groups: dict[tuple[str, str], list[tuple[int, Recipient, Route]]] = {}
        content_filter = envelope.extra.get("filter", "")  # the FILTER access action
        for index, rcpt in enumerate(envelope.recipients):
            if not rcpt.done:
                transport, _, nexthop = content_filter.partition(":")
                route = Route(transport, nexthop) if content_filter else \
                    self.router.route(rcpt.address)
                groups.setdefault((route.transport, route.nexthop), []).append(
                    (index, rcpt, route))
        outcomes = await asyncio.gather(*(self._deliver_group(envelope, content, members, job)
                                          for members in groups.values()))
        failed = [item for outcome in outcomes for item in outcome]
        failed += self._expire(envelope)
        if failed:
            await self._bounce_or_defer(envelope, content, failed)
        if any(not rcpt.done for rcpt in envelope.recipients):
            await self._defer(envelope, content)
        else:
            self.store.remove("active", qid)
            self.log.log("qmgr", f"{qid}: removed")

    async def _deliver_group(self, envelope: Envelope, content: bytes,
                             members: list[tuple[int, Recipient, Route]], job: Job
                             ) -> list[Failed]:
        """The recipients of one message with the same transport and next hop; returns the
        ones that failed for good (to be bounced)."""
        started = self.clock()
        route = members[0][2]
        results = await self._results(envelope, content, members, route, job.recovered)
        failed = []
        for (_, rcpt, _), result in zip(members, results, strict=True):
            if result.status is Status.BOUNCED and self.settings.soft_bounce:
                result = DeliveryResult(Status.DEFERRED, "4" + result.dsn[1:], result.text,
                                        result.relay)
            self._log_result(envelope, rcpt.address, result, job.picked, started,
                             route.transport)
            if result.status is Status.SENT:
                rcpt.done = True
            elif result.status is Status.BOUNCED:
                rcpt.done = True
                failed.append(Failed(rcpt.address, rcpt.orcpt, result.dsn, result.text))
            else:
                rcpt.dsn, rcpt.reason = result.dsn, result.text
        return failed

    async def _results(self, envelope: Envelope, content: bytes,
                       members: list[tuple[int, Recipient, Route]], route: Route,
                       recovered: bool) -> list[DeliveryResult]:
        transport = route.transport
        if transport in self.settings.defer_transports:
            return [DeliveryResult(Status.DEFERRED, "4.3.0", "deferred transport", "none")
                    for _ in members]
        builtin = _builtin(transport, route.nexthop)
        if builtin is not None:
            return [builtin for _ in members]
        agent = self.agents.get(transport)
        if route.error or agent is None:
            text = route.error or f"mail transport unavailable: {transport}"
            return [DeliveryResult(Status.DEFERRED, "4.3.0", text, "none") for _ in members]
        requests = [self._request(envelope, content, index, rcpt, r, recovered)
                    for index, rcpt, r in members]
        many = getattr(agent, "deliver_many", None)
        if many is not None:
            results: list[DeliveryResult] = await many(requests)
            return results
        return [await agent.deliver(request) for request in requests]

    def _expire(self, envelope: Envelope) -> list[Failed]:
        """Recipients still deferred past the queue lifetime are returned to the sender."""
        lifetime = (self.settings.bounce_queue_lifetime if not envelope.sender
                    else self.settings.maximal_queue_lifetime)
        pending = [r for r in envelope.recipients if not r.done]
        if not pending or self.clock() - envelope.arrival < lifetime:
            return []
        self.log.log("qmgr", f"{envelope.queue_id}: from=<{envelope.sender}>, "
                             "status=expired, returned to sender")
        for rcpt in pending:
            rcpt.done = True
            self.metrics.delivery("none", "expired")
        return [Failed(r.address, r.orcpt, r.dsn or "4.4.7",
                       r.reason or "message delivery timed out") for r in pending]

    async def _bounce_or_defer(self, envelope: Envelope, content: bytes,
                               failed: list[Failed]) -> None:
        """The notification, or (it cannot be queued: a full disk) the failed recipients stay
        pending, as Postfix defers a recipient whose bounce service failed."""
        try:
            await self._bounce(envelope, content, failed)
        except (OSError, QueueError) as exc:
            self.log.log("qmgr", f"warning: {envelope.queue_id}: cannot queue the "
                                 f"non-delivery notification: {exc}")
            addresses = {f.recipient for f in failed}
            for rcpt in envelope.recipients:
                if rcpt.address in addresses:
                    rcpt.done = False
                    rcpt.dsn, rcpt.reason = "4.3.0", "bounce or trace service failure"

    async def _bounce(self, envelope: Envelope, content: bytes, failed: list[Failed]) -> None:
        """A non-delivery notification to the sender; a bounce that bounces goes to the
        postmaster (double bounce), a double bounce that bounces is dropped."""
        s = self.settings
        double_sender = f"{s.double_bounce_sender}@{s.myorigin or s.myhostname}"
        if envelope.sender == double_sender:
            self.log.log("bounce", f"{envelope.queue_id}: undeliverable double bounce "
                                   "discarded")
            return
        if envelope.sender:
            to, sender, kind = envelope.sender, "", "sender"
        else:
            notice = s.notice_recipient
            to = notice if "@" in notice else f"{notice}@{s.myorigin or s.myhostname}"
            sender, kind = double_sender, "postmaster"
        now = self.clock()
        text = notification(envelope, content, failed, s.myhostname, s.mail_name, to, now,
                            postmaster_copy=kind == "postmaster")
        notice_env = Envelope("", sender, [Recipient(to)], now, client_name="localhost",
                              client_addr="127.0.0.1", protocol="bounce", size=len(text))
        qid = await asyncio.to_thread(self.store.submit, notice_env, text)
        self.log.log("bounce", f"{envelope.queue_id}: {kind} non-delivery notification: {qid}")
        self.enqueue(qid, notice_env, text)

    def _log_result(self, envelope: Envelope, recipient: str, result: DeliveryResult,
                    picked: float, started: float, transport: str = "") -> None:
        now = self.clock()
        a = max(picked - envelope.arrival, 0.0)
        b = max(started - picked, 0.0)
        c = min(result.setup, max(now - started, 0.0))
        d = max(now - started - c, 0.0)
        total = max(now - envelope.arrival, 0.0)
        self.metrics.delivery(transport or "error", result.status.value)
        program = _PROGRAMS.get(transport, transport) if transport else "error"
        if result.relay in ("virtual", "local"):
            program = result.relay
        self.log.log(program, f"{envelope.queue_id}: to=<{recipient}>, relay={result.relay}, "
                     f"delay={format_delay(total)}, delays={format_delay(a)}/{format_delay(b)}/"
                     f"{format_delay(c)}/{format_delay(d)}, dsn={result.dsn}, "
                     f"status={result.status.value} "
                     f"({result.text})")

    async def _warn_delay(self, envelope: Envelope, content: bytes) -> None:
        """delay_warning_time: one "Delayed Mail" notice per message to its sender."""
        s = self.settings
        if (not s.delay_warning_time or not envelope.sender or envelope.extra.get("warned")
                or self.clock() - envelope.arrival < s.delay_warning_time):
            return
        envelope.extra["warned"] = "1"
        pending = [Failed(r.address, r.orcpt, r.dsn or "4.0.0", r.reason)
                   for r in envelope.recipients if not r.done]
        now = self.clock()
        text = notification(envelope, content, pending, s.myhostname, s.mail_name,
                            envelope.sender, now, delay=(
                                int(s.delay_warning_time // 3600),
                                int(s.maximal_queue_lifetime // 86400)))
        notice = Envelope("", "", [Recipient(envelope.sender)], now, client_name="localhost",
                          client_addr="127.0.0.1", protocol="bounce", size=len(text))
        qid = await asyncio.to_thread(self.store.submit, notice, text)
        self.log.log("bounce", f"{envelope.queue_id}: sender delay notification: {qid}")
        self.enqueue(qid, notice, text)

    async def _defer(self, envelope: Envelope, content: bytes) -> None:
        """Record the recipients' status and the next attempt, move the file to deferred/.

        On a full (or failing) queue file system the status cannot be rewritten: the file
        goes to deferred/ as it was, due at the next queue run, and recipients already
        delivered are tried again (a Maildir finds its earlier copy). Never left in active/.
        """
        qid = envelope.queue_id
        try:
            await self._warn_delay(envelope, content)
        except (OSError, QueueError) as exc:
            envelope.extra.pop("warned", None)
            self.log.log("qmgr", f"warning: {qid}: cannot queue the delay notification: {exc}")
        envelope.attempts += 1
        backoff = min(self.settings.minimal_backoff_time * (2 ** (envelope.attempts - 1)),
                      self.settings.maximal_backoff_time)
        envelope.next_attempt = self.clock() + backoff
        try:
            await asyncio.to_thread(self.store.rewrite, "active", envelope, content)
        except OSError as exc:
            self.log.log("qmgr", f"warning: {qid}: cannot update queue file: {exc.strerror}")
        await asyncio.to_thread(self.store.move, qid, "active", "deferred")
