"""Issue 16 corners over a real socket: what smtpd's checks see of an address (the resolved form,
case-folded as a whole), empty table results, long replies, the order of RCPT's checks. Each
expectation was first observed on a live Postfix 3.7.11 (decisions 0026 and 0030);
tests/interop/test_differential.py compares the same dimensions with a live Postfix at random."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Client

ECHO = "pcre:{{/^(.*)$$/ REJECT key=$$1}}"


@pytest.fixture
def echo(server_factory):  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_sender_restrictions=f"check_sender_access {ECHO}",
                            smtpd_delay_reject="no").start()
    yield server
    server.stop()


def _mail(server, sender: str, smtputf8: bool) -> str:  # type: ignore[no-untyped-def]
    client = Client(server.port)
    client.reply()
    client.cmd("EHLO client.example")
    reply = client.cmd(f"MAIL FROM:<{sender}>" + (" SMTPUTF8" if smtputf8 else ""))
    client.cmd("QUIT")
    client.close()
    return reply


@pytest.mark.parametrize(("sender", "key"), [
    ("KöNIG@Straße.Example", "könig@strasse.example"),  # local part folded too, ß → ss
    ("k@ſ.EXAMPLE", "k@s.example"),  # long s folds to s
    ("Ä@é.example", "ä@é.example"),
    ('"q@ß"@x.example', '"q@ss"@x.example'),  # quoted parts too
    ("k@straße.example.", "k@strasse.example"),  # the trailing dot goes
    ("USER@OK.EXAMPLE", "user@ok.example"),
])
def test_access_key_is_the_folded_address(echo, sender: str, key: str) -> None:  # type: ignore[no-untyped-def]
    shown = sender.replace('"', "")  # the reply shows the address unquoted
    assert _mail(echo, sender, True) == \
        f"554 5.7.1 <{shown}>: Sender address rejected: key={key}"


@pytest.mark.parametrize(("domain", "accepted"), [
    ("straße.example", True), ("ß", True), ("ſ.example", True), ("ﬀ.example", True),
    ("K.example", True),  # Kelvin sign
    ("é.example", False), ("Ω.example", False), ("ı.example", False), ("ｆ.example", False),
])
def test_non_ascii_domain_without_smtputf8_is_judged_folded(server_factory, domain: str,
                                                            accepted: bool) -> None:  # type: ignore[no-untyped-def]
    server = server_factory().start()
    want = "250 2.1.0 Ok" if accepted else "501 5.1.7 Bad sender address syntax"
    assert _mail(server, f"k@{domain}", False) == want
    assert _mail(server, f"k@{domain}", True) == "250 2.1.0 Ok"


def test_empty_lookup_result_is_a_configuration_error(server_factory) -> None:  # type: ignore[no-untyped-def]
    table = "regexp:{{/^z(.*)@/ $$1}}"
    server = server_factory(smtpd_recipient_restrictions=f"check_recipient_access {table}, "
                                                         "permit_mynetworks, reject").start()
    client = Client(server.port)
    client.reply()
    client.cmd("EHLO client.example")
    client.cmd("MAIL FROM:<s@sender.example>")
    assert client.cmd("RCPT TO:<z@example.test>") == \
        "451 4.3.5 <z@example.test>: Recipient address rejected: Server configuration error"
    assert client.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Ok"
    client.cmd("QUIT")
    client.close()
    warnings = server.wait_log("should return NO RESULT")
    assert warnings == [f"smtpd: warning: {table.replace('$$', '$')} should return NO RESULT in "
                        "case of NOT FOUND"]
    assert f"smtpd: warning: {table.replace('$$', '$')} lookup of z@example.test returns an " \
           "empty string result" in server.log()


def test_long_reply_is_whole_and_its_log_text_is_cut_at_2000_bytes(
        server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = " ".join(f"word{i}" for i in range(500))
    table = tmp_path / "long"
    table.write_text(f"x@y.example REJECT {text}\n")
    server = server_factory(smtpd_recipient_restrictions=f"check_recipient_access "
                                                         f"texthash:{table}").start()
    client = Client(server.port)
    client.reply()
    client.cmd("EHLO client.example")
    client.cmd("MAIL FROM:<s@sender.example>")
    reply = client.cmd("RCPT TO:<x@y.example>")
    assert reply == f"554 5.7.1 <x@y.example>: Recipient address rejected: {text}"
    client.close()
    (line,) = server.wait_log("NOQUEUE: reject: RCPT")
    assert len(line[len("smtpd: "):].encode()) == 2000
    assert "; from=<" not in line


def test_rcpt_syntax_and_parameters_come_before_the_recipient_limit(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_recipient_limit="1").start()
    client = Client(server.port)
    client.reply()
    client.cmd("EHLO client.example")
    client.cmd("MAIL FROM:<s@sender.example>")
    assert client.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Ok"
    assert [client.cmd(x) for x in (
        "RCPT TO:<bob@exämple.test>", "RCPT TO:<bob@example.test> NOTIFY=BOGUS",
        "RCPT TO:<bob@example.test> FOO=bar", "RCPT TO:<<bad>", "RCPT TO:<bob@example.test>",
    )] == ["501 5.1.3 Bad recipient address syntax",
           "501 5.5.4 Error: Bad NOTIFY parameter syntax",
           "555 5.5.4 Unsupported option: FOO=bar",
           "501 5.1.3 Bad recipient address syntax",
           "452 4.5.3 Error: too many recipients"]
    client.close()


def test_input_before_the_greeting_after_xclient_is_improper_pipelining(server_factory) -> None:  # type: ignore[no-untyped-def]
    """A successful XCLIENT starts over with a new 220 greeting: what the client sent before
    that greeting is flagged as at CONNECT (Postfix 3.7.6+), even in an ESMTP session; the
    line names the client as XCLIENT made it (checked against Postfix 3.7.11)."""
    server = server_factory(smtpd_authorized_xclient_hosts="127.0.0.0/8").start()
    client = Client(server.port)
    client.reply()
    client.cmd("EHLO client.example")
    client.send(b"XCLIENT ADDR=1.2.3.4\r\nNOOP\r\n")
    assert client.reply().startswith("220 ")
    assert client.reply() == "250 2.0.0 Ok"
    client.cmd("QUIT")
    client.close()
    line = server.wait_log(r"^smtpd: improper command pipelining")[0]
    assert line == ("smtpd: improper command pipelining after XCLIENT from "
                    "localhost[1.2.3.4]: NOOP\\r\\n")
