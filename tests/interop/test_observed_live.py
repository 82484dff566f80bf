"""The recorded Postfix 3.7.11 sessions (shared/postfix/tests/observed-3.7.11), played to a
live reference Postfix and to mailgate with the same settings: identical replies and smtpd
log lines. (tests/e2e/test_observed.py compares mailgate with the recordings themselves.)"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SHARED, reference_postfix, wait_until
from support import observed, reference

OBSERVED = SHARED / "postfix" / "tests" / "observed-3.7.11"
TESTS = [t for path in sorted(OBSERVED.glob("sessions-*.txt")) for t in observed.parse(path)] \
    if OBSERVED.exists() else []
# C15 needs a client that talks before the greeting, C16 a server that does not start,
# D5 a rate limit across sessions: tests/e2e/test_observed.py plays those.
LIVE = [t for t in TESTS if t.ident not in ("C15", "C16", "D5")]
_QUEUE_ID = re.compile(r"\b[0-9A-F]{10,12}\b")


def smtpd_lines(log: Path, tables: Path, skip: int = 0) -> list[str]:
    return [x.replace(f"{tables}/", "TABLES/") for x in reference.smtpd_lines(log, skip)]


def settings(test: observed.ObservedTest, tables: Path) -> dict[str, str]:
    merged = {**observed.baseline(OBSERVED), "virtual_mailbox_domains": "",
              "virtual_mailbox_maps": "", **test.settings}
    return {k: v.replace("/etc/postfix/", f"{tables}/") for k, v in merged.items()}


# Equivalent to what the reference instance's main.cf says (for these tests).
_SAME_IN_REFERENCE: dict[str, str | None] = {"myhostname": "mx.example.test",
                                             "smtpd_authorized_xclient_hosts": "127.0.0.1",
                                             "alias_maps": None, "virtual_mailbox_maps": None}


def for_reference(values: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in values.items()
            if k not in _SAME_IN_REFERENCE or _SAME_IN_REFERENCE[k] not in (None, v)}


def play_all(port: int, test: observed.ObservedTest, log: Path, tables: Path, skip: int = 0
             ) -> tuple[list[list[str]], list[str]]:
    replies = []
    for done, steps in enumerate(test.sessions, 1):
        replies.append([_QUEUE_ID.sub("QUEUEID", x) for x in observed.play(port, steps)])
        wait_until(lambda n=done: sum("disconnect from" in x for x in smtpd_lines(
            log, tables, skip)) >= n)
    return replies, smtpd_lines(log, tables, skip)


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[reference.Instance]:
    yield from reference_postfix(tmp_path_factory, "observed")


@pytest.mark.interop
@pytest.mark.skipif(not LIVE, reason="shared/ not present")
@pytest.mark.parametrize("test", LIVE, ids=[t.ident for t in LIVE])
def test_observed_session_live(server_factory, postfix: reference.Instance,  # type: ignore[no-untyped-def]
                               tmp_path: Path, test: observed.ObservedTest) -> None:
    for side in ("ref", "mg"):
        tables = tmp_path / f"tables-{side}"
        tables.mkdir()
        for name in ("access", "users", "sender.re"):
            shutil.copy(OBSERVED / name, tables / name)
    ref_tables = tmp_path / "tables-ref"
    skip = postfix.configure(for_reference(settings(test, ref_tables)))
    want = play_all(postfix.port, test, postfix.log, ref_tables, skip)
    mg_tables = tmp_path / "tables-mg"
    for name in ("access", "users"):
        subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", f"hash:{mg_tables / name}"],
                       check=True)
    server = server_factory(**settings(test, mg_tables)).start()
    got = play_all(server.port, test, server.log_path, mg_tables)
    problems = []
    flat = [[line for session in side[0] for line in session] for side in (want, got)]
    for what, a, b in (("replies", flat[0], flat[1]),
                       ("log", want[1], got[1])):
        if a != b:
            problems.append(f"{what}:\n" + "\n".join(
                difflib.unified_diff(a, b, "postfix", "mailgate", lineterm="")))
    assert not problems, f"{test.ident} {test.title}\n" + "\n".join(problems)
