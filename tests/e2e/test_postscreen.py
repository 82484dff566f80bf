"""postscreen in mailgate, end to end (docs/postscreen.md): a `postscreen` line in master.cf,
the accept process leaving the greeting to postscreen, a client that passes the deep tests
going on in the same connection (beyond Postfix), the cache shared by the workers in the
client state store, and a failing client logged as Postfix's postscreen logs it."""

from __future__ import annotations

import asyncio
import re

import pytest

from conftest import Server, free_port, wait_until
from mailgate.state import LocalStore
from support.postscreen import mailgate_master_cf, play

DEEP = {"postscreen_pipelining_enable": "yes", "postscreen_non_smtp_command_enable": "yes",
        "postscreen_bare_newline_enable": "yes"}


def screened(server_factory, **params: str) -> Server:  # type: ignore[no-untyped-def]
    port = free_port()
    server: Server = server_factory(**{"mynetworks": "127.0.0.1/32", "smtpd_banner":
                                       "$myhostname ESMTP", "postscreen_greet_wait": "1s",
                                       **params})
    (server.root / "etc").mkdir(parents=True, exist_ok=True)
    (server.root / "etc" / "master.cf").write_text(mailgate_master_cf(port))
    server.start()
    assert server.port == port
    return server


@pytest.mark.parametrize("accept_process", ["yes", "no"])
def test_postscreen_sends_the_first_greeting_line(server_factory,  # type: ignore[no-untyped-def]
                                                   accept_process: str) -> None:
    """No early `220 ` from the accept process (or a worker accepting itself): postscreen's
    teaser `220-` comes first, then smtpd's `220 ` once the client passed."""
    server = screened(server_factory, smtpd_accept_process=accept_process)
    replies = play(server.port, "127.0.0.70", [("C", b"QUIT")])
    assert replies == ["S: 220-mx.example.test ESMTP", "S: 220 mx.example.test ESMTP",
                       "C: QUIT", "S: 221 2.0.0 Bye"]
    server.wait_log(r"smtpd: disconnect from")
    lines = [re.sub(r"\]:\d+", "]:P", x) for x in server.log() if x.startswith("postscreen:")]
    assert lines == ["postscreen: CONNECT from [127.0.0.70]:P to [127.0.0.1]:P",
                     "postscreen: PASS NEW [127.0.0.70]:P"]


def test_passing_the_deep_tests_goes_on_and_is_cached(server_factory) -> None:  # type: ignore[no-untyped-def]
    """Beyond Postfix: no `450 4.3.2` and no reconnect; the mail is delivered in the first
    connection; the next connection (to either worker) is `PASS OLD`, from the state store,
    whose value has Postfix's cache format."""
    server = screened(server_factory, **DEEP)
    replies = play(server.port, "127.0.0.71", [
        ("C", b"EHLO client.test"), ("C", b"MAIL FROM:<a@client.test>"),
        ("C", b"RCPT TO:<alice@example.test>"), ("C", b"DATA"),
        ("C", b"Subject: first\r\n\r\nhello\r\n."), ("C", b"QUIT")])
    assert "S: 250-PIPELINING" not in replies  # postscreen's engine does not announce it
    assert replies[replies.index("C: RCPT TO:<alice@example.test>") + 1] == "S: 250 2.1.5 Ok"
    wait_until(lambda: len(server.maildir_files("alice")) == 1)
    server.wait_log(r"smtpd: disconnect from")
    log = server.log()
    passed = next(i for i, x in enumerate(log) if x.startswith("postscreen: PASS NEW"))
    assert log[passed + 1] == "smtpd: connect from unknown[127.0.0.71]"  # held until then
    value = asyncio.run(LocalStore(str(server.root / "data" / "data" / "state.db")).get(
        "postscreen:127.0.0.71"))
    assert value is not None and re.fullmatch(r"\d{10};1;\d{10};\d{10};\d{10}", value), value
    for _ in range(3):  # two workers: either one finds it
        replies = play(server.port, "127.0.0.71", [("C", b"QUIT")])
        assert replies[0] == "S: 220 mx.example.test ESMTP"  # no teaser: no test to do
    assert len(server.wait_log(r"postscreen: PASS OLD \[127\.0\.0\.71\]", count=3)) == 3


def test_a_client_that_fails_is_logged_as_postfix_logs_it(server_factory) -> None:  # type: ignore[no-untyped-def]
    """smtpd's lines of a connection that postscreen ends are not logged: Postfix's smtpd
    never saw it (and pflogsumm and the exporter count no connection)."""
    server = screened(server_factory, **DEEP)
    replies = play(server.port, "127.0.0.72", [
        ("C", b"EHLO client.test"), ("S", b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@x>\r\n"),
        ("R", b""), ("R", b""), ("C", b"QUIT")])
    assert replies[-5:] == ["C: MAIL FROM:<a@client.test>\r\nRCPT TO:<b@x>\r\n",
                            "S: 250 2.1.0 Ok", "S: 550 5.5.1 Protocol error", "C: QUIT",
                            "S: 221 2.0.0 Bye"]
    server.wait_log(r"postscreen: DISCONNECT \[127\.0\.0\.72\]")
    log = server.log()
    assert not [x for x in log if x.startswith("smtpd:")]
    assert [re.sub(r":\d+", ":P", x) for x in log if x.startswith("postscreen:")][1:] == [
        r"postscreen: COMMAND PIPELINING from [127.0.0.72]:P after MAIL: RCPT TO:<b@x>\r\n",
        "postscreen: NOQUEUE: reject: RCPT from [127.0.0.72]:P: 550 5.5.1 Protocol error; "
        "from=<a@client.test>, to=<b@x>, proto=ESMTP, helo=<client.test>",
        "postscreen: DISCONNECT [127.0.0.72]:P"]


def test_what_smtpd_rejects_under_the_deep_tests_is_logged(server_factory) -> None:  # type: ignore[no-untyped-def]
    """Only smtpd's routine lines wait for the client to pass: a reject by smtpd's own
    restrictions is logged at once, with the connect line before it."""
    server = screened(server_factory, **DEEP, smtpd_delay_reject="no",
                      smtpd_helo_restrictions="reject_invalid_helo_hostname")
    replies = play(server.port, "127.0.0.73", [("C", b"HELO a_b@c"), ("C", b"QUIT")])
    assert replies[3] == "S: 501 5.5.2 <a_b@c>: Helo command rejected: Invalid name"
    server.wait_log(r"postscreen: DISCONNECT \[127\.0\.0\.73\]")
    smtpd = [x for x in server.log() if x.startswith("smtpd:")]
    assert smtpd == ["smtpd: connect from unknown[127.0.0.73]",
                     "smtpd: NOQUEUE: reject: HELO from unknown[127.0.0.73]: 501 5.5.2 <a_b@c>: "
                     "Helo command rejected: Invalid name; proto=SMTP helo=<a_b@c>",
                     "smtpd: disconnect from unknown[127.0.0.73] helo=0/1 quit=1 commands=1/2"]
