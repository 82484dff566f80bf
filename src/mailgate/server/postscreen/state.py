"""One connection under postscreen (PSC_STATE): the client, its tests, the replies in store,
and the conclusion (psc_conclude: the blessing, the cache value)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mailgate.server.postscreen import texts
from mailgate.server.postscreen.record import Record, Test, print_tests
from mailgate.server.postscreen.settings import Action, PostscreenSettings


@dataclass
class ScreenState:
    """What postscreen knows about one connection while it screens it."""

    addr: str
    port: int
    record: Record
    settings: PostscreenSettings
    enabled: frozenset[Test]
    log: Callable[[str], None]  # a `postscreen` line
    noforward: bool = False  # the client cannot pass in this connection
    hangup: bool = False  # the client went away (not a test failure)
    final_reply: str = texts.DEFAULT_FINAL
    rcpt_reply: str = texts.DEFAULT_RCPT
    test_name: str = ""
    started: float = 0.0  # when the current group of tests began (monotonic)
    where: str = "CONNECT"
    helo: str | None = None
    sender: str | None = None
    protocol: str = "SMTP"
    command_count: int = 0
    skipped: set[Test] = field(default_factory=set)  # a deep test's failure is logged

    @property
    def client(self) -> str:
        return texts.client(self.addr, self.port)

    def begin(self, name: str, now: float) -> None:
        """PSC_BEGIN_TESTS."""
        self.test_name, self.started = name, now

    def drop(self, reply: str) -> None:
        """PSC_DROP_SESSION_STATE: this reply, then hang up."""
        self.noforward, self.final_reply = True, reply

    def enforce(self, reply: str) -> None:
        """PSC_ENFORCE_SESSION_STATE: this reply to every RCPT; never handed to smtpd."""
        self.noforward, self.rcpt_reply = True, reply

    def fail(self, test: Test, action: Action, drop: str, enforce: str, now: int) -> bool:
        """A deep test failed (its line is logged): mark it, apply the action; True when
        the connection is to end now (`drop`). Under `ignore` the test passes until the
        shortest test TTL (psc_min_ttl) is over."""
        record = self.record
        record.failed.add(test)
        record.passed.discard(test)
        record.expire[test] = 1  # PSC_TIME_STAMP_DISABLED, as Postfix writes it
        self.skipped.add(test)
        if action is Action.DROP:
            self.drop(drop)
            return True
        if action is Action.ENFORCE:
            self.enforce(enforce)
        else:
            record.failed.discard(test)
            record.passes(test, now + self.settings.min_ttl)
        return False

    def conclude(self) -> str | None:
        """psc_conclude(): a failure cancels every pass; `PASS NEW|OLD` when every test to
        do passed; returns the cache value to store (None: nothing passed)."""
        record = self.record
        if record.any_failed:
            record.passed.clear()
        if record.all_passed():
            self.log(f"PASS {'NEW' if record.new else 'OLD'} {self.client}")
        if not record.passed:
            return None
        return print_tests(record, self.enabled)
