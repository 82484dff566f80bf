"""Queue runs: the deferred queue when due or flushed, the files of dead workers, corrupt files.

`QueueRuns` is the part of the queue manager (queue/manager.py) that finds work in the queue
directories rather than being handed it by smtpd.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from mailgate.config.settings import DeliverySettings
from mailgate.maillog import MailLog
from mailgate.queue.store import CorruptQueueFile, Envelope, QueueStore


@dataclass
class Job:
    """One message for the queue manager to deliver."""

    queue_id: str
    recovered: bool
    picked: float  # when the queue manager took it (end of delay a)
    loaded: tuple[Envelope, bytes] | None = None  # handed over by smtpd: no re-read
    announced: bool = False  # its `from=` line is logged (a first attempt in smtpd)


class QueueRuns:
    """Queue runs for QueueManager; the attributes below are the manager's."""

    store: QueueStore
    settings: DeliverySettings
    log: MailLog
    clock: Callable[[], float]
    deaths: Callable[[], int]
    loop: asyncio.AbstractEventLoop
    _jobs: asyncio.Queue[Job]
    _flushes: set[asyncio.Task[int]]

    def _update_idle(self) -> None:
        raise NotImplementedError

    async def _save_corrupt(self, queue: str, queue_id: str, reason: str) -> None:
        """Postfix's qmgr: `message rejected: <why>`, then the file goes to corrupt/ (or
        nothing, when another worker's queue run took it first)."""
        try:
            await asyncio.to_thread(self.store.save_corrupt, queue, queue_id)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.log.log("qmgr", f"warning: {queue_id}: message rejected: {reason}")
            self.log.log("qmgr", f"warning: save corrupt file queue {queue} id {queue_id}: "
                                 f"{exc.strerror}")
            return
        self.log.log("qmgr", f"warning: {queue_id}: message rejected: {reason}")
        self.log.log("qmgr", f'warning: saving corrupt file "{queue_id}" from queue '
                             f'"{queue}" to queue "corrupt"')

    async def _retry_loop(self, tick: float = 1.0) -> None:
        """Every queue_run_delay: the due deferred mail and the orphans; at once (within
        `tick`) when the master reports a dead worker: its orphans."""
        deaths = self.deaths()
        while True:
            await self.flush(only_due=True)
            await self.claim_orphans()
            waited = 0.0
            while waited < self.settings.queue_run_delay:
                await asyncio.sleep(tick)
                waited += tick
                if self.deaths() != deaths:
                    deaths = self.deaths()
                    await self.claim_orphans()

    async def claim_orphans(self) -> int:
        """Deliver the active/ files no live worker owns (its worker died mid-delivery);
        remove the incoming/ files of transactions a dead worker never finished.

        Redelivery is safe: recovered messages check the Maildir for their earlier copy.
        """
        def claim() -> list[str]:
            self.store.drop_orphaned_incoming()
            return [queue_id for queue_id in self.store.list_queue("active")
                    if self.store.claim("active", queue_id)]

        claimed = await asyncio.to_thread(claim)
        for queue_id in claimed:
            self._jobs.put_nowait(Job(queue_id, True, self.clock()))
        self._update_idle()
        return len(claimed)

    def flush_soon(self) -> None:
        """ETRN or `mailgate queue flush`: the deferred queue, all of it, now."""
        task = self.loop.create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self, only_due: bool = False) -> int:
        """Move deferred messages (due ones, or all) back to active/ and deliver them."""
        moved = 0
        now = self.clock()
        for queue_id in await asyncio.to_thread(self.store.list_queue, "deferred"):
            try:
                envelope, _ = await asyncio.to_thread(self.store.read, "deferred", queue_id)
            except CorruptQueueFile as exc:
                await self._save_corrupt("deferred", queue_id, str(exc))
                continue
            except OSError:
                continue  # delivered, deleted or moved meanwhile
            if only_due and envelope.next_attempt > now:
                continue
            if not self.store.claim("deferred", queue_id):
                continue  # another worker's queue run took it
            try:
                await asyncio.to_thread(self.store.move, queue_id, "deferred", "active")
            except OSError:
                self.store.release(queue_id)
                continue  # `mailgate queue` took it
            self._jobs.put_nowait(Job(queue_id, True, now))
            moved += 1
        self._update_idle()
        return moved
