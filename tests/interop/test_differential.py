"""Random restriction configurations and dialogues, played to a live Postfix 3.7 and to
mailgate: replies and smtpd log lines must be identical (the way the hidden acceptance tests
judge us). Seeds are fixed for CI; MAILGATE_DIFF_SEEDS="N M ..." runs others.

Where a seed turns the tarpit on (smtpd_error_sleep_time = 1s), each reply is also timed and
marked with the number of sleeps it waited; a delay too far from a whole number of sleeps
(a loaded machine) is marked undecided and matches either way (`reconcile`)."""

from __future__ import annotations

import difflib
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import reference_postfix, wait_until
from support import differential, reference
from support.dialogue import _Reader

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
SEEDS = [int(x) for x in os.environ.get("MAILGATE_DIFF_SEEDS", " ".join(map(str, range(1, 11)))).split()]
SESSIONS = int(os.environ.get("MAILGATE_DIFF_SESSIONS", "3"))
_QUEUE_ID = re.compile(r"\b[0-9A-F]{10,12}\b")
_PORT = re.compile(r"\]:\d+")  # smtpd_client_port_logging: client ports differ
_AFTER_PERMIT = re.compile(r"warning: restriction `[^']*' after `permit' is ignored$")


def smtpd_lines(log: Path, skip: int = 0) -> list[str]:
    # Each Postfix smtpd process logs its start-up check's "after `permit' is ignored"
    # when it starts - at moments that depend on process management, not on the dialogue.
    return [_PORT.sub("]:PORT", x) for x in reference.smtpd_lines(log, skip)
            if not _AFTER_PERMIT.match(x)]


def _label(item: differential.Item) -> str:
    if isinstance(item, bytes):
        return item.decode("utf-8", "backslashreplace").replace("\r\n", "\\r\\n")
    return " | ".join(item.split("\t"))


def delay_mark(seconds: float, sleep: float) -> str:
    """The tarpit seen in a reply's delay: ` [+N]` for N sleeps, nothing when immediate,
    ` [+?]` when the delay is too far between whole sleeps to tell (a loaded machine)."""
    if not sleep:
        return ""
    sleeps = seconds / sleep
    count = round(sleeps)
    if abs(sleeps - count) > 0.3:
        return " [+?]"
    return f" [+{count}]" if count else ""


def reconcile(want: list[str], got: list[str]) -> list[str]:
    """`got` with each undecided delay mark taken from `want` (and the other way round)."""
    if len(want) != len(got):
        return got
    out = []
    for a, b in zip(want, got, strict=True):
        if a != b and (a.endswith(" [+?]") or b.endswith(" [+?]")) and \
                a.rsplit(" [+", 1)[0] == b.rsplit(" [+", 1)[0]:
            b = a
        out.append(b)
    return out


class _Player:
    """One session's socket: sends items and reads their (timed) replies into `out`."""

    def __init__(self, port: int, sleep: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = _Reader(self.sock)
        self.sleep = sleep
        self.out = ["S: " + _PORT.sub("]:PORT", x) for x in self.reader.reply()]

    def send(self, item: differential.Item, replies: int) -> str:
        """Send `item`, read `replies` replies; the last reply line ("<CLOSED>" at the end)."""
        lines = [item] if isinstance(item, bytes) else [x.encode() + b"\r\n"
                                                         for x in item.split("\t")]
        data = b"".join(lines)
        self.out.append("C: " + _label(item))
        started = time.monotonic()
        try:
            self.sock.sendall(data)
        except OSError:
            self.out.append("S: <CLOSED>")
            return "<CLOSED>"
        reply: list[str] = []
        for _ in range(replies):
            lines = self.reader.reply()
            now = time.monotonic()
            if lines[-1] != "<CLOSED>":
                lines[-1] += delay_mark(now - started, self.sleep)
            started = now
            reply += lines
            if lines[-1] == "<CLOSED>":
                break
        self.out += ["S: " + _PORT.sub("]:PORT", _QUEUE_ID.sub("QUEUEID", x)) for x in reply]
        return reply[-1] if reply else ""


def play(port: int, items: list[differential.Item], sleep: float = 0.0) -> list[str]:
    """Send each item and read its replies (timed, when `sleep` is the tarpit's); the message
    text after DATA only after a 354 (so that both servers see the same input whatever they
    answer), and an empty message after a 354 that the script did not expect."""
    player = _Player(port, sleep)
    pending: list[str] = []  # message lines that the script has next
    accepted = False  # ... and the server said 354 to them
    try:
        for index, item in enumerate(items):
            if pending and item == pending[0]:
                pending.pop(0)
                if accepted and player.send(item, 1 if item == "." else 0) == "<CLOSED>":
                    break
                continue
            pending = []
            count = 1 if isinstance(item, bytes) else len(item.split("\t"))
            last = player.send(item, count)
            if last == "<CLOSED>":
                break
            if item == "DATA" and items[index + 1:index + 2] == differential.MESSAGE[:1]:
                pending, accepted = list(differential.MESSAGE), last.startswith("354")
            elif last.startswith("354") and player.send(".", 1) == "<CLOSED>":
                break
    finally:
        player.sock.close()
    return player.out


_GOODBYE = "S: 221 2.7.0 Error: I can break rules, too. Goodbye."


def settle(transcript: list[str]) -> list[str]:
    """A session ends at the server's goodbye (221 after a non-SMTP command, 421 such as
    `too many errors`) or close. The client may already have sent more (pipelined, text
    after a refused BDAT, or its next command while the 421 was on its way): the server
    closes with that input unread, the kernel answers it with a reset, and whether the
    goodbye reply reaches the client first is a race (seeds 3164, 3167: microseconds between
    the 421 and the close decide it). Both the goodbye and the close therefore end the
    transcript as `<CLOSED>`; what the server did is still compared line by line in its
    log (`too many errors after CMD`)."""
    for i, line in enumerate(transcript):
        if line in (_GOODBYE, "S: <CLOSED>") or line.startswith("S: 421 "):
            return [*transcript[:i], "S: <CLOSED>"]
    return transcript


def run(port: int, sessions: list[list[differential.Item]], log: Path, skip: int = 0,
        sleep: float = 0.0) -> tuple[list[str], list[str]]:
    replies: list[str] = []
    for done, lines in enumerate(sessions, 1):
        replies += settle(play(port, lines, sleep))
        replies.append("---")
        wait_until(lambda n=done: sum("disconnect from" in x
                                      for x in smtpd_lines(log, skip)) >= n)
    return replies, smtpd_lines(log, skip)


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[reference.Instance]:
    """One reference instance, reconfigured for each seed (postconf -e and a reload)."""
    yield from reference_postfix(tmp_path_factory, "differential")


@pytest.mark.interop
@pytest.mark.parametrize("seed", SEEDS)
def test_random_configuration(server_factory, postfix: reference.Instance,  # type: ignore[no-untyped-def]
                              seed: int) -> None:
    settings, sessions = differential.script(seed, SESSIONS)
    sleep = float(settings["smtpd_error_sleep_time"].rstrip("s"))
    base = reference.read_settings(DATA / "main.cf")
    skip = postfix.configure({**base, **settings})
    try:
        want = run(postfix.port, sessions, postfix.log, skip, sleep)
    except AssertionError:
        crash = [x for x in postfix.log.read_text(errors="replace").splitlines()[skip:]
                 if "killed by signal" in x]
        if crash:  # Postfix 3.7.11's smtpd crashed (seed 54 finds one): nothing to compare
            pytest.skip(f"the reference smtpd crashed: {crash[0]}")
        raise
    server = server_factory(**{**base, **settings}).start()
    got = run(server.port, sessions, server.log_path, sleep=sleep)
    got = (reconcile(want[0], got[0]), got[1])
    problems = []
    for name, a, b in (("replies", want[0], got[0]), ("log", want[1], got[1])):
        if a != b:
            problems.append(f"{name}:\n" + "\n".join(
                difflib.unified_diff(a, b, "postfix", "mailgate", lineterm="")))
    config = "\n".join(f"{k} = {v}" for k, v in settings.items())
    assert not problems, f"seed {seed}\n{config}\n" + "\n".join(problems)
