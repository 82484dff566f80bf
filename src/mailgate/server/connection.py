"""One client connection as an asyncio.Protocol: input into the sans-IO core, waits with deadlines, output."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from mailgate.server.deadline import Deadlines
from mailgate.smtp.protocol import Mode, ServerConnection

if TYPE_CHECKING:
    from mailgate.server.listener import SmtpServer

# Command input the session has not asked for yet that makes us stop reading (the client
# pipelines far ahead while a check waits for DNS); message content is always read.
_PAUSE = 256 * 1024



class Connection(asyncio.Protocol):
    """One client connection: input into the sans-IO core, waiting with deadlines, output."""

    def __init__(self, server: SmtpServer, adopted: bool = False) -> None:
        self.server = server
        self.adopted = adopted  # handed over by the accept process: already counted
        self.loop = server.loop
        s = server.settings
        self.conn = ServerConnection(s.line_length_limit, s.message_size_limit)
        self.deadlines = Deadlines(s, time.monotonic)  # the session deadline runs from accept
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.drainer: asyncio.Future[None] | None = None
        self.deadline = 0.0  # loop time at which the current wait ends
        self.timer: asyncio.TimerHandle | None = None
        self.timed_out = False
        self.unread = 0  # bytes received since the session last waited for input
        self.received = 0  # bytes received during the current wait
        self.reading_paused = False
        self.writing_paused = False
        self.counted = ""  # the address this connection is counted under (anvil's count)
        self.site_counted = False  # also in the site-wide count (shared state)
        self.gone = False

    # --- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        if not self.adopted:
            self.server.spawn(self)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.received += len(data)
        if self.waiter is not None:
            self._wake()
            return
        self.unread += len(data)
        if self.unread > _PAUSE and self.conn.mode is Mode.COMMAND and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._wake()
        # keep a plain transport open: pending replies (221) still go out (under TLS the
        # answer has no effect, and asyncio warns about a True)
        return self.transport is None or self.transport.get_extra_info("ssl_object") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.conn.receive_data(b"")
        self._wake()
        drainer, self.drainer = self.drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_result(None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        drainer, self.drainer = self.drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_result(None)

    # --- waiting with a deadline --------------------------------------------------------
    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arm(self, budget: float) -> None:
        """The current wait ends `budget` seconds from now. One timer per connection: it
        is moved earlier when needed, and re-armed when it fires before the deadline."""
        self.timed_out = False
        self.deadline = self.loop.time() + budget
        timer = self.timer
        if timer is None or timer.when() > self.deadline:
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(self.deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.waiter is None and self.drainer is None:
            return  # nothing waits: the next wait arms it again
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        self.timed_out = True
        self._wake()
        drainer, self.drainer = self.drainer, None
        if drainer is not None and not drainer.done():
            drainer.set_result(None)

    async def read(self) -> bool:
        """Wait for more input (or its end); False when the time is up."""
        deadlines = self.deadlines
        budget = deadlines.read_budget()
        if budget <= 0:
            return False
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self.unread = self.received = 0
        self._arm(budget)
        started = time.monotonic()
        self.waiter = self.loop.create_future()
        await self.waiter
        self.waiter = None
        deadlines.charge_read(time.monotonic() - started, self.received,
                              self.conn.mode is Mode.DATA or self.conn.mode is Mode.BDAT)
        return not self.timed_out or self.received > 0

    async def first_input(self, budget: float) -> bool:
        """Wait up to `budget` seconds for the first input (the PROXY header); False when
        none came in time. (Input or its end already there: at once.)"""
        if self.conn.buffered(1) or self.gone:
            return True
        self._arm(budget)
        self.waiter = self.loop.create_future()
        await self.waiter
        self.waiter = None
        return not self.timed_out or bool(self.conn.buffered(1))

    async def wait_input(self, budget: float) -> bool:
        """Wait up to `budget` seconds for more input or its end, whatever is buffered
        already (postscreen's own command time limit); False when none came in time."""
        if self.gone:
            return True
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self.unread = self.received = 0
        self._arm(budget)
        self.waiter = self.loop.create_future()
        await self.waiter
        self.waiter = None
        return not self.timed_out or self.received > 0

    async def drain(self) -> bool:
        """Wait until the client took our output; False when it did not in time."""
        if not self.writing_paused or self.gone:
            return True
        budget = self.deadlines.write_budget()
        if budget > 0:
            self._arm(budget)
            self.drainer = self.loop.create_future()
            await self.drainer
            self.drainer = None
            if not self.writing_paused or self.gone:
                return True
        self.transport.abort()  # type: ignore[union-attr]  # close() would wait for it
        return False

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()
