"""The tests before the SMTP handshake: pregreet and DNS lists (postscreen_early.c)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from mailgate.server.connection import Connection
from mailgate.server.postscreen import texts
from mailgate.server.postscreen.dnsbl import DnsLists, DnsQuery
from mailgate.server.postscreen.record import Test
from mailgate.server.postscreen.settings import Action
from mailgate.server.postscreen.state import ScreenState
from mailgate.smtp.protocol import Closed, Mode

READ_LIMIT = 1023  # PSC_READ_BUF_SIZE - 1: how much of a pregreeting client's text is read
TEST_NAME = "tests before SMTP handshake"


class EarlyTests:
    """psc_early_tests() and psc_early_event() for one connection."""

    def __init__(self, state: ScreenState, connection: Connection, lists: DnsLists | None,
                 clock: Callable[[], float], monotonic: Callable[[], float]) -> None:
        self.state = state
        self.connection = connection
        self.lists = lists
        self.clock = clock
        self.monotonic = monotonic
        self.query: DnsQuery | None = None

    async def run(self) -> bool:
        """Send the teaser `220-`, ask the lists, wait for the client to talk first, for the
        lists, or for postscreen_greet_wait; False when the connection is over (the client
        left, or a `drop` action answered)."""
        st, s = self.state, self.state.settings
        record = st.record
        st.begin(TEST_NAME, self.monotonic())
        if Test.PREGREET in record.todo and s.greet_banner:
            self.connection.write(f"220-{s.greet_banner}\r\n".encode("utf-8",
                                                                      "surrogateescape"))
        if Test.DNSBL in record.todo and self.lists is not None:
            self.query = self.lists.query(st.addr)
        talk = (asyncio.get_running_loop().create_task(self.connection.first_input(
            s.greet_wait)) if Test.PREGREET in record.todo else None)
        try:
            if not await self._wait(talk):
                return False
        finally:
            if talk is not None and not talk.done():
                talk.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await talk
                self.connection.waiter = None
        return self._verdicts()

    async def _wait(self, talk: asyncio.Task[bool] | None) -> bool:
        """Until the greet wait is over or every early test is done; False when the client
        left or was dropped for talking first."""
        st = self.state
        record = st.record
        deadline = st.started + st.settings.greet_wait
        listed: asyncio.Task[bool] | None = None
        if talk is not None and not self.connection.conn.buffered(1) and self._gone():
            return self._talked()  # gone before the teaser went out: HANGUP
        if self.query is not None:
            listed = asyncio.get_running_loop().create_task(self.query.done.wait())
        try:
            while not self._early_done():
                waiting = [t for t, test in ((talk, Test.PREGREET), (listed, Test.DNSBL))
                           if t is not None and test not in record.done]
                left = deadline - self.monotonic()
                if not waiting or left <= 0:
                    break
                finished, _ = await asyncio.wait(waiting, timeout=left,
                                                 return_when=asyncio.FIRST_COMPLETED)
                if not finished:
                    break
                if listed in finished:
                    record.done.add(Test.DNSBL)
                    self._allowlist()
                if talk in finished:
                    if not talk.result():
                        break  # the greet wait is over: the client did not talk first
                    if not self._talked():
                        return False
        finally:
            if listed is not None and not listed.done():
                listed.cancel()
        return True

    def _early_done(self) -> bool:
        record = self.state.record
        return all(t in record.done for t in record.todo & {Test.PREGREET, Test.DNSBL})

    def _talked(self) -> bool:
        """Input (or its end) before the greeting: PREGREET, or HANGUP."""
        st = self.state
        conn = self.connection.conn
        data = conn.buffered(READ_LIMIT)
        elapsed = self.monotonic() - st.started
        if not data:
            if self._gone():
                st.hangup = st.noforward = True
                st.log(texts.hangup(elapsed, st.addr, st.port, st.test_name))
                return False
            return True
        st.log(texts.pregreet(len(data), elapsed, st.addr, st.port, data))
        st.record.failed.add(Test.PREGREET)
        st.record.done.add(Test.PREGREET)
        action = st.settings.greet_action
        if action is Action.DROP:
            st.drop(texts.PROTOCOL_ERROR_DROP)
            return False
        if action is Action.ENFORCE:
            st.enforce(texts.PROTOCOL_ERROR_ENFORCE)
        return True

    def _gone(self) -> bool:
        """The client closed its side (no input waits: the caller looked)."""
        conn = self.connection.conn
        return self.connection.gone or conn.mode is Mode.CLOSED or \
            isinstance(conn.next_event(), Closed)

    def _allowlist(self) -> None:
        """psc_whitelist_non_dnsbl(): a score at or below a negative
        postscreen_dnsbl_allowlist_threshold passes every other test (until the score's TTL)."""
        st, s = self.state, self.state.settings
        record = st.record
        assert self.query is not None
        score = self.query.score
        if (record.any_failed or score.total >= s.dnsbl_threshold
                or s.dnsbl_allowlist_threshold >= 0 or score.total > s.dnsbl_allowlist_threshold):
            return
        expire = int(self.clock()) + score.ttl(s.dnsbl_min_ttl)
        for test in Test:
            if test is Test.DNSBL:
                continue
            if test in record.todo and test not in record.passed:
                record.done.add(test)
                record.passed.add(test)
            record.expire[test] = max(record.expire[test], expire)

    def _verdicts(self) -> bool:
        """The greet wait is over (psc_early_event, EVENT_TIME): pass the pregreet test,
        judge the DNS list score; False when a `drop` action ends the connection."""
        st, s = self.state, self.state.settings
        record = st.record
        now = int(self.clock())
        if Test.PREGREET in record.todo and Test.PREGREET not in record.failed | record.done:
            record.passes(Test.PREGREET, now + s.greet_ttl)
        if Test.PREGREET in record.failed and s.greet_action is Action.IGNORE:
            record.failed.discard(Test.PREGREET)
        if Test.DNSBL not in record.todo:
            return True
        score = self.query.score if self.query is not None else None
        if score is not None and Test.DNSBL not in record.done:
            self._allowlist()  # a partial score: some list did not answer in time
        total = score.total if score is not None else 0
        if total < s.dnsbl_threshold:
            ttl = score.ttl(s.dnsbl_min_ttl) if score is not None else s.dnsbl_min_ttl
            record.passes(Test.DNSBL, now + ttl)
            return True
        name = (score.name if score is not None else None) or ""
        st.log(f"DNSBL rank {total} for {st.client}")
        record.failed.add(Test.DNSBL)
        if s.dnsbl_action is Action.DROP:
            st.drop(texts.dnsbl_reply("521", st.addr, name))
            return False
        if s.dnsbl_action is Action.ENFORCE:
            st.enforce(texts.dnsbl_reply("550", st.addr, name))
        else:
            record.failed.discard(Test.DNSBL)
        return True
