"""Differential: the client limits anvil enforces, played to mailgate and to a live Postfix 3.7
(message, recipient, connection rate and count limits): the same replies, the same smtpd log
lines, and the same `anvil: statistics` peaks.

The reference's anvil outlives reloads, so each case comes from its own loopback address
(a fresh anvil entry); the statistics case gets a reference of its own, whose anvil starts
with `anvil_status_update_time = 1s`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Client, reference_postfix, wait_until
from support import reference
from support.livesession import Step, compare, log_lines, play
from support.reference import Instance

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
EHLO: Step = ("C", b"EHLO client.example")
QUIT: Step = ("C", b"QUIT")
MAIL: Step = ("C", b"MAIL FROM:<s@client.example>")
RSET: Step = ("C", b"RSET")
RCPTS: list[Step] = [("C", b"RCPT TO:<alice@example.test>"),
                     ("C", b"RCPT TO:<nobody@example.test>"),  # refused: counted all the same
                     ("C", b"RCPT TO:<x@elsewhere.example>"),
                     ("C", b"RCPT TO:<bob@example.test>"),
                     ("C", b"RCPT TO:bad"),  # counted before the address is read
                     ("C", b"RCPT"),  # bad syntax: not counted
                     ("C", b"RCPT TO:<alice@example.test>")]
# (settings, client address, sessions played one after the other)
CASES: dict[str, tuple[dict[str, str], str, list[list[Step]]]] = {
    "message-rate": ({"smtpd_client_message_rate_limit": "2"}, "127.0.0.61",
                     [[EHLO, MAIL, RSET, MAIL, RSET, MAIL, ("C", b"MAIL FROM:bad"),
                       ("C", b"MAIL"), ("C", b"RCPT TO:<alice@example.test>"), QUIT],
                      [EHLO, MAIL, QUIT]]),
    "recipient-rate": ({"smtpd_client_recipient_rate_limit": "3"}, "127.0.0.62",
                       [[EHLO, MAIL, *RCPTS, QUIT],
                        [EHLO, MAIL, RCPTS[0], RSET, QUIT]]),
    "both-rates": ({"smtpd_client_message_rate_limit": "1",
                    "smtpd_client_recipient_rate_limit": "1",
                    "smtpd_client_connection_count_limit": "0"}, "127.0.0.63",
                   [[EHLO, MAIL, RCPTS[0], RCPTS[3], RSET, MAIL, QUIT]]),
    "exempt": ({"smtpd_client_message_rate_limit": "1",
                "smtpd_client_recipient_rate_limit": "1",
                "smtpd_client_event_limit_exceptions": "127.0.0.64"}, "127.0.0.64",
               [[EHLO, MAIL, RCPTS[0], RCPTS[3], RSET, MAIL, QUIT]]),
    "connection-rate": ({"smtpd_client_connection_rate_limit": "2"}, "127.0.0.65",
                        [[EHLO, QUIT], [QUIT], [], []]),
}


def settings(extra: dict[str, str]) -> dict[str, str]:
    # mynetworks without loopback: the clients are not exempt from the limits by default
    return {**reference.read_settings(DATA / "main.cf"), "mynetworks": "192.0.2.0/24",
            "smtpd_error_sleep_time": "0", **extra}


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from reference_postfix(tmp_path_factory, "anvil")


def greeting(port: int, source: str) -> list[str]:
    """A connection that only reads the greeting (or the refusal instead of it)."""
    client = Client(port, source=source)
    try:
        return [client.reply(), "closed" if client.closed() else "open"]
    finally:
        client.close()


def played(port: int, log: Path, skip: int, source: str, sessions: list[list[Step]]
           ) -> tuple[list[str], list[str]]:
    """The replies of `sessions` (each over when its `disconnect` line is logged; no
    steps: the greeting only) and the smtpd log lines."""
    replies: list[str] = []
    for n, steps in enumerate(sessions, 1):
        replies += play(port, steps, source=source) if steps else greeting(port, source)
        wait_until(lambda n=n: sum("disconnect from" in x  # type: ignore[misc]
                                   for x in log_lines(log, skip)) == n)
    return replies, log_lines(log, skip)


@pytest.mark.interop
@pytest.mark.parametrize("name", list(CASES))
def test_client_rate_limits_match_postfix(server_factory, postfix: Instance,  # type: ignore[no-untyped-def]
                                          name: str) -> None:
    extra, source, sessions = CASES[name]
    config = settings(extra)
    skip = postfix.configure(config)
    theirs, their_log = played(postfix.port, postfix.log, skip, source, sessions)
    server = server_factory(**config).start()
    ours, our_log = played(server.port, server.log_path, 0, source, sessions)
    compare(name, (("replies", theirs, ours), ("smtpd log", their_log, our_log)))
    assert any(r.startswith(("450 4.7.1", "421 4.7.0")) for r in theirs) != (name == "exempt")


@pytest.mark.interop
def test_connection_count_limit_matches_postfix(server_factory, postfix: Instance) -> None:  # type: ignore[no-untyped-def]
    """Two connections at once with smtpd_client_connection_count_limit = 1: the second is
    refused before its greeting, the first goes on; the refused one counted in the rate
    (smtpd's anvil_clnt_connect() counts both), so a third, alone, is over a rate of 2."""
    source = "127.0.0.67"

    def three(port: int, log: Path, skip: int = 0) -> tuple[list[str], list[str]]:
        first = Client(port, source=source)
        replies = [first.reply()]  # (the greeting may leave before the name lookup ends)
        wait_until(lambda: any("connect from" in x for x in log_lines(log, skip)))
        replies += greeting(port, source)
        replies += [first.cmd("EHLO client.example").split("\n")[0], first.cmd("QUIT")]
        first.close()
        wait_until(lambda: sum("disconnect from" in x for x in log_lines(log, skip)) == 2)
        replies += greeting(port, source)
        wait_until(lambda: sum("disconnect from" in x for x in log_lines(log, skip)) == 3)
        return replies, log_lines(log, skip)

    config = settings({"smtpd_client_connection_count_limit": "1",
                       "smtpd_client_connection_rate_limit": "2"})
    skip = postfix.configure(config)
    theirs, their_log = three(postfix.port, postfix.log, skip)
    server = server_factory(**config).start()
    ours, our_log = three(server.port, server.log_path)
    compare("connection-count", (("replies", theirs, ours), ("smtpd log", their_log, our_log)))
    assert theirs[1].startswith("421 4.7.0 mx.example.test Error: too many connections from")
    assert "warning: Connection rate limit exceeded: 3 from unknown[127.0.0.67] for service " \
        "LISTENER" in [line.replace(f"127.0.0.1:{postfix.port}", "LISTENER")
                       for line in their_log]


@pytest.fixture(scope="module")
def fresh_postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from reference_postfix(tmp_path_factory, "anvil-statistics")


_STATISTICS = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ [^/]+/anvil\[\d+\]: "
                         r"statistics: max (.+?) (\S+)(?: for \((?:[^:]+:\d+|\S+?):(.+)\))? "
                         r"at \w{3} [ \d]\d \d\d:\d\d:\d\d$")


def peaks(log: Path, skip: int = 0) -> dict[tuple[str, str], str]:
    """anvil's statistics lines, merged: the highest value of each (what, client) over
    every report (activity may span two reports); the cache size under client ``."""
    out: dict[tuple[str, str], str] = {}
    for line in log.read_text(errors="replace").splitlines()[skip:] if log.exists() else []:
        m = _STATISTICS.match(line)
        if m:
            what, value, client = m.group(1), m.group(2), m.group(3) or ""
            number = int(value.split("/")[0])
            if number > int(out.get((what, client), "0").split("/")[0]):
                out[(what, client)] = value
    return out


@pytest.mark.interop
def test_anvil_statistics_match_postfix(server_factory, fresh_postfix: Instance) -> None:  # type: ignore[no-untyped-def]
    """One client's connections, messages and recipients over the limits, then a second
    client: anvil's statistics name the same peaks (the second client's new entry makes the
    cache size 2, logged only once everything before it was)."""
    source, marker = "127.0.0.68", "127.0.0.69"
    config = settings({"smtpd_client_message_rate_limit": "2",
                       "smtpd_client_recipient_rate_limit": "3",
                       "anvil_status_update_time": "1s"})
    sessions = [[EHLO, MAIL, *RCPTS[:5], RSET, MAIL, RSET, MAIL, QUIT], [EHLO, MAIL, QUIT]]

    def run(port: int, log: Path, skip: int = 0) -> dict[tuple[str, str], str]:
        played(port, log, skip, source, sessions)
        play(port, [QUIT], source=marker)
        wait_until(lambda: peaks(log, skip).get(("cache size", "")) == "2")
        return {k: v for k, v in peaks(log, skip).items() if k[1] != marker}

    skip = fresh_postfix.configure(config)
    theirs = run(fresh_postfix.port, fresh_postfix.log, skip)
    server = server_factory(**config).start()
    ours = run(server.port, server.log_path)
    assert ours == theirs
    assert theirs == {("connection rate", source): "2/60s", ("connection count", source): "1",
                      ("message rate", source): "4/60s", ("recipient rate", source): "5/60s",
                      ("cache size", ""): "2"}
