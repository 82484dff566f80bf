"""SMTP AUTH end to end: real clients (smtplib, swaks) log in through a real Dovecot; a submission
service relays for them to Postfix's smtp-sink and refuses the same mail without AUTH."""

from __future__ import annotations

import base64
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import HOSTNAME, Client, Server, dovecot_auth, require, wait_until
from e2e.test_relay import Sink
from support.certs import Certs
from support.dovecotauth import DovecotAuth

REMOTE = "elsewhere.example"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotAuth]:
    yield from dovecot_auth()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[Sink]:
    sink = Sink(tmp_path / "sink").start()
    yield sink
    sink.stop()
    sink.remove()


def submission(server_factory, dovecot: DovecotAuth, certs: Certs,  # type: ignore[no-untyped-def]
               sink_port: int = 0, **extra: str) -> Server:
    """A submission-like service: TLS required, AUTH through Dovecot, relay for logins
    (REMOTE is not a relay domain: only permit_sasl_authenticated lets mail for it in)."""
    params = {"mynetworks": "192.0.2.0/24", "smtpd_sasl_auth_enable": "yes",
              "smtpd_sasl_type": "dovecot",
              "smtpd_sasl_path": f"inet:127.0.0.1:{dovecot.port}",
              "smtpd_tls_security_level": "encrypt",
              "smtpd_tls_cert_file": str(certs.rsa_cert),
              "smtpd_tls_key_file": str(certs.rsa_key),
              "smtpd_client_restrictions": "permit_sasl_authenticated, reject",
              "queue_run_delay": "3600s",
              **({"transport_maps": f"inline:{{{REMOTE}=smtp:[127.0.0.1]:{sink_port}}}"}
                 if sink_port else {}), **extra}
    return server_factory(**params).start()  # type: ignore[no-any-return]


def tls_client(server: Server, certs: Certs) -> smtplib.SMTP:
    import ssl

    smtp = smtplib.SMTP("127.0.0.1", server.port, timeout=30)
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False
    smtp.starttls(context=ctx)
    return smtp


def test_submission_with_auth_is_relayed_to_the_sink(server_factory, dovecot, certs,  # type: ignore[no-untyped-def]
                                                     sink: Sink) -> None:
    server = submission(server_factory, dovecot, certs, sink.port)
    with tls_client(server, certs) as smtp:
        smtp.ehlo("client.example")
        assert smtp.has_extn("auth") and "PLAIN" in smtp.esmtp_features["auth"].split()
        smtp.login("bob", "hunter2")  # smtplib chooses PLAIN
        smtp.sendmail("bob@example.test", [f"carol@{REMOTE}"],
                      b"Subject: submitted\r\nMessage-ID: <s1@example.test>\r\n\r\nhi\r\n")
    wait_until(lambda: len(sink.messages()) == 1, timeout=30)
    message = sink.messages()[0]
    assert b"with ESMTPSA id " in message  # RFC 3848: TLS and AUTH
    assert b"Subject: submitted" in message
    lines = server.log()
    assert any("client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username=bob" in x
               for x in lines), lines


def test_the_same_mail_without_auth_is_refused(server_factory, dovecot, certs,  # type: ignore[no-untyped-def]
                                               sink: Sink) -> None:
    server = submission(server_factory, dovecot, certs, sink.port,
                        smtpd_client_restrictions="", smtpd_delay_reject="yes")
    with tls_client(server, certs) as smtp:
        smtp.ehlo("client.example")
        smtp.mail("bob@example.test")
        code, text = smtp.rcpt(f"carol@{REMOTE}")
    assert (code, text) == (454, f"4.7.1 <carol@{REMOTE}>: Relay access denied".encode())
    assert sink.messages() == []


def test_swaks_auth_login(server_factory, dovecot, certs) -> None:  # type: ignore[no-untyped-def]
    swaks = require("swaks")
    server = submission(server_factory, dovecot, certs, smtpd_tls_security_level="may",
                        smtpd_client_restrictions="")
    done = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{server.port}", "--tls", "--auth", "LOGIN",
         "--auth-user", "alice@example.test", "--auth-password", "secret",
         "--from", "alice@example.test", "--to", "alice@example.test", "--quit-after", "RCPT"],
        capture_output=True, text=True, timeout=60)
    assert "235 2.7.0 Authentication successful" in done.stdout, done.stdout + done.stderr


def test_failed_auth_counts_as_an_error_for_the_tarpit(server_factory, dovecot,  # type: ignore[no-untyped-def]
                                                       certs) -> None:
    server = submission(server_factory, dovecot, certs, smtpd_tls_security_level="may",
                        smtpd_hard_error_limit="3", smtpd_soft_error_limit="100")
    wrong = "AUTH PLAIN " + base64.b64encode(b"\0bob\0guess").decode()
    client = Client(server.port)
    assert client.reply().startswith("220 ")
    client.send("EHLO client.example")
    client.reply()
    replies = []
    for _ in range(3):
        client.send(wrong)
        replies.append(client.reply())
    client.send("NOOP")
    replies.append(client.reply())
    client.close()
    assert replies[:3] == ["535 5.7.8 Error: authentication failed: (reason unavailable)"] * 3
    assert replies[3] == f"421 4.7.0 {HOSTNAME} Error: too many errors"
    wait_until(lambda: any("disconnect from" in x for x in server.log()))
    assert any(x.endswith("ehlo=1 auth=0/3 commands=1/4") for x in server.log()), server.log()


def test_a_dovecot_never_reached_leaves_auth_out_and_mail_flowing(  # type: ignore[no-untyped-def]
        server_factory, certs, tmp_path: Path) -> None:
    server = server_factory(smtpd_sasl_auth_enable="yes", smtpd_sasl_type="dovecot",
                            smtpd_sasl_path=str(tmp_path / "no-such-socket")).start()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo("client.example")
        assert not smtp.has_extn("auth")
        assert smtp.docmd("AUTH PLAIN") == (503, b"5.5.1 Error: authentication not enabled")
        smtp.sendmail("someone@client.example", ["alice@example.test"], b"Subject: x\r\n\r\nx\r\n")
    assert any("warning: SASL: Connect to Dovecot auth socket" in x for x in server.log())


def test_cyrus_is_refused_at_start_up(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_sasl_auth_enable="yes")  # smtpd_sasl_type = cyrus
    with pytest.raises(RuntimeError, match="unsupported SASL server implementation: cyrus"):
        server.start()
