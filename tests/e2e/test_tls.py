"""STARTTLS and wrapper mode with real clients (smtplib, swaks, openssl s_client) and a test CA."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from conftest import Server, require, wait_until
from support.certs import Certs

HOST = "mx.example.test"


def tls_settings(certs: Certs, **more: str) -> dict[str, str]:
    return {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(certs.rsa_cert),
            "smtpd_tls_key_file": str(certs.rsa_key), "smtpd_tls_loglevel": "1",
            "smtpd_tls_received_header": "yes", **more}


def client_context(certs: Certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    ctx.check_hostname = False  # the certificate names mx.example.test, we dial 127.0.0.1
    return ctx


def ehlo_words(smtp: smtplib.SMTP) -> list[str]:
    code, text = smtp.ehlo("client.example")
    assert code == 250
    return [line.split()[0] for line in text.decode().splitlines()[1:]]


def read_reply(f: object) -> bytes:
    out = b""
    while True:
        line = f.readline()  # type: ignore[attr-defined]
        out += line
        if not line or line[3:4] != b"-":
            return out


def test_starttls_then_mail_with_postfix_received_and_log(server_factory, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(**tls_settings(certs)).start()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        assert "STARTTLS" in ehlo_words(smtp)
        assert smtp.starttls(context=client_context(certs))[0] == 220
        assert smtp.sock.version() == "TLSv1.3"  # type: ignore[union-attr]
        assert "STARTTLS" not in ehlo_words(smtp)
        assert smtp.docmd("STARTTLS") == (554, b"5.5.1 Error: TLS already active")
        assert smtp.sendmail("a@client.example", ["alice@example.test"],
                             b"Subject: t\r\n\r\nbody\r\n") == {}
    (path,) = server.maildir_files("alice")
    text = path.read_text()
    assert re.search(r"Received: from client\.example \(localhost \[127\.0\.0\.1\]\)\n"
                     r"\t\(using TLSv1\.3 with cipher TLS_AES_256_GCM_SHA384 \(256/256 bits\)\n"
                     r"\t key-exchange X25519 server-signature RSA-PSS \(2048 bits\) "
                     r"server-digest SHA256\)\n\t\(No client certificate requested\)\n"
                     rf"\tby {HOST} \(mailgate\) with ESMTPS id ", text), text[:600]
    server.wait_log(r"smtpd: disconnect from")
    assert ("smtpd: Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 "
            "with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
            "server-signature RSA-PSS (2048 bits) server-digest SHA256") in server.log()
    assert any("starttls=1/2" in line for line in server.smtpd_log())


def test_no_tls_settings_no_starttls(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        assert "STARTTLS" not in ehlo_words(smtp)
        assert smtp.docmd("STARTTLS") == (502, b"5.5.1 Error: command not implemented")


def test_ecdsa_certificate(server_factory, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(**tls_settings(certs, smtpd_tls_cert_file="",
                                           smtpd_tls_eccert_file=str(certs.ec_cert),
                                           smtpd_tls_eckey_file=str(certs.ec_key))).start()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        smtp.starttls(context=client_context(certs))
        assert smtp.noop()[0] == 250
    line = server.wait_log(r"Anonymous TLS connection established")[0]
    assert "server-signature ECDSA (prime256v1) server-digest SHA256" in line, line


def test_plaintext_pipelined_after_starttls_is_discarded(server_factory, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    """CVE-2011-0411: what follows STARTTLS in the same packet is never executed."""
    server = server_factory(**tls_settings(certs)).start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        f = raw.makefile("rb")
        read_reply(f)
        raw.sendall(b"EHLO client.example\r\n")
        read_reply(f)
        raw.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.net>\r\n")
        assert read_reply(f) == b"220 2.0.0 Ready to start TLS\r\n"
        with client_context(certs).wrap_socket(raw, server_hostname=HOST) as tls:
            tls.sendall(b"NOOP\r\n")
            assert tls.recv(100) == b"250 2.0.0 Ok\r\n"  # the first reply over TLS is NOOP's
            tls.sendall(b"QUIT\r\n")
            assert tls.recv(100) == b"221 2.0.0 Bye\r\n"
    summary = server.wait_log(r"smtpd: disconnect from")[0]
    assert summary.endswith("ehlo=1 starttls=1 noop=1 quit=1 commands=4"), summary


def test_encrypt_refuses_mail_before_starttls(server_factory, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(**tls_settings(certs, smtpd_tls_security_level="encrypt")).start()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        ehlo_words(smtp)
        refused = (530, b"5.7.0 Must issue a STARTTLS command first")
        assert smtp.docmd("MAIL FROM:<a@client.example>") == refused
        assert smtp.docmd("RSET") == refused
        assert smtp.docmd("VRFY alice") == refused
        assert smtp.noop()[0] == 250
        smtp.starttls(context=client_context(certs))
        ehlo_words(smtp)
        assert smtp.docmd("MAIL FROM:<a@client.example>")[0] == 250
    summary = server.wait_log(r"smtpd: disconnect from")[0]
    assert summary.endswith("ehlo=2 starttls=1 mail=1/2 rset=0/1 noop=1 vrfy=0/1 quit=1 "
                            "commands=6/9"), summary


def test_wrapper_mode_greets_over_tls(server_factory, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(**tls_settings(certs, smtpd_tls_wrappermode="yes")).start()
    with smtplib.SMTP_SSL("127.0.0.1", server.port, timeout=10,
                          context=client_context(certs)) as smtp:
        assert "STARTTLS" not in ehlo_words(smtp)
        assert smtp.sendmail("a@client.example", ["bob@example.test"],
                             b"Subject: w\r\n\r\nbody\r\n") == {}
    (path,) = server.maildir_files("bob")
    assert "with ESMTPS id" in path.read_text()
    lines = server.smtpd_log()
    assert lines[0] == "connect from localhost[127.0.0.1]"
    assert lines[1].startswith("Anonymous TLS connection established from localhost[127.0.0.1]")


def test_handshake_flood_leaves_other_sessions_unaffected(server_factory, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    """Clients that send garbage instead of a ClientHello, or stall mid-handshake, while a
    legitimate client does a whole STARTTLS transaction on the same (single) worker."""
    server = server_factory(**tls_settings(certs, smtpd_processes="1",
                                           smtpd_starttls_timeout="3s")).start()
    bad: list[socket.socket] = []
    try:
        for n in range(40):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            f = sock.makefile("rb")
            read_reply(f)
            sock.sendall(b"EHLO flood.example\r\nSTARTTLS\r\n")
            read_reply(f)
            assert read_reply(f) == b"220 2.0.0 Ready to start TLS\r\n"
            if n % 2:
                sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a hello cut short
            else:
                sock.sendall(b"this is not a TLS ClientHello\r\n" * 4)
            bad.append(sock)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.starttls(context=client_context(certs))
            assert smtp.sendmail("a@client.example", ["alice@example.test"],
                                 b"Subject: f\r\n\r\nbody\r\n") == {}
        assert len(server.maildir_files("alice")) == 1
        wait_until(lambda: sum("TLS library problem" in x for x in server.log()) >= 20)
    finally:
        for sock in bad:
            sock.close()
    # Every bad session ends (EOF, or at worst smtpd_starttls_timeout) with Postfix's lines.
    server.wait_log(r"SSL_accept error from localhost\[127\.0\.0\.1\]: ", 40, timeout=20)
    server.wait_log(r"lost connection after STARTTLS from localhost\[127\.0\.0\.1\]", 40)
    assert "warning: TLS library problem: error:0A00010B:SSL routines::wrong version number:" \
        in server.smtpd_log()


def test_swaks_and_openssl_s_client(server_factory, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    swaks, openssl = require("swaks"), require("openssl")
    server = server_factory(**tls_settings(certs)).start()
    done = subprocess.run([swaks, "--tls", "--server", f"127.0.0.1:{server.port}", "--to",
                           "alice@example.test", "--from", "a@client.example", "--helo",
                           "client.example"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<-  220 2.0.0 Ready to start TLS" in done.stdout  # then `~`: over TLS
    assert "<~  250 2.0.0 Ok: queued as " in done.stdout
    out = subprocess.run([openssl, "s_client", "-starttls", "smtp", "-connect",
                          f"127.0.0.1:{server.port}", "-CAfile", str(certs.ca), "-quiet"],
                         input="EHLO client.example\r\nQUIT\r\n", capture_output=True,
                         text=True, timeout=60)
    assert "250-PIPELINING" in out.stdout and "221 2.0.0 Bye" in out.stdout, out.stdout
    assert "verify return:1" in out.stderr
    assert len(server.maildir_files("alice")) == 1


def test_a_certificate_that_does_not_load_stops_startup(tmp_path: Path) -> None:
    from conftest import base_main_cf

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "main.cf").write_text(
        base_main_cf(tmp_path) + "smtpd_tls_security_level = may\n"
        f"smtpd_tls_cert_file = {tmp_path / 'missing.pem'}\n")
    done = subprocess.run([sys.executable, "-m", "mailgate.cli", "serve", "-c",
                           str(tmp_path / "etc")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert re.search(r"main\.cf, line \d+: cannot load the certificate .*missing\.pem", done.stderr), \
        done.stderr


def test_after_starttls_the_helo_is_forgotten(server_factory, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    """RFC 3207 4.2: the HELO given before TLS no longer counts; HELO restrictions then see
    none (they are skipped, as Postfix's helo_reset() leaves no name) until the next EHLO."""
    server = server_factory(**tls_settings(
        certs, smtpd_helo_restrictions="reject_invalid_helo_hostname",
        smtpd_helo_required="yes")).start()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        ehlo_words(smtp)
        smtp.starttls(context=client_context(certs))
        assert smtp.docmd("MAIL FROM:<a@client.example>") == \
            (503, b"5.5.1 Error: send HELO/EHLO first")
        ehlo_words(smtp)
        assert smtp.docmd("MAIL FROM:<a@client.example>")[0] == 250


def resumed_sessions(port: int, certs: Certs, count: int) -> list[bool]:
    """`count` STARTTLS sessions, each offering the TLS session of the first one."""
    ctx = client_context(certs)
    first: ssl.SSLSession | None = None
    out = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        f = sock.makefile("rb")
        read_reply(f)
        sock.sendall(b"EHLO client.example\r\nSTARTTLS\r\n")
        read_reply(f)
        read_reply(f)
        tls = ctx.wrap_socket(sock, server_hostname="mx.example.test", session=first)
        f = tls.makefile("rb")
        tls.sendall(b"NOOP\r\n")
        read_reply(f)  # (a TLS 1.3 ticket arrives after the handshake, before this reply)
        out.append(bool(tls.session_reused))
        if first is None:
            first = tls.session
        tls.sendall(b"QUIT\r\n")
        read_reply(f)
        tls.close()
    return out


def test_tls_sessions_resume_on_any_worker(server_factory, certs: Certs) -> None:  # type: ignore[no-untyped-def]
    """The workers share their session-ticket keys: a session resumes whichever worker
    the accept process hands the connection to (four workers, twelve connections)."""
    server = server_factory(**tls_settings(certs, smtpd_processes="4")).start()
    resumed = resumed_sessions(server.port, certs, 12)
    assert resumed == [False] + [True] * 11
