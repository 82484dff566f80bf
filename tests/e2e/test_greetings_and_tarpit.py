"""Issue 16 classes 4 and 7 over a real socket: HELO after EHLO keeps ESMTP (and the pipelining
verdict that depends on it), and the tarpit around the end of DATA. Every expectation here was
first observed on a live Postfix 3.7.11 (docs/decisions/0029-greetings-bdat-and-tarpit.md)."""

from __future__ import annotations

import time

from conftest import Client

# Postfix time parameters take whole seconds: 1s is the smallest tarpit that shows.
_TARPIT = {"smtpd_error_sleep_time": "1s", "smtpd_soft_error_limit": "2",
           "smtpd_hard_error_limit": "20"}
_DELAYED = 0.9  # seconds: a 1 s sleep is never shorter
# "Not delayed" is judged against a longer tarpit, so that a loaded machine cannot make a
# prompt reply look like a sleep: a prompt reply takes far less than half of it.
_LONG_TARPIT = {**_TARPIT, "smtpd_error_sleep_time": "3s"}
_IMMEDIATE = 1.5


def _timed(client: Client, line: str) -> tuple[str, float]:
    started = time.monotonic()
    reply = client.cmd(line)
    return reply, time.monotonic() - started


def test_helo_after_ehlo_keeps_esmtp_and_its_pipelining(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_data_restrictions="reject_unauth_pipelining, reject").start()
    client = Client(server.port)
    client.reply()
    client.cmd("EHLO a.example")
    assert client.cmd("HELO b.example") == "250 mx.example.test"
    client.send(b"MAIL FROM:<s@x.example>\r\nRCPT TO:<alice@example.test>\r\n")
    assert [client.reply(), client.reply()] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    # Still ESMTP: the pipelined MAIL/RCPT were allowed, so `reject` decides, not pipelining.
    assert client.cmd("DATA") == "554 5.7.1 <DATA>: Data command rejected: Access denied"
    client.cmd("QUIT")
    client.close()
    lines = server.wait_log("reject: DATA from")
    assert lines[0].endswith("from=<s@x.example> to=<alice@example.test> proto=ESMTP "
                             "helo=<b.example>")
    assert not [x for x in server.smtpd_log() if "improper command pipelining" in x]


def test_helo_first_then_pipelining_is_improper(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_data_restrictions="reject_unauth_pipelining, reject").start()
    client = Client(server.port)
    client.reply()
    client.cmd("HELO a.example")
    client.cmd("EHLO b.example")  # EHLO after HELO: ESMTP from now on
    client.send(b"MAIL FROM:<s@x.example>\r\nRCPT TO:<alice@example.test>\r\n")
    assert [client.reply(), client.reply()] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    assert client.cmd("DATA").startswith("554 5.7.1 ")
    client.close()
    server.wait_log("disconnect from")
    assert not [x for x in server.smtpd_log() if "improper command pipelining" in x]


def test_queued_reply_is_not_tarpitted(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(**_LONG_TARPIT).start()
    client = Client(server.port)
    client.reply()
    client.cmd("HELO a.example")
    assert client.cmd("FOO") == "500 5.5.2 Error: command not recognized"
    assert client.cmd("BAR") == "500 5.5.2 Error: command not recognized"
    reply, delay = _timed(client, "MAIL FROM:<s@x.example>")
    assert (reply, delay >= 3 * _DELAYED) == ("250 2.1.0 Ok", True)
    client.cmd("RCPT TO:<alice@example.test>")
    client.cmd("DATA")
    reply, delay = _timed(client, "Subject: t\r\n\r\nbody\r\n.")
    # smtpd forgives the errors before it says "queued as": no sleep for that reply
    assert reply.startswith("250 2.0.0 Ok: queued as ") and delay < _IMMEDIATE, delay
    reply, delay = _timed(client, "NOOP")
    assert (reply, delay < _IMMEDIATE) == ("250 2.0.0 Ok", True)
    client.close()


def test_tarpitted_ehlo_sleeps_before_each_line(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_discard_ehlo_keywords="silent-discard, pipelining, size, vrfy, "
                            "etrn, 8bitmime, dsn, smtputf8", **_TARPIT).start()
    client = Client(server.port)
    client.reply()
    client.cmd("FOO")
    client.cmd("BAR")
    started = time.monotonic()
    client.send("EHLO a.example")
    first = client.line()
    first_at = time.monotonic() - started
    rest = [client.line(), client.line()]
    total = time.monotonic() - started
    assert [first, *rest] == ["250-mx.example.test", "250-ENHANCEDSTATUSCODES", "250 CHUNKING"]
    assert first_at >= _DELAYED, first_at
    assert total >= 3 * _DELAYED, total  # one sleep per line, not one per reply
    client.close()


def test_pipelined_replies_wait_for_the_tarpit_together(server_factory) -> None:  # type: ignore[no-untyped-def]
    """smtpd holds unflushed replies until a delayed one is sent: the prompt 501 comes with
    the tarpitted 503 after it, not before."""
    server = server_factory(**_TARPIT).start()
    client = Client(server.port)
    client.reply()
    client.cmd("HELO a.example")
    client.cmd("FOO")
    started = time.monotonic()
    client.send(b"MAIL FROM:<bad@[300.0.0.1]>\r\nRCPT TO:<alice@example.test>\r\n")
    first = client.reply()
    first_at = time.monotonic() - started
    assert first == "501 5.1.7 Bad sender address syntax"
    assert client.reply() == "503 5.5.1 Error: need MAIL command"
    assert first_at >= _DELAYED, first_at
    client.close()
