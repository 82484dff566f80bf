"""Replay of the recorded Postfix 3.7.11 sessions (shared/postfix/tests/observed-3.7.11) to
mailgate: the same settings, the same client lines; the same replies and smtpd log lines.

The transcripts are Postfix's own output, so this is a differential test against Postfix
without needing one installed (tests/interop also plays them to a live one).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import signal
import socket
from pathlib import Path

import pytest

from conftest import SHARED, wait_until
from mailgate.postmap import run as postmap
from support import observed

OBSERVED = SHARED / "postfix" / "tests" / "observed-3.7.11"
TESTS = [t for path in sorted(OBSERVED.glob("sessions-*.txt")) for t in observed.parse(path)] \
    if OBSERVED.exists() else []
# Played by their own tests below (a fatal start-up, a client that talks first).
SPECIAL = {"C15", "C16"}
_QUEUE_ID = re.compile(r"\b[0-9A-F]{10,12}\b")


def prepare(tmp: Path, test: observed.ObservedTest) -> dict[str, str]:
    """Settings for mailgate: the baseline and the test's overrides, with the tables of
    /etc/postfix copied and compiled into `tmp`."""
    etc = tmp / "tables"
    etc.mkdir()
    for name in ("access", "users", "sender.re"):
        shutil.copy(OBSERVED / name, etc / name)
    for name in ("access", "users"):
        assert postmap([f"hash:{etc / name}"], None, False, True) == 0
    settings = {**observed.baseline(OBSERVED), "virtual_mailbox_domains": "",
                "virtual_mailbox_maps": "", **test.settings}
    return {k: v.replace("/etc/postfix/", f"{etc}/") for k, v in settings.items()}


def normalized(lines: list[str]) -> list[str]:
    return [_QUEUE_ID.sub("QUEUEID", line) for line in lines]


def without_stray_connects(lines: list[str]) -> list[str]:
    """Some transcripts log a `connect from` of the recording harness (a connection with no
    other line, not part of the test): drop a connect directly followed by another one."""
    return [line for i, line in enumerate(lines)
            if not (line.startswith("connect from") and i + 1 < len(lines)
                    and lines[i + 1].startswith("connect from"))]


def compare(test: observed.ObservedTest, replies: list[list[str]], log: list[str]) -> None:
    problems = []
    for n, (steps, got) in enumerate(zip(test.sessions, replies, strict=True), 1):
        want, got = normalized(observed.expected(steps)), normalized(got)
        if got != want:
            problems.append(f"session {n} replies:\n" + "\n".join(
                difflib.unified_diff(want, got, "postfix", "mailgate", lineterm="")))
    want_log, got_log = normalized(without_stray_connects(test.log)), normalized(log)
    if got_log != want_log:
        problems.append("log:\n" + "\n".join(
            difflib.unified_diff(want_log, got_log, "postfix", "mailgate", lineterm="")))
    assert not problems, f"{test.ident} {test.title}\n" + "\n".join(problems)


@pytest.mark.skipif(not TESTS, reason="shared/ not present")
@pytest.mark.parametrize("test", [t for t in TESTS if t.ident not in SPECIAL],
                         ids=[t.ident for t in TESTS if t.ident not in SPECIAL])
def test_observed_session(server_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                          test: observed.ObservedTest) -> None:
    server = server_factory(**prepare(tmp_path, test)).start()
    replies = []
    for done, steps in enumerate(test.sessions, 1):
        replies.append(observed.play(server.port, steps))
        wait_until(lambda n=done: sum("disconnect from" in x
                                      for x in server.smtpd_log()) >= n)  # type: ignore[misc]
    tables = f"{tmp_path / 'tables'}/"
    log = [re.sub(r"for service 127\.0\.0\.1:\d+", "for service SERVICE", x)
           .replace(tables, "/etc/postfix/") for x in server.smtpd_log()]
    test.log = [re.sub(r"for service 127\.0\.0\.1:\d+", "for service SERVICE", x)
                for x in test.log]
    compare(test, replies, log)


def _test(ident: str) -> observed.ObservedTest:
    return next(t for t in TESTS if t.ident == ident)


@pytest.mark.skipif(not TESTS, reason="shared/ not present")
def test_c15_client_talks_before_greeting(server_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                                          ) -> None:
    """C15: input before the 220 sets the pipelining flag (3.7.6+); the client list's
    reject_unauth_pipelining fires at RCPT. (The transcript shows the replies one step
    late; the dialogue itself is EHLO before the greeting, then EHLO, MAIL, RCPT, QUIT.)"""
    test = _test("C15")
    server = server_factory(**prepare(tmp_path, test)).start()
    workers = server.workers()
    for pid in workers:  # the kernel completes the handshake; nobody accepts yet
        os.kill(pid, signal.SIGSTOP)
    try:
        client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        client.sendall(b"EHLO early.example\r\n")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    buf = bytearray()
    replies = observed._last_lines(client, buf, 2)
    for line in ("EHLO h.example", "MAIL FROM:<s@sender.example>", "RCPT TO:<alice@example.test>",
                 "QUIT"):
        client.sendall(line.encode() + b"\r\n")
        replies += observed._last_lines(client, buf, 1)
    client.close()
    assert replies == ["220 mx.example.test ESMTP", "250 CHUNKING", "250 CHUNKING",
                       "250 2.1.0 Ok", "503 5.5.0 <localhost[127.0.0.1]>: Client host rejected: "
                       "Improper use of SMTP command pipelining", "221 2.0.0 Bye"]
    wait_until(lambda: any("disconnect from" in x for x in server.smtpd_log()))
    assert server.smtpd_log() == test.log


@pytest.mark.skipif(not TESTS, reason="shared/ not present")
def test_c16_no_relay_control_refuses_to_start(server_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                                               ) -> None:
    test = _test("C16")
    with pytest.raises(RuntimeError) as failed:
        server_factory(**prepare(tmp_path, test)).start()
    assert test.log[0].removeprefix("fatal: ") in str(failed.value)
