"""Differential: STARTTLS and wrapper-mode sessions played to mailgate and to a live Postfix 3.7
with the same certificate give the same replies, smtpd log lines and `Received:` header."""

from __future__ import annotations

import difflib
import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import HOSTNAME, reference_postfix, require, wait_until
from support import reference
from support.certs import Certs, make
from support.reference import Instance

DATA = Path(__file__).resolve().parents[1] / "data" / "dialogues"
Step = tuple[str, bytes]

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


def _reply(f: object) -> bytes:
    out = b""
    while True:
        line: bytes = f.readline()  # type: ignore[attr-defined]
        out += line
        if not line or line[3:4] != b"-":
            return out


def play(port: int, steps: list[Step], ca: Path) -> list[str]:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    wrapper = steps[0][0] == "TLS"
    f = sock.makefile("rb")
    out = [] if wrapper else [_reply(f).decode()]
    for kind, data in steps:
        if kind == "TLS":
            sock = ctx.wrap_socket(sock, server_hostname=HOSTNAME)
            f = sock.makefile("rb")
        elif kind == "R":
            out.append(_reply(f).decode())
        elif kind == "P":
            sock.sendall(data)
        else:
            sock.sendall(data + b"\r\n")
            out.append(_reply(f).decode())
    sock.close()
    return [re.sub(r"queued as [0-9A-F]+", "queued as QUEUEID", r) for r in out]


def received(mail: Path) -> str:
    files = list((mail / "example.test" / "alice" / "new").glob("*"))
    if not files:
        return ""
    text = max(files, key=lambda f: f.stat().st_mtime_ns).read_text()
    header = text[text.index("Received: "):text.index("\nSubject:")]
    header = re.sub(r"id [0-9A-F]+", "id QUEUEID", header.replace("(mailgate)", "(Postfix)"))
    return re.sub(r"; .*\(UTC\)", "; DATE", header)


def log_lines(log: Path, skip: int = 0) -> list[str]:
    # OpenSSL's source file and line end Postfix's library-problem line; Python keeps none.
    return [re.sub(r"(TLS library problem: error:[0-9A-F]+:[^:]*::[^:]*:).*", r"\1", line)
            for line in reference.smtpd_lines(log, skip)]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    require("openssl")
    return make(tmp_path_factory.mktemp("certs"), HOSTNAME)


@pytest.fixture(scope="module")
def postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    yield from reference_postfix(tmp_path_factory, "tls")


def mail_count(mail: Path) -> int:
    new = mail / "example.test" / "alice" / "new"
    return len(list(new.iterdir())) if new.exists() else 0


@pytest.mark.interop
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_tls_sessions_match_postfix(server_factory, postfix: Instance, certs: Certs,  # type: ignore[no-untyped-def]
                                    name: str) -> None:
    extra, steps = SCRIPTS[name]
    extra = {k: v.format(ec_cert=certs.ec_cert, ec_key=certs.ec_key) for k, v in extra.items()}
    settings = {**reference.read_settings(DATA / "main.cf"),
                "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(certs.rsa_cert),
                "smtpd_tls_key_file": str(certs.rsa_key), "smtpd_tls_loglevel": "1",
                "smtpd_tls_received_header": "yes", **extra}
    skip = postfix.configure(settings)
    delivered = mail_count(postfix.directory / "mail")
    theirs = play(postfix.port, steps, certs.ca)
    wait_until(lambda: any("disconnect from" in x for x in log_lines(postfix.log, skip)))
    if MESSAGE[-1] in steps:  # Postfix delivers after the session: wait for the file
        wait_until(lambda: mail_count(postfix.directory / "mail") > delivered)
    their_log = log_lines(postfix.log, skip)
    their_header = received(postfix.directory / "mail") if MESSAGE[-1] in steps else ""
    server = server_factory(**settings).start()
    ours = play(server.port, steps, certs.ca)
    wait_until(lambda: any("disconnect from" in x for x in log_lines(server.log_path)))
    our_log, our_header = log_lines(server.log_path), received(server.mail)
    for what, a, b in (("replies", theirs, ours), ("smtpd log", their_log, our_log),
                       ("Received", their_header.splitlines(), our_header.splitlines())):
        if a != b:
            diff = "\n".join(difflib.unified_diff(a, b, "postfix", "mailgate", lineterm=""))
            pytest.fail(f"{name}: {what} differ\n{diff}")
