"""One client's postscreen tests: what is to do, passed, failed; the cache value format.

The cache value is Postfix's (postscreen_tests.c psc_print_tests / psc_parse_tests): five
expiry times in seconds since the epoch, `;`-separated, in the order pregreet, dnsbl,
pipelining, non-SMTP command, bare newline. 0 means the test was never passed, 1 that it
was never passed and was disabled when the value was written.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NEW = 0  # PSC_TIME_STAMP_NEW: never passed
DISABLED = 1  # PSC_TIME_STAMP_DISABLED: never passed, and off when the value was written


class Test(enum.IntEnum):
    """The tests, in the cache value's order (PSC_TINDX_*)."""

    PREGREET = 0
    DNSBL = 1
    PIPELINING = 2
    NON_SMTP = 3
    BARE_NEWLINE = 4


EARLY = frozenset({Test.PREGREET, Test.DNSBL})  # before the 220 greeting
DEEP = frozenset({Test.PIPELINING, Test.NON_SMTP, Test.BARE_NEWLINE})  # after it


@dataclass
class Record:
    """A client's tests in one connection (the test part of PSC_STATE): expiry times, and
    which tests are to do, passed (maybe only for now: deep tests can still fail), failed,
    done (an early test's result is final) or skipped (a deep test's failure is logged)."""

    expire: list[int]
    todo: set[Test]
    new: bool  # some test was never passed: the blessing is `PASS NEW`
    passed: set[Test] = field(default_factory=set)
    failed: set[Test] = field(default_factory=set)
    done: set[Test] = field(default_factory=set)
    denylisted: bool = False  # PSC_STATE_FLAG_BLIST_FAIL
    vetoed: bool = False  # PSC_STATE_FLAG_WLIST_FAIL (postscreen_allowlist_interfaces)

    @property
    def any_failed(self) -> bool:
        return bool(self.failed) or self.denylisted or self.vetoed

    def passes(self, test: Test, expire: int) -> None:
        """PSC_PASS_SESSION_STATE with the test's new expiry time."""
        self.passed.add(test)
        self.expire[test] = expire

    def all_passed(self) -> bool:
        """Every test to do has passed (and at least one was to do)."""
        return bool(self.passed) and self.passed == self.todo


def new_tests(enabled: frozenset[Test]) -> Record:
    """psc_new_tests(): a client never seen: every enabled test to do."""
    return Record([NEW] * len(Test), set(enabled), new=True)


def parse_tests(value: str, now: int, enabled: frozenset[Test]) -> Record:
    """psc_parse_tests(): a cache value read at time `now`. Fields that are missing (an
    older postscreen) count as disabled; an enabled test whose time has passed is to do."""
    stamps: list[int] = []
    for part in value.split(";")[:len(Test)]:
        digits = part.strip()
        end = len(digits) - len(digits.lstrip("0123456789"))
        if end == 0:  # sscanf stops at the first field that is not a number
            break
        stamps.append(int(digits[:end]))
        if end < len(digits):
            break
    stamps += [DISABLED] * (len(Test) - len(stamps))
    todo = {t for t in Test if t in enabled and now > stamps[t]}
    return Record(stamps, todo, new=NEW in stamps)


def print_tests(record: Record, enabled: frozenset[Test]) -> str:
    """psc_print_tests(): the cache value; a disabled test never passed is written as 1, so
    that turning it on later does not make old clients `NEW`."""
    for test in Test:
        if test not in enabled and record.expire[test] == NEW:
            record.expire[test] = DISABLED
    return ";".join(str(stamp) for stamp in record.expire)


def cache_lifetime(record: Record, enabled: frozenset[Test], now: int, retention: int,
                   cleanup: int) -> int:
    """How long the cache keeps a value (Postfix's cleanup run drops a value once an enabled
    test has been expired for postscreen_cache_retention_time; one never passed goes at the
    next run, postscreen_cache_cleanup_interval later)."""
    stamps = [record.expire[t] for t in Test if t in enabled]
    if not stamps:
        return retention
    if min(stamps) <= DISABLED:
        return max(cleanup, 1)
    return max(min(stamps) - now + retention, 1)
