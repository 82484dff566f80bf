"""Differential: SMTP AUTH sessions played to mailgate and to a live Postfix 3.7, both asking the
same real Dovecot, give the same replies, smtpd log lines and `Received:` header."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import dovecot_auth, reference_postfix, wait_until
from support import reference
from support.certs import Certs
from support.dovecotauth import DovecotAuth
from support.livesession import Step, compare, log_lines, mail_count, play, received
from support.reference import Instance

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


PLAIN_BOB = b"AUTH PLAIN " + b64("\0bob\0hunter2")
EHLO: Step = ("C", b"EHLO client.example")
MESSAGE: list[Step] = [("C", b"MAIL FROM:<bob@client.example>"),
                       ("C", b"RCPT TO:<alice@example.test>"), ("C", b"DATA"),
                       ("C", b"Subject: tls\r\n\r\nbody\r\n.")]
RELAY: list[Step] = [("C", b"MAIL FROM:<bob@client.example>"),
                     ("C", b"RCPT TO:<someone@elsewhere.example>"), ("C", b"RSET")]
SCRIPTS: dict[str, tuple[dict[str, str], list[Step]]] = {
    "plain": ({}, [EHLO, ("C", PLAIN_BOB), *RELAY, *MESSAGE, ("C", b"QUIT")]),
    "login": ({"smtpd_sasl_authenticated_header": "yes"},
              [EHLO, ("C", b"AUTH LOGIN"), ("C", b64("bob")), ("C", b64("hunter2")),
               *MESSAGE, ("C", b"QUIT")]),
    "login-initial": ({}, [EHLO, ("C", b"AUTH LOGIN " + b64("bob")), ("C", b64("hunter2")),
                           ("C", b"AUTH LOGIN"), ("C", b"QUIT")]),
    "wrong-password": ({}, [EHLO, ("C", b"AUTH PLAIN " + b64("\0bob\0wrong")), *RELAY,
                            ("C", b"QUIT")]),
    "unknown-user": ({}, [EHLO, ("C", b"AUTH LOGIN"), ("C", b64("nobody")),
                          ("C", b64("secret")), ("C", b"QUIT")]),
    "cancel": ({}, [EHLO, ("C", b"AUTH LOGIN"), ("C", b"*"), ("C", b"AUTH PLAIN"),
                    ("C", b"*"), ("C", b"QUIT")]),
    "syntax": ({}, [("C", b"AUTH PLAIN"), ("C", b"HELO client.example"), ("C", b"AUTH"),
                    ("C", b"AUTH PLAIN a b"), ("C", b"AUTH CRAM-MD5"),
                    ("C", b"AUTH PLAIN !!!"), ("C", b"AUTH LOGIN"), ("C", b"%%%"),
                    ("C", b"MAIL FROM:<a@client.example> AUTH=<>"), ("C", PLAIN_BOB),
                    ("C", b"RSET"), ("C", PLAIN_BOB), ("C", PLAIN_BOB),
                    ("C", b"MAIL FROM:<a@client.example> AUTH=<bob@client.example>"),
                    ("C", PLAIN_BOB), ("C", b"AUTH PLAIN a b"),
                    ("C", b"RCPT TO:<alice@example.test>"), ("C", b"QUIT")]),
    "helo-required": ({"smtpd_helo_required": "yes"},
                      [("C", PLAIN_BOB), EHLO, ("C", PLAIN_BOB), ("C", b"QUIT")]),
    "broken-clients": ({"broken_sasl_auth_clients": "yes"}, [EHLO, ("C", b"QUIT")]),
    "exceptions": ({"smtpd_sasl_exceptions_networks": "127.0.0.0/8"},
                   [EHLO, ("C", PLAIN_BOB), ("C", b"QUIT")]),
    "discarded": ({"smtpd_discard_ehlo_keywords": "auth"},
                  [EHLO, ("C", PLAIN_BOB), ("C", b"QUIT")]),
    "sender-login": ({"smtpd_sender_login_maps": "inline:{alice@example.test=bob}",
                      "smtpd_sender_restrictions": "reject_sender_login_mismatch"},
                     [EHLO, ("C", b"MAIL FROM:<alice@example.test>"),
                      ("C", b"RCPT TO:<alice@example.test>"), ("C", b"RSET"),
                      ("C", PLAIN_BOB), ("C", b"MAIL FROM:<alice@example.test>"),
                      ("C", b"RCPT TO:<alice@example.test>"), ("C", b"RSET"),
                      ("C", b"MAIL FROM:<carol@example.test>"),
                      ("C", b"RCPT TO:<alice@example.test>"), ("C", b"QUIT")]),
    "known-sender": ({"smtpd_sender_login_maps": "inline:{alice@example.test=carol}",
                      "smtpd_sender_restrictions": "reject_known_sender_login_mismatch"},
                     [EHLO, ("C", PLAIN_BOB), ("C", b"MAIL FROM:<dave@example.test>"),
                      ("C", b"RCPT TO:<alice@example.test>"), ("C", b"RSET"),
                      ("C", b"MAIL FROM:<alice@example.test>"),
                      ("C", b"RCPT TO:<alice@example.test>"), ("C", b"QUIT")]),
    "auth-only": ({"smtpd_tls_auth_only": "yes"},
                  [EHLO, ("C", PLAIN_BOB), ("C", b"STARTTLS"), ("TLS", b""), EHLO,
                   ("C", PLAIN_BOB), *MESSAGE, ("C", b"QUIT")]),
    "auth-rate": ({"smtpd_client_auth_rate_limit": "2"},
                  [EHLO, ("C", b"AUTH PLAIN " + b64("\0bob\0wrong")), ("C", b"AUTH LOGIN"),
                   ("C", b"*"), ("C", PLAIN_BOB), ("C", PLAIN_BOB), ("C", b"QUIT")]),
    "tls-rate": ({"smtpd_client_new_tls_session_rate_limit": "1"},
                 [EHLO, ("C", b"STARTTLS"), ("TLS", b""), EHLO, ("C", b"STARTTLS"),
                  ("C", b"QUIT")]),
    "submission": ({"smtpd_tls_security_level": "encrypt",
                    "smtpd_client_restrictions": "permit_sasl_authenticated, reject"},
                   [EHLO, ("C", PLAIN_BOB), ("C", b"STARTTLS"), ("TLS", b""), EHLO,
                    ("C", b"MAIL FROM:<bob@client.example>"), ("C", PLAIN_BOB), *RELAY,
                    ("C", b"QUIT")]),
}


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotAuth]:
    yield from dovecot_auth()


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from reference_postfix(tmp_path_factory, "auth")


def settings_for(dovecot: DovecotAuth, certs: Certs, extra: dict[str, str]) -> dict[str, str]:
    return {**reference.read_settings(DATA / "main.cf"), "mynetworks": "192.0.2.0/24",
            "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": f"inet:127.0.0.1:{dovecot.port}",
            "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(certs.rsa_cert),
            "smtpd_tls_key_file": str(certs.rsa_key), **extra}


@pytest.mark.interop
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_auth_sessions_match_postfix(server_factory, postfix: Instance,  # type: ignore[no-untyped-def]
                                     dovecot: DovecotAuth, certs: Certs, name: str) -> None:
    extra, steps = SCRIPTS[name]
    settings = settings_for(dovecot, certs, extra)
    delivers = MESSAGE[-1] in steps
    skip = postfix.configure(settings)
    delivered = mail_count(postfix.directory / "mail")
    theirs = play(postfix.port, steps, certs.ca)
    wait_until(lambda: any("disconnect from" in x for x in log_lines(postfix.log, skip)))
    if delivers:  # Postfix delivers after the session: wait for the file
        wait_until(lambda: mail_count(postfix.directory / "mail") > delivered)
    their_log = log_lines(postfix.log, skip)
    their_header = received(postfix.directory / "mail") if delivers else ""
    server = server_factory(**settings).start()
    ours = play(server.port, steps, certs.ca)
    wait_until(lambda: any("disconnect from" in x for x in log_lines(server.log_path)))
    compare(name, (("replies", theirs, ours),
                   ("smtpd log", their_log, log_lines(server.log_path)),
                   ("Received", their_header.splitlines(),
                    received(server.mail).splitlines() if delivers else [])))


def stopped_midway(port: int, dovecot: DovecotAuth) -> list[str]:
    """EHLO while Dovecot runs (AUTH is offered), then Dovecot stops: AUTH, a second AUTH,
    and after Dovecot is back, a third one that succeeds."""
    from conftest import Client

    client = Client(port, timeout=30)
    out = [client.reply()]
    for line in (b"EHLO client.example",):
        client.send(line.decode())
        out.append(client.reply())
    dovecot.stop()
    for _ in range(2):
        client.send(PLAIN_BOB.decode())
        out.append(client.reply())
    dovecot.start()
    client.send(PLAIN_BOB.decode())
    out.append(client.reply())
    client.send("QUIT")
    out.append(client.reply())
    client.close()
    return out


@pytest.mark.interop
def test_dovecot_stopped_matches_postfix(server_factory, postfix: Instance,  # type: ignore[no-untyped-def]
                                         dovecot: DovecotAuth, certs: Certs) -> None:
    settings = settings_for(dovecot, certs, {})
    skip = postfix.configure(settings)
    theirs = stopped_midway(postfix.port, dovecot)
    wait_until(lambda: any("disconnect from" in x for x in log_lines(postfix.log, skip)))
    their_log = log_lines(postfix.log, skip)
    server = server_factory(**settings).start()
    ours = stopped_midway(server.port, dovecot)
    wait_until(lambda: any("disconnect from" in x for x in log_lines(server.log_path)))
    compare("dovecot-stopped", (("replies", theirs, ours),
                                ("smtpd log", their_log, log_lines(server.log_path))))
