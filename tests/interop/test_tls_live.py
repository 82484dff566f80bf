"""Differential: STARTTLS and wrapper-mode sessions played to mailgate and to a live Postfix 3.7
with the same certificate give the same replies, smtpd log lines and `Received:` header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import reference_postfix, wait_until
from support import reference
from support.certs import Certs
from support.livesession import Step, compare, log_lines, mail_count, play, received
from support.reference import Instance

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"

MESSAGE: list[Step] = [("C", b"MAIL FROM:<sender@client.example>"),
                       ("C", b"RCPT TO:<alice@example.test>"), ("C", b"DATA"),
                       ("C", b"Subject: tls\r\n\r\nbody\r\n.")]
SCRIPTS: dict[str, tuple[dict[str, str], list[Step]]] = {
    "starttls": ({}, [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b""),
                      ("C", b"EHLO client.example"), ("C", b"STARTTLS"), *MESSAGE,
                      ("C", b"QUIT")]),
    "helo-then-tls": ({"smtpd_tls_received_header": "no"},
                      [("C", b"HELO client.example"), ("C", b"STARTTLS"), ("TLS", b""),
                       ("C", b"HELO client.example"), *MESSAGE, ("C", b"QUIT")]),
    "helo-forgotten": ({"smtpd_helo_required": "yes",
                        "smtpd_helo_restrictions": "reject_invalid_helo_hostname"},
                       [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b""),
                        ("C", b"MAIL FROM:<a@client.example>"), ("C", b"EHLO client.example"),
                        ("C", b"MAIL FROM:<a@client.example>"), ("C", b"QUIT")]),
    "encrypt": ({"smtpd_tls_security_level": "encrypt"},
                [("C", b"NOOP"), ("C", b"RSET"), ("C", b"MAIL FROM:<a@client.example>"),
                 ("C", b"VRFY alice"), ("C", b"ETRN example.test"), ("C", b"DATA"),
                 ("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b""),
                 ("C", b"EHLO client.example"), *MESSAGE, ("C", b"QUIT")]),
    "injection": ({}, [("C", b"EHLO client.example"),
                       ("C", b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.net>"),
                       ("TLS", b""), ("C", b"NOOP"), ("C", b"QUIT")]),
    "not-offered": ({"smtpd_tls_security_level": "none"},
                    [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("C", b"STARTTLS x"),
                     ("C", b"QUIT")]),
    "garbage": ({}, [("C", b"EHLO client.example"), ("C", b"STARTTLS"),
                     ("P", b"this is not a TLS ClientHello\r\n")]),
    "gone": ({}, [("C", b"EHLO client.example"), ("C", b"STARTTLS")]),
    "ecdsa": ({"smtpd_tls_cert_file": "", "smtpd_tls_eccert_file": "{ec_cert}",
               "smtpd_tls_eckey_file": "{ec_key}"},
              [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b""),
               ("C", b"EHLO client.example"), *MESSAGE, ("C", b"QUIT")]),
    "wrapper": ({"smtpd_tls_wrappermode": "yes"},
                [("TLS", b""), ("R", b""), ("C", b"EHLO client.example"), *MESSAGE,
                 ("C", b"QUIT")]),
}
ASK = {"smtpd_tls_ask_ccert": "yes", "smtpd_tls_CAfile": "{ca}", "mynetworks": "192.0.2.0/24"}
RELAYED: list[Step] = [("C", b"EHLO client.example"), ("C", b"MAIL FROM:<a@client.example>"),
                       ("C", b"RCPT TO:<someone@elsewhere.example>"), ("C", b"RSET")]
SCRIPTS.update({
    "ccert-none": (ASK, [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b""),
                         *RELAYED, *MESSAGE, ("C", b"QUIT")]),
    "ccert-trusted": ({**ASK, "smtpd_relay_restrictions":
                       "permit_tls_all_clientcerts, reject_unauth_destination"},
                      [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b"client"),
                       *RELAYED, *MESSAGE, ("C", b"QUIT")]),
    "ccert-untrusted": ({**ASK, "smtpd_relay_restrictions":
                         "permit_tls_all_clientcerts, reject_unauth_destination"},
                        [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b"self"),
                         *RELAYED, *MESSAGE, ("C", b"QUIT")]),
    "ccert-listed": ({**ASK, "relay_clientcerts": "inline:{{{self_fp}=self}}",
                      "smtpd_relay_restrictions":
                      "permit_tls_clientcerts, reject_unauth_destination"},
                     [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b"self"),
                      *RELAYED, ("C", b"QUIT")]),
    "ccert-access": ({**ASK, "smtpd_client_restrictions":
                      "check_ccert_access inline:{{ {{{self_fp}=REJECT no such cert}} }}"},
                     [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b"self"),
                      ("C", b"EHLO client.example"), *MESSAGE[:2], ("C", b"QUIT")]),
})


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from reference_postfix(tmp_path_factory, "tls")


@pytest.mark.interop
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_tls_sessions_match_postfix(server_factory, postfix: Instance, certs: Certs,  # type: ignore[no-untyped-def]
                                    name: str) -> None:
    extra, steps = SCRIPTS[name]
    extra = {k: v.format(ec_cert=certs.ec_cert, ec_key=certs.ec_key, ca=certs.ca,
                         self_fp=certs.fingerprint(certs.self_cert)) for k, v in extra.items()}
    identities = {b"client": (certs.client_cert, certs.client_key),
                  b"self": (certs.self_cert, certs.self_key)}
    settings = {**reference.read_settings(DATA / "main.cf"),
                "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(certs.rsa_cert),
                "smtpd_tls_key_file": str(certs.rsa_key), "smtpd_tls_loglevel": "1",
                "smtpd_tls_received_header": "yes", **extra}
    skip = postfix.configure(settings)
    delivered = mail_count(postfix.directory / "mail")
    theirs = play(postfix.port, steps, certs.ca, identities=identities)
    wait_until(lambda: any("disconnect from" in x for x in log_lines(postfix.log, skip)))
    if MESSAGE[-1] in steps:  # Postfix delivers after the session: wait for the file
        wait_until(lambda: mail_count(postfix.directory / "mail") > delivered)
    their_log = log_lines(postfix.log, skip)
    their_header = received(postfix.directory / "mail") if MESSAGE[-1] in steps else ""
    server = server_factory(**settings).start()
    ours = play(server.port, steps, certs.ca, identities=identities)
    wait_until(lambda: any("disconnect from" in x for x in log_lines(server.log_path)))
    our_log, our_header = log_lines(server.log_path), received(server.mail)
    compare(name, (("replies", theirs, ours), ("smtpd log", their_log, our_log),
                   ("Received", their_header.splitlines(), our_header.splitlines())))


@pytest.mark.interop
def test_new_tls_session_rate_limit_matches_postfix(server_factory, postfix: Instance,  # type: ignore[no-untyped-def]
                                                    certs: Certs) -> None:
    """Three sessions from one client with smtpd_client_new_tls_session_rate_limit = 1: the
    second one's new TLS session is over the limit (421 over TLS, counted after the
    handshake), the third STARTTLS is refused before any handshake (454)."""
    settings = {**reference.read_settings(DATA / "main.cf"), "mynetworks": "192.0.2.0/24",
                "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(certs.rsa_cert),
                "smtpd_tls_key_file": str(certs.rsa_key),
                "smtpd_client_new_tls_session_rate_limit": "1"}
    tls: list[Step] = [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("TLS", b"")]
    plain: list[Step] = [("C", b"EHLO client.example"), ("C", b"STARTTLS"), ("C", b"NOOP"),
                         ("C", b"QUIT")]

    def both(port: int, log: Path, skip: int = 0) -> tuple[list[str], list[str]]:
        replies: list[str] = []
        # the second session reads a 421 over TLS
        for n, steps in enumerate(([*tls, ("C", b"QUIT")], [*tls, ("R", b"")], plain), 1):
            replies += play(port, steps, certs.ca)
            wait_until(lambda n=n: sum("disconnect from" in x  # type: ignore[misc]
                                       for x in log_lines(log, skip)) == n)
        return replies, log_lines(log, skip)

    skip = postfix.configure(settings)
    theirs, their_log = both(postfix.port, postfix.log, skip)
    server = server_factory(**settings).start()
    ours, our_log = both(server.port, server.log_path)
    compare("new TLS session rate", (("replies", theirs, ours),
                                     ("smtpd log", their_log, our_log)))
