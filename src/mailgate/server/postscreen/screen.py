"""postscreen in the worker: screens a connection from a postscreen listener before smtpd.

The order is Postfix's (postscreen.c psc_endpt_lookup_done): the connection count limit,
the permanent access list, the cache, the allowlist interfaces, the early tests (pregreet,
DNS lists), then either the hand-off to smtpd (a plain session, or one under the deep tests)
or postscreen's own engine for a client that failed a test under `enforce`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from mailgate.config.config import Config
from mailgate.engine.engine import Engine
from mailgate.errors import MapError
from mailgate.maillog import MailLog
from mailgate.maps import Registry
from mailgate.maps.matchlist import HostAddrList
from mailgate.server.commands import ForbiddenCommands
from mailgate.server.connection import Connection
from mailgate.server.postscreen import texts
from mailgate.server.postscreen.access import AccessList, Verdict
from mailgate.server.postscreen.cache import Cache
from mailgate.server.postscreen.dnsbl import DnsLists
from mailgate.server.postscreen.early import EarlyTests
from mailgate.server.postscreen.record import DEEP, EARLY, Test, new_tests, parse_tests
from mailgate.server.postscreen.session import HandedSession, ScreenedSession, Watch
from mailgate.server.postscreen.settings import Action, PostscreenSettings
from mailgate.server.postscreen.smtpd import SmtpdTests
from mailgate.server.postscreen.state import ScreenState
from mailgate.server.session import Session
from mailgate.smtp.protocol import NEED_DATA, Command

SessionFactory = Callable[..., Session]
DEEP_TEST_NAME = "tests after SMTP handshake"


class Postscreen:
    """One postscreen listener's tests, tables, cache and log."""

    def __init__(self, settings: PostscreenSettings, access: AccessList,
                 lists: DnsLists | None, cache: Cache | None, forbidden: ForbiddenCommands,
                 interfaces: HostAddrList, log: MailLog,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.access = access
        self.lists = lists
        self.cache = cache
        self.forbidden = forbidden
        self.interfaces = interfaces
        self.maillog = log
        self.clock = clock
        self.monotonic = monotonic
        self.writes: set[asyncio.Task[None]] = set()
        s = settings
        self.enabled = frozenset(test for test, on in (
            (Test.PREGREET, bool(s.greet_banner)), (Test.DNSBL, bool(s.dnsbl_sites)),
            (Test.PIPELINING, s.pipelining_enable), (Test.NON_SMTP, s.non_smtp_command_enable),
            (Test.BARE_NEWLINE, s.bare_newline_enable)) if on)

    @classmethod
    def build(cls, cfg: Config, registry: Registry, engine: Engine, log: MailLog
              ) -> Postscreen:
        """From the postscreen service's configuration (main.cf and its master.cf -o)."""
        s = PostscreenSettings.from_config(cfg)
        named = log.named(cfg.get_str("syslog_name"), s.smtputf8_enable)

        def warn(text: str) -> None:
            named.log("postscreen", f"warning: {text}")

        tables = engine.tables
        lists = None
        if s.dnsbl_sites and tables.dns is not None:
            reply_map = registry.open_or_failed(s.dnsbl_reply_map) if s.dnsbl_reply_map \
                else None
            lists = DnsLists.build(s.dnsbl_sites, reply_map, tables.dns.resolver,
                                   s.dnsbl_timeout, s.dnsbl_max_ttl, named.log)
        cache = Cache(tables.state, s.cache_retention_time, s.cache_cleanup_interval, warn) \
            if s.cache_map else None
        return cls(s, AccessList(s.access_list, registry, tables.mynetworks, warn), lists,
                   cache, ForbiddenCommands.build(s.forbidden_commands, registry),
                   HostAddrList.build(s.allowlist_interfaces, registry,
                                      "postscreen_allowlist_interfaces", warn=warn),
                   named)

    def log(self, text: str) -> None:
        self.maillog.log("postscreen", text)

    # --- one connection ------------------------------------------------------------------
    async def screen(self, connection: Connection, addr: str, port: int,
                     server: tuple[str, int] | None, count: int) -> SessionFactory | None:
        """Screen a new connection; returns how to make its smtpd session, or None when
        postscreen ended the connection itself."""
        server_addr, server_port = server or ("unknown", 0)
        if server_addr.lower().startswith("::ffff:") and "." in server_addr:
            server_addr = server_addr[7:]
        self.log(f"CONNECT from {texts.client(addr, port)} to "
                 f"{texts.client(server_addr, server_port)}")
        state = ScreenState(addr, port, new_tests(frozenset()), self.settings, self.enabled,
                            self.log)
        limit = self.settings.client_connection_count_limit
        if limit and count > limit:
            self.log(f"NOQUEUE: reject: CONNECT from {state.client}: too many connections")
            state.drop(texts.TOO_MANY_CONNECTIONS)
            await self._hang_up(connection, state)
            return None
        verdict = self._access(state)
        if verdict is Verdict.ALLOW:
            return HandedSession
        if verdict is Verdict.DENY and self.settings.denylist_action is Action.DROP:
            await self._hang_up(connection, state)
            return None
        if await self._cached(state):
            self._conclude(state)
            return HandedSession
        self._veto(state, server_addr)
        return await self._tests(connection, state)

    def _access(self, state: ScreenState) -> Verdict:
        """postscreen_access_list: ALLOWLISTED clients go straight to smtpd; DENYLISTED ones
        get the denylist action (`ignore`: tested as any other)."""
        s = self.settings
        verdict = self.access.evaluate(state.addr)
        if verdict is Verdict.ALLOW:
            self.log(texts.listed("ALLOW", s.respectful_logging, state.addr, state.port))
        elif verdict is Verdict.DENY:
            self.log(texts.listed("DENY", s.respectful_logging, state.addr, state.port))
            if s.denylist_action is not Action.IGNORE:
                state.record.denylisted = True
            if s.denylist_action is Action.DROP:
                state.drop(texts.DENYLIST_DROP)
            elif s.denylist_action is Action.ENFORCE:
                state.enforce(texts.DENYLIST_ENFORCE)
        return verdict

    async def _cached(self, state: ScreenState) -> bool:
        """The temporary allowlist: True when the cache says every enabled test is still
        passed (`PASS OLD`); else the tests to do, from the cache or all of them."""
        failed = state.record.denylisted
        value = await self.cache.get(state.addr) if self.cache is not None and not failed \
            else None
        if value is not None:
            state.record = parse_tests(value, int(self.clock()), self.enabled)
        else:
            state.record = new_tests(self.enabled)
        state.record.denylisted = failed
        if value is not None and not state.record.todo and not failed:
            self.log(f"PASS OLD {state.client}")
            return True
        return False

    def _veto(self, state: ScreenState, server_addr: str) -> None:
        """postscreen_allowlist_interfaces: no allowlisting for a client of another address
        (a backup MX); a lookup failure counts as no match."""
        try:
            allowed = self.interfaces.match("", server_addr)
        except MapError:
            allowed = False
        if not allowed:
            state.record.vetoed = state.noforward = True
            self.log(texts.veto(self.settings.respectful_logging, state.addr, state.port))

    async def _tests(self, connection: Connection, state: ScreenState
                     ) -> SessionFactory | None:
        record = state.record
        if record.todo & EARLY:
            early = EarlyTests(state, connection, self.lists, self.clock, self.monotonic)
            if not await early.run():
                await self._hang_up(connection, state)
                return None
        deep = record.todo & DEEP
        if not state.noforward and deep <= record.passed:
            self._conclude(state)
            return HandedSession
        tests = SmtpdTests(state, self.forbidden, self.clock, dummy=state.noforward)
        greeting = tests.start()
        state.begin(DEEP_TEST_NAME, self.monotonic())
        if not state.noforward:
            watch = Watch(tests, functools.partial(self._passed, state),
                          functools.partial(self._ended, state))
            return functools.partial(ScreenedSession, watch=watch)
        if greeting:
            connection.write(greeting.encode("utf-8", "surrogateescape"))
        await self._engine(connection, tests)
        await self._hang_up(connection, state, replied=True)
        return None

    async def _engine(self, connection: Connection, tests: SmtpdTests) -> None:
        """postscreen's own SMTP engine until it or the client ends the connection; each
        command must arrive within postscreen_command_time_limit."""
        conn = connection.conn
        limit = self.settings.command_time_limit
        began = self.monotonic()
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                left = limit - (self.monotonic() - began)
                if left > 0 and await connection.wait_input(left):
                    continue
                step = tests.timeout()
            elif isinstance(event, Command):
                step = tests.line(event, conn.buffered(100))
                began = self.monotonic()
            else:  # Closed (no DATA is ever started)
                tests.hangup(self.monotonic())
                return
            if step.reply:
                connection.write(step.reply.encode("utf-8", "surrogateescape"))
            if step.drop:
                return

    # --- conclusions -----------------------------------------------------------------------
    def _conclude(self, state: ScreenState) -> None:
        """psc_conclude() for a client that goes to smtpd: the blessing, the cache."""
        value = state.conclude()
        if value is not None and self.cache is not None:
            self._store(state, value)

    def _store(self, state: ScreenState, value: str) -> None:
        assert self.cache is not None
        task = asyncio.get_running_loop().create_task(self.cache.put(
            state.addr, value, state.record, self.enabled, int(self.clock())))
        self.writes.add(task)
        task.add_done_callback(self.writes.discard)

    async def _hang_up(self, connection: Connection, state: ScreenState,
                       replied: bool = False) -> None:
        """psc_conclude() for a connection postscreen ends: the blessing and cache, the
        final reply (not to a client that left), DISCONNECT."""
        self._conclude(state)
        if not state.hangup and not replied:
            connection.write(state.final_reply.encode("utf-8", "surrogateescape"))
        await connection.drain()
        self.log(f"DISCONNECT {state.client}")

    async def _passed(self, state: ScreenState) -> None:
        """The client passed the deep tests at RCPT: smtpd goes on (no DISCONNECT)."""
        self._conclude(state)

    def _ended(self, state: ScreenState) -> None:
        """The session ended while the deep tests watched it."""
        self._conclude(state)
        self.log(f"DISCONNECT {state.client}")
