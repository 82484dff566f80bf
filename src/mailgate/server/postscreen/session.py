"""An smtpd session under postscreen's deep tests (beyond Postfix: the client that passes them
goes on in the same connection instead of being told `450 4.3.2` and to come back).

Until the client passes (at its first RCPT) each command line goes through the tests first;
EHLO does not announce PIPELINING, as postscreen's engine does not. smtpd's routine lines
(connect, disconnect, lost connection, timeout, pipelining) are held meanwhile and logged when the client
passes, or when smtpd logs something else (a reject, a warning); a client that fails or
leaves before is logged as Postfix's postscreen logs it: without them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from mailgate.config.settings import SmtpdSettings
from mailgate.engine.context import Client
from mailgate.server.postscreen.smtpd import SmtpdTests
from mailgate.server.session import Services, Session
from mailgate.smtp.protocol import Closed, Command, ServerConnection


class Watch:
    """The deep tests of one connection and what ends them: passing, or the session's end."""

    def __init__(self, tests: SmtpdTests, passed: Callable[[], Awaitable[None]],
                 ended: Callable[[], None]) -> None:
        self.tests = tests
        self.passed = passed  # conclude: PASS NEW|OLD, the cache (the session goes on)
        self.ended = ended  # conclude: the cache, DISCONNECT (the connection is over)


class HandedSession(Session):
    """The smtpd session of a client postscreen handed over: what it sent before the
    greeting was postscreen's pregreet test, not smtpd's pipelining check (Postfix's smtpd
    behind postscreen does not log `improper command pipelining after CONNECT` either)."""

    async def start(self, early_input: bytes, greeted: bool = False,
                    handshake: Callable[[], Awaitable[bool]] | None = None) -> None:
        await super().start(b"", greeted, handshake)


# what smtpd logs of any connection; Postfix's smtpd never sees one its postscreen turns away
ROUTINE = ("connect from ", "disconnect from ", "lost connection after ", "timeout after ",
           "improper command pipelining after ", "discarding EHLO keywords: ")
# commands whose restrictions may log a reject before RCPT (with smtpd_delay_reject = no)
_CHECKED = frozenset({"VRFY", "ETRN"})
_CHECKED_EARLY = frozenset({"HELO", "EHLO", "MAIL"})


class ScreenedSession(HandedSession):
    """Session with postscreen's deep tests in front until the client passes them."""

    def __init__(self, settings: SmtpdSettings, services: Services, client: Client,
                 conn: ServerConnection, *, watch: Watch) -> None:
        self.watch: Watch | None = watch
        self.held: list[str] | None = None  # holding smtpd's routine lines (from start())
        super().__init__(settings, services, client, conn)

    # --- smtpd's routine lines are held while postscreen watches --------------------------
    def log(self, text: str) -> None:
        if self.held is not None and text.startswith(ROUTINE):
            self.held.append(text)
            return
        self._release()
        super().log(text)

    def warn(self, text: str) -> None:
        self.log("warning: " + text)

    def _release(self) -> None:
        held, self.held = self.held, None
        for text in held or ():
            super().log(text)

    # --- the session -------------------------------------------------------------------------
    async def start(self, early_input: bytes, greeted: bool = False,
                    handshake: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.held = []
        await super().start(early_input, greeted, handshake)

    def ehlo_keywords(self, auth: list[str]) -> list[str]:
        words = super().ehlo_keywords(auth)
        return [w for w in words if w != "PIPELINING"] if self.watch is not None else words

    async def command(self, cmd: Command) -> None:
        watch = self.watch
        if watch is None or self.auth_exchange is not None:
            await super().command(cmd)
            return
        step = watch.tests.line(cmd, self.conn.buffered(100))
        if step.passed:
            await watch.passed()
            self.watch = None
            self._release()
        elif step.reply:
            self.out.append((0.0, step.reply.encode("utf-8", "surrogateescape")))
            self.closing = self.closing or step.drop
            return
        elif cmd.verb in _CHECKED or (cmd.verb in _CHECKED_EARLY and not self.s.delay_reject):
            self._release()  # the engine logs its rejects itself: the connect line first
        await super().command(cmd)

    def lost(self, event: Closed) -> None:
        if self.watch is not None:
            self.watch.tests.hangup(time.monotonic())
        super().lost(event)

    def timed_out(self) -> None:
        if self.watch is None:
            super().timed_out()
            return
        step = self.watch.tests.timeout()
        self.out.append((0.0, step.reply.encode("utf-8", "surrogateescape")))
        self.closing = True

    def finish(self) -> None:
        super().finish()
        if self.watch is not None:
            self.watch.ended()
            self.watch = None
        self.held = None  # what is still held goes unlogged, as with Postfix's postscreen
