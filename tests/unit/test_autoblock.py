"""Automatic blocks without a server: bad events recognized from replies, counted per address and
network in a MemoryStore with a fake clock, blocks that double for repeat offenders and expire,
exceptions, and a store that fails open."""

from __future__ import annotations

import asyncio

import pytest

from mailgate.autoblock import AutoBlocks, BlockSettings, classify
from mailgate.autoblock.records import Block, duration, network, target
from mailgate.autoblock.tracker import CACHE_SECONDS
from mailgate.engine.context import CheckState, Client
from mailgate.maps import default_registry
from mailgate.maps.matchlist import HostAddrList
from mailgate.metrics import Metrics
from mailgate.state import Item, MemoryStore, StateUnavailable

REFUSED = "421 4.3.2 Service currently unavailable; client [{}] blocked automatically"


@pytest.mark.parametrize(("code", "line", "event"), [
    (550, "5.1.1 <x@example.test>: Recipient address rejected: User unknown in virtual "
          "mailbox table", "unknown_recipient"),
    (450, "4.1.1 <x@example.test>: Recipient address rejected: User unknown", "unknown_recipient"),
    (554, "5.7.1 <x@elsewhere.example>: Relay access denied", "relay_denied"),
    (454, "4.7.1 <x@elsewhere.example>: Relay access denied", "relay_denied"),
    (535, "5.7.8 Error: authentication failed: UGFzc3dvcmQ6", "auth_failed"),
    (500, "5.5.2 Error: command not recognized", "protocol_error"),
    (501, "5.5.4 Syntax: MAIL FROM:<address>", "protocol_error"),
    (554, "5.5.0 Error: SMTP protocol synchronization", "protocol_error"),
    (550, "5.5.2 mx.example.test Error: bare <LF> received", "protocol_error"),
    (221, "2.7.0 Error: I can break rules, too. Goodbye.", "protocol_error"),
    (421, "4.7.0 mx.example.test Error: too many errors", "hard_limit"),
    # not bad events: refusals' echoes, limits, other rejects, good replies
    (503, "5.5.1 Error: need MAIL command", None),
    (554, "5.5.1 Error: no valid recipients", None),
    (452, "4.5.3 Error: too many recipients", None),
    (550, "5.1.0 <x@example.test>: Sender address rejected: User unknown in local recipient "
          "table", None),
    (554, "5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied", None),
    (421, "4.4.2 mx.example.test Error: timeout exceeded", None),
    (421, "4.3.2 Service currently unavailable; client [192.0.2.1] blocked automatically",
     None),
    (221, "2.0.0 Bye", None),
    (250, "2.1.5 Ok", None),
])
def test_bad_events_are_recognized_by_their_reply(code: int, line: str, event: str | None
                                                 ) -> None:
    assert classify(code, line) == event


def test_targets_and_durations() -> None:
    assert network("192.0.2.77", 24, 64) == "192.0.2.0/24"
    assert network("2001:db8:1:2:3::4", 24, 64) == "2001:db8:1:2::/64"
    assert network("192.0.2.77", 32, 64) is None  # addresses only
    assert network("unknown", 24, 64) is None
    assert target("192.0.2.7", 24, 64) == "192.0.2.7"
    assert target("192.0.2.99/24", 24, 64) == "192.0.2.0/24"
    assert target("[2001:db8::]/64", 24, 64) == "2001:db8::/64"
    assert target("192.0.2.7/32", 24, 64) == "192.0.2.7"
    with pytest.raises(ValueError, match="auto_block_ipv4_prefix_length"):
        target("10.0.0.0/16", 24, 64)
    with pytest.raises(ValueError, match="not an IP address"):
        target("mx.example.test", 24, 64)
    assert [duration(n, 600, 86400) for n in (1, 2, 3, 8, 9, 500)] == \
        [600, 1200, 2400, 76800, 86400, 86400]
    block = Block("192.0.2.0/24", 1234.5, 2, "auto", "4 bad events from the network, last x")
    assert Block.parse(block.target, block.value()) == block
    assert Block.parse("x", "garbage") is None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Counted(Metrics):
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def auto_block_event(self, event: str) -> None:
        self.calls.append(("event", event))

    def auto_block(self, target: str) -> None:
        self.calls.append(("block", target))

    def auto_block_refusal(self) -> None:
        self.calls.append(("refusal",))


class World:
    """An AutoBlocks over a MemoryStore, its log lines and metric calls, a fake clock."""

    def __init__(self, threshold: int = 4, exceptions: str = "127.0.0.0/8",
                 store: MemoryStore | None = None, trusted: str = "") -> None:
        self.clock = Clock()
        self.store = store or MemoryStore(self.clock)
        self.lines: list[str] = []
        self.metrics = Counted()
        settings = BlockSettings(threshold, 3600, 600, 86400, 24, 64, tuple(exceptions.split()))
        registry = default_registry()
        self.blocks = AutoBlocks(settings, self.store,
                                 HostAddrList.build(settings.exceptions, registry),
                                 self.lines.append, self.metrics,
                                 trusted=lambda client: client.addr == trusted,
                                 clock=self.clock)

    def unknown(self, addr: str, times: int = 1, user: str | None = None) -> None:
        st = CheckState(Client("unknown", addr, 25), sasl_username=user)
        for _ in range(times):
            self.blocks.replied(st, 550, "5.1.1 <x@example.test>: Recipient address rejected: "
                                "User unknown in virtual mailbox table")
        asyncio.run(self.blocks.flush())

    def refusal(self, addr: str) -> str | None:
        return asyncio.run(self.blocks.refusal(Client("unknown", addr, 25)))

    def later(self, seconds: float) -> None:
        self.clock.now += seconds


def test_a_moving_dictionary_attack_blocks_its_network() -> None:
    w = World()
    w.unknown("192.0.2.10", 2)
    w.unknown("192.0.2.11", 1)
    assert w.refusal("192.0.2.12") is None and not w.lines
    w.unknown("192.0.2.12", 1)  # the fourth from the /24, no address near the threshold
    assert w.lines == ["warning: auto-block: blocked 192.0.2.0/24 for 600s (offence 1): 4 bad "
                       "events from the network, last unknown_recipient from "
                       "unknown[192.0.2.12]"]
    assert w.refusal("192.0.2.200") == REFUSED.format("192.0.2.200")  # a new address too
    assert w.refusal("192.0.3.1") is None  # the next network is not
    assert w.refusal("127.0.0.1") is None  # nor mynetworks
    assert ("block", "network") in w.metrics.calls and ("refusal",) in w.metrics.calls
    assert w.metrics.calls.count(("event", "unknown_recipient")) == 4


def test_one_address_is_blocked_alone() -> None:
    w = World()
    w.unknown("192.0.2.10", 4)
    assert w.lines[0].startswith("warning: auto-block: blocked 192.0.2.10 for 600s "
                                 "(offence 1): 4 bad events from the address")
    assert w.refusal("192.0.2.10") is not None
    assert w.refusal("192.0.2.11") is None
    w.unknown("192.0.2.11")  # its network is judged by the others' events: one
    assert w.refusal("192.0.2.12") is None and len(w.lines) == 1


def test_blocks_expire_and_double_for_repeat_offenders() -> None:
    w = World()
    for offence, seconds in ((1, 600), (2, 1200), (3, 2400)):
        w.unknown("192.0.2.10", 4)
        assert f"for {seconds}s (offence {offence})" in w.lines[-1]
        w.later(seconds - 1)
        assert w.refusal("192.0.2.10") is not None
        w.later(1)
        assert w.refusal("192.0.2.10") is None  # the cache knows when it ends
    w.later(86400 + 1)  # no block for longer than auto_block_max_time: forgotten
    w.unknown("192.0.2.10", 4)
    assert "for 600s (offence 1)" in w.lines[-1]


def test_exceptions_authenticated_and_proxies_never_count() -> None:
    w = World(threshold=1, trusted="192.0.2.1")
    w.unknown("127.0.0.5", 3)  # auto_block_exceptions ($mynetworks)
    w.unknown("192.0.2.10", 3, user="alice")  # after AUTH
    w.unknown("192.0.2.1", 3)  # an XCLIENT proxy
    w.unknown("unknown", 3)  # XCLIENT ADDR=[UNAVAILABLE]
    assert w.lines == [] and w.metrics.calls == []


def test_an_exception_inside_a_blocked_network_still_connects() -> None:
    w = World(exceptions="192.0.2.99")
    w.unknown("192.0.2.10", 2)
    w.unknown("192.0.2.11", 2)
    assert w.refusal("192.0.2.12") is not None
    assert w.refusal("192.0.2.99") is None


def test_other_workers_blocks_are_seen_within_the_cache_time() -> None:
    w = World()
    assert w.refusal("192.0.2.10") is None  # remembered: not blocked
    other = World(store=w.store)
    other.clock = w.clock
    other.blocks.clock = w.clock
    other.unknown("192.0.2.10", 4)
    assert w.refusal("192.0.2.10") is None
    w.later(CACHE_SECONDS)
    assert w.refusal("192.0.2.10") is not None
    asyncio.run(w.store.delete("block:192.0.2.10"))  # mailgate block delete
    assert w.refusal("192.0.2.10") is not None
    w.later(CACHE_SECONDS)
    assert w.refusal("192.0.2.10") is None


class Failing(MemoryStore):
    """A store that fails while `down` is set."""

    down = True

    def _check(self) -> None:
        if self.down:
            raise StateUnavailable("database is locked")

    async def get(self, key: str) -> str | None:
        self._check()
        return await super().get(key)

    async def incr(self, key: str, amount: int, ttl: float) -> int:
        self._check()
        return await super().incr(key, amount, ttl)

    async def items(self, prefix: str) -> list[Item]:
        self._check()
        return await super().items(prefix)


def test_a_failing_store_lets_everyone_in_with_one_warning() -> None:
    store = Failing()
    w = World(store=store)
    store.clock = w.clock
    assert w.refusal("192.0.2.10") is None
    w.unknown("192.0.2.10", 5)
    assert w.refusal("192.0.2.11") is None
    assert w.lines == ["warning: auto-block: state unavailable: database is locked; no client "
                       "is counted or refused until it is back"]
    store.down = False
    w.unknown("192.0.2.10", 4)
    assert w.lines[1] == "auto-block: state available again"
    assert w.lines[2].startswith("warning: auto-block: blocked 192.0.2.10 ")


def test_the_report_counts_blocks_and_refusals() -> None:
    from mailgate.report.summary import Summary
    from mailgate.report.text import render

    host = "Nov 26 07:11:00 mx mailgate/smtpd[42]: "
    lines = [host + "warning: auto-block: blocked 192.0.2.0/24 for 600s (offence 1): 4 bad "
                    "events from the network, last unknown_recipient from unknown[192.0.2.12]",
             host + "warning: auto-block: blocked 192.0.2.0/24 for 1200s (offence 2): 4 bad "
                    "events from the network, last protocol_error from unknown[192.0.2.40]",
             host + "warning: auto-block: blocked 203.0.113.9 for 600s (offence 1): 4 bad "
                    "events from the address, last auth_failed from unknown[203.0.113.9]"]
    lines += [host + f"NOQUEUE: reject: CONNECT from unknown[192.0.2.{n}]: "
              + REFUSED.format(f"192.0.2.{n}") + "; proto=SMTP" for n in (50, 51, 52)]
    first, later = Summary(), Summary()
    first.consume(lines[:2] + lines[3:4])
    later.consume(lines[2:3] + lines[4:])
    first.merge(later)  # (as the parallel reader joins the parts of a log)
    first.done()
    text = render(first, [])
    assert "  3 blocks placed (1 addresses, 2 networks), 3 connections refused" in text
    assert "         2  192.0.2.0/24 (longest 1200s)" in text
    assert "         1  203.0.113.9 (longest 600s)" in text
    assert first.by_restriction["auto_block"] == 3 and first.warnings == 3
