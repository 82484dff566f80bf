"""check_greylist as postgrey 1.37 decides, through the engine's stage checks: a clock handed
in (no sleeping), the state in a MemoryStore; replies, log lines and the X-Greylist header."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from mailgate.app import build_engine, build_resolver
from mailgate.config.config import Config
from mailgate.engine.context import CheckState, Client
from mailgate.engine.engine import Engine
from mailgate.engine.greylist import normalize_sender
from mailgate.engine.reply import PASS, Reply
from mailgate.engine.stages import RCPT
from mailgate.maps import default_registry
from mailgate.state import MemoryStore, StateUnavailable

T = TypeVar("T")
DAY = 86400
START = 1_700_000_000.0
GREYLISTED = ("<{}>: Recipient address rejected: Greylisted, see "
              "http://postgrey.schweikert.ch/help/{}.html")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Gateway:
    """An engine with check_greylist in smtpd_recipient_restrictions, its log and clock;
    closed (resolver, event loop) after each test."""

    def __init__(self, tmp_path: Path, extra: str = "", store: MemoryStore | None = None
                 ) -> None:
        (tmp_path / "main.cf").write_text(
            f"queue_directory = {tmp_path}/queue\nmyhostname = mx.example.test\n"
            "mydestination = example.test\nlocal_recipient_maps =\n"
            "smtpd_recipient_restrictions = reject_unauth_destination, check_greylist\n"
            + extra)
        cfg = Config.load(str(tmp_path), [])
        registry = default_registry()
        self.clock = Clock()
        self.store = store or MemoryStore(self.clock)
        self.log: list[str] = []
        self.engine: Engine = build_engine(cfg, registry, build_resolver(cfg, registry,
                                                                          frozenset()),
                                           self.log.append, state=self.store)[0]
        self.messages = 0
        self.loop = asyncio.new_event_loop()
        _MADE.append(self)

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    def close(self) -> None:
        dns = self.engine.tables.dns
        if dns is not None:
            self.loop.run_until_complete(self._close(dns.resolver.close))
        self.loop.close()

    @staticmethod
    async def _close(close: Callable[[], object]) -> None:
        close()

    def state(self, addr: str, sender: str, name: str = "client.example") -> CheckState:
        self.messages += 1
        return CheckState(Client(name, addr, 0), helo="client.example", sender=sender,
                          where="RCPT", protocol="ESMTP", instance=f"msg{self.messages}")

    def rcpt(self, recipient: str = "alice@example.test", addr: str = "192.0.2.1",
             sender: str = "s@sender.example", st: CheckState | None = None) -> Reply | None:
        st = st or self.state(addr, sender)
        return self.run(self.engine.check_rcpt(st, recipient)).reply

    def later(self, seconds: float) -> None:
        self.clock.now += seconds


_MADE: list[Gateway] = []


@pytest.fixture(autouse=True)
def _close_gateways() -> Iterator[None]:
    yield
    while _MADE:
        _MADE.pop().close()


def greylisted(recipient: str = "alice@example.test") -> Reply:
    return Reply(450, "4.2.0", GREYLISTED.format(recipient, recipient.rpartition("@")[2]))


def header(delayed: int, now: float) -> str:
    date = time.strftime("%a, %d %b %Y %H:%M:%S %Z", time.localtime(now))
    return (f"X-Greylist: delayed {delayed} seconds by mailgate-check_greylist at "
            f"mx.example.test; {date}")


def test_first_attempt_is_deferred_with_postgreys_reply_and_postfixs_log(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    assert gw.rcpt() == greylisted()
    assert gw.log[-1] == (
        "NOQUEUE: reject: RCPT from client.example[192.0.2.1]: 450 4.2.0 <alice@example.test>: "
        "Recipient address rejected: Greylisted, see "
        "http://postgrey.schweikert.ch/help/example.test.html; from=<s@sender.example> "
        "to=<alice@example.test> proto=ESMTP helo=<client.example>")


def test_retry_too_early_is_deferred_then_passes_with_the_header(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "greylist_text = try again in %s seconds (%r)\n")
    first = gw.rcpt()
    assert first == Reply(450, "4.2.0", "<alice@example.test>: Recipient address rejected: "
                                        "try again in 300 seconds (example.test)")
    gw.later(200)
    assert gw.rcpt() == Reply(450, "4.2.0", "<alice@example.test>: Recipient address "
                                            "rejected: try again in 100 seconds (example.test)")
    gw.later(105)
    st = gw.state("192.0.2.1", "s@sender.example")
    assert gw.rcpt(st=st) is None
    assert st.marks.prepend == [header(305, gw.clock.now)]
    gw.later(60)  # the next message of the triplet: no delay, no header (postgrey's DUNNO)
    st = gw.state("192.0.2.1", "s@sender.example")
    assert gw.rcpt(st=st) is None
    assert st.marks.prepend == []


def test_one_header_per_message(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    for rcpt in ("alice@example.test", "bob@example.test"):
        assert gw.rcpt(rcpt) == greylisted(rcpt)
    gw.later(300)
    st = gw.state("192.0.2.1", "s@sender.example")
    assert gw.rcpt("alice@example.test", st=st) is None
    assert gw.rcpt("bob@example.test", st=st) is None
    assert st.marks.prepend == [header(300, gw.clock.now)]


def test_retry_after_the_retry_window_is_new_again(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    assert gw.rcpt() == greylisted()
    gw.later(2 * DAY + 1)  # greylist_retry_window: the first retry came too late
    assert gw.rcpt() == greylisted()
    gw.later(299)
    assert gw.rcpt() == greylisted()
    gw.later(1)
    assert gw.rcpt() is None


def test_unused_entries_expire_after_max_age(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "greylist_auto_allowlist_clients = 0\n")
    assert gw.rcpt() == greylisted()
    gw.later(300)
    assert gw.rcpt() is None
    gw.later(35 * DAY - 1)  # used again just before greylist_max_age: kept
    assert gw.rcpt() is None
    gw.later(35 * DAY + 1)
    assert gw.rcpt() == greylisted()


def test_triplets_name_the_client_network(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "greylist_auto_allowlist_clients = 0\n")
    assert gw.rcpt(addr="192.0.2.1") == greylisted()
    assert gw.rcpt(addr="2001:db8:1:2::1") == greylisted()
    gw.later(300)
    assert gw.rcpt(addr="192.0.2.200") is None  # same /24
    assert gw.rcpt(addr="192.0.3.1") == greylisted()
    assert gw.rcpt(addr="2001:db8:1:2:ffff::9") is None  # same /64
    assert gw.rcpt(addr="2001:db8:1:3::1") == greylisted()
    (tmp_path / "exact").mkdir()
    exact = Gateway(tmp_path / "exact", "greylist_ipv4_prefix_length = 32\n")
    assert exact.rcpt(addr="192.0.2.1") == greylisted()
    exact.later(300)
    assert exact.rcpt(addr="192.0.2.2") == greylisted()
    assert exact.rcpt(addr="192.0.2.1") is None


def test_sender_is_normalised_in_the_triplet(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    assert gw.rcpt(sender="prvs=0123456789=Bounce-4711@Lists.Example") == greylisted()
    gw.later(300)
    assert gw.rcpt(sender="bounce-815+x@lists.example") is None


@pytest.mark.parametrize(("sender", "normal"), [
    # checked against postgrey 1.37's do_sender_substitutions() run by perl
    ("user+ext@Example.com", "user@Example.com"),
    ("bounce-123-456@lists.example", "bounce-#-#@lists.example"),
    ("prvs=0123456789=user@example.com", "user@example.com"),
    ("prvs=user=0123456789@example.com", "user@example.com"),
    ("prvs=abcdefghij=klmnopqrst@x.example", "klmnopqrst@x.example"),
    ("prvs=ABCDEFGHIJ=user@x.example", "user@x.example"),
    ("prvs=a=b=c@x.example", "prvs=a=b=c@x.example"),
    ("prvs=0123456789=@x.example", "prvs=#=@x.example"),
    ("SRS0=HHH=TT=orig.example=user@fwd.example", "SRS0=HHH=TT=orig.example=user@fwd.example"),
    ("list-bounces+user=example.org@lists.example", "list-bounces@lists.example"),
    ("user123@x.example", "user123@x.example"),
    ("12345@x.example", "#@x.example"),
    ("a.1.b@x.example", "a.#.b@x.example"),
    ("1_2@x.example", "1_2@x.example"),
    ("a@b@c", "a@b@c"),
    ("", ""),
    ("nodomain", "nodomain"),
])
def test_normalize_sender_as_postgrey(sender: str, normal: str) -> None:
    assert normalize_sender(sender) == normal


def test_client_auto_allowlisted_after_five_passes_an_hour_apart(tmp_path: Path) -> None:
    gw = Gateway(tmp_path)
    for n in range(5):
        sender = f"user{chr(97 + n)}@sender.example"
        assert gw.rcpt(sender=sender) == greylisted()
        gw.later(300)
        assert gw.rcpt(sender=sender) is None
        if n == 0:  # a second pass within the hour is not counted
            assert gw.rcpt(sender="other@sender.example") == greylisted()
            gw.later(300)
            assert gw.rcpt(sender="other@sender.example") is None
        gw.later(3600)
    assert gw.log[-1] == ("check_greylist: client client.example[192.0.2.1] auto-allowlisted "
                          "after 5 greylisted deliveries")
    assert gw.rcpt(sender="new@elsewhere.example") is None
    assert gw.rcpt(addr="192.0.2.2", sender="new@elsewhere.example") == greylisted()
    gw.later(35 * DAY + 1)  # not seen for greylist_max_age: forgotten
    assert gw.rcpt(sender="new2@elsewhere.example") == greylisted()


def test_auto_allowlist_off(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "greylist_auto_allowlist_clients = 0\n")
    for n in range(7):
        assert gw.rcpt(sender=f"u{n}@sender.example") == greylisted()
        gw.later(300)
        assert gw.rcpt(sender=f"u{n}@sender.example") is None
        gw.later(3600)
    assert gw.rcpt(sender="new@sender.example") == greylisted()


def test_postgrey_allowlist_files(tmp_path: Path) -> None:
    clients = tmp_path / "whitelist_clients"
    clients.write_text(
        "# postgrey whitelist for mail client hostnames\n"
        "# --------------------------------------------\n\n"
        "friendly.example   # and every name below it\n"
        "/^mail\\d+\\.bulk\\.example$/\n"
        "198.51.100\n"
        "203.0.113.64/26\n"
        "2001:db8:77::/48\n"
        "two words\n"
        "/broken(/\n"
        "300.1.2.3\n")
    recipients = tmp_path / "whitelist_recipients"
    recipients.write_text("postmaster@\nabuse@example.test\nopen.example.test\n"
                          "/^list-.*@example\\.test$/\n")
    gw = Gateway(tmp_path, f"greylist_allowlist_clients = {clients}, {clients}.local\n"
                           f"greylist_allowlist_recipients = {recipients}\n"
                           "relay_domains = sub.open.example.test\n"
                           "smtpd_recipient_restrictions = check_greylist\n")
    assert gw.log == [
        f"warning: {clients}, line 9: doesn't look like a hostname: two words",
        f"warning: {clients}, line 10: bad regular expression /broken(/: missing closing "
        "parenthesis; skipping this line",
        f"warning: {clients}, line 11: doesn't look like an address or network: 300.1.2.3"]
    passing = [("mx.friendly.example", "192.0.2.1", "bob@example.test"),
               ("MAIL42.bulk.example", "192.0.2.1", "bob@example.test"),
               ("unknown", "198.51.100.9", "bob@example.test"),
               ("unknown", "203.0.113.70", "bob@example.test"),
               ("unknown", "2001:db8:77:1::5", "bob@example.test"),
               ("unknown", "192.0.2.1", "Postmaster+tag@example.test"),
               ("unknown", "192.0.2.1", "abuse@example.test"),
               ("unknown", "192.0.2.1", "bob@sub.open.example.test"),
               ("unknown", "192.0.2.1", "list-x@example.test")]
    for name, addr, rcpt in passing:
        st = gw.state(addr, "s@sender.example", name=name)
        assert gw.rcpt(rcpt, st=st) is None, (name, addr, rcpt)
    for name, addr, rcpt in [("unfriendly.example", "192.0.2.1", "bob@example.test"),
                             ("unknown", "203.0.113.130", "bob@example.test"),
                             ("unknown", "192.0.2.1", "abuse@other.example")]:
        st = gw.state(addr, "s@sender.example", name=name)
        assert gw.rcpt(rcpt, st=st) is not None, (name, addr, rcpt)


def test_denied_relay_wins_over_greylisting(tmp_path: Path) -> None:
    """DEFER_IF_PERMIT: the 450 only when nothing later rejects."""
    gw = Gateway(tmp_path, "smtpd_relay_restrictions = check_greylist, "
                           "reject_unauth_destination\n")
    assert gw.rcpt("bob@elsewhere.example") == Reply(
        554, "5.7.1", "<bob@elsewhere.example>: Relay access denied")
    assert gw.rcpt("alice@example.test") == greylisted()


def test_greylist_action_defer_and_a_code(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "greylist_action = 451\ngreylist_text = 4.7.1 wait %s s\n")
    assert gw.rcpt() == Reply(451, "4.7.1", "<alice@example.test>: Recipient address "
                                            "rejected: wait 300 s")


def test_state_failure_is_a_table_failure(tmp_path: Path) -> None:
    class Broken(MemoryStore):
        async def get(self, key: str) -> str | None:
            raise StateUnavailable("state.db: database is locked")

    gw = Gateway(tmp_path, store=Broken())
    assert gw.rcpt() == Reply(451, "4.3.5", "<alice@example.test>: Recipient address "
                                            "rejected: Server configuration error")
    assert gw.log[-2] == ("warning: check_greylist: state lookup error: "
                          "state.db: database is locked")


def test_state_failure_may_let_the_client_through(tmp_path: Path) -> None:
    """A remote store whose administrator chose `fail_open` (redis_failure_action)."""
    class Open(MemoryStore):
        async def get(self, key: str) -> str | None:
            exc = StateUnavailable("redis: timeout")
            exc.fail_open = True  # as the guarded remote store raises it
            raise exc

    gw = Gateway(tmp_path, store=Open())
    assert gw.rcpt() is None
    # no warning per command: the store logs one when it fails and one when it is back
    assert not any("state lookup error" in line for line in gw.log)


def test_nothing_to_greylist_without_a_recipient(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, "smtpd_sender_restrictions = check_greylist\n")
    st = gw.state("192.0.2.1", "s@sender.example")
    assert gw.run(gw.engine.check_mail(st, "s@sender.example")) is PASS


def test_dnswl_listed_clients_are_not_greylisted(tmp_path: Path, dns_server: str) -> None:
    gw = Gateway(tmp_path, f"resolver_servers = {dns_server}\n"
                           "greylist_dnswl_sites = dnsbltest.porcupine.org=127.0.0.2\n")
    assert gw.rcpt(addr="127.0.0.2") is None
    assert gw.rcpt(addr="127.0.0.3") == greylisted()  # listed, outside the filter


def test_policyd_gets_postgreys_actions(tmp_path: Path) -> None:
    """What `mailgate policyd` answers for a RCPT request: the pending DEFER_IF_PERMIT, then
    the PREPEND (the server turns them into `action=` lines)."""
    gw = Gateway(tmp_path)

    def run() -> tuple[object, list[str]]:
        st = gw.state("192.0.2.1", "s@sender.example")
        outcome = gw.run(gw.engine.run_stage(
            st, RCPT, ("check_greylist",), "alice@example.test", helo="client.example",
            sender="s@sender.example", recipient="alice@example.test"))
        return outcome.pending, st.marks.prepend

    pending, prepend = run()
    assert pending is not None and (pending.code, pending.dsn) == (450, "4.2.0")
    assert prepend == []
    gw.later(300)
    assert run() == (None, [header(300, gw.clock.now)])


def test_a_remote_store_is_asked_once_for_a_triplet_that_passed() -> None:
    """With a shared store (Redis) a worker trusts a pass for PASSED_CACHE seconds."""
    from mailgate.engine.greylist import PASSED_CACHE, Greylist, GreylistSettings

    class Remote(MemoryStore):
        shared = True

        def __init__(self, clock: Callable[[], float]) -> None:
            super().__init__(clock)
            self.gets = 0

        async def get(self, key: str) -> str | None:
            self.gets += 1
            return await super().get(key)

    now = [1_000_000.0]
    store = Remote(lambda: now[0])
    grey = Greylist(GreylistSettings.from_config(Config.load(overrides=[
        "greylist_delay=60s"])), store, clock=lambda: now[0])

    def decide() -> object:
        return asyncio.run(grey.decide("h.example", "192.0.2.1", "192.0.2.0",
                                       "s@example.org", "r@example.test"))

    assert decide().wait == 60  # type: ignore[attr-defined]
    now[0] += 61
    assert decide().delayed == 61  # type: ignore[attr-defined]
    asked = store.gets
    for _ in range(5):
        assert decide().wait == 0 and decide().delayed == 0  # type: ignore[attr-defined]
    assert store.gets == asked  # no round trip
    now[0] += PASSED_CACHE
    decide()
    assert store.gets > asked  # asked again, and the last-seen time written
