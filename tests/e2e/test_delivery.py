"""Real clients send real mail over loopback; it lands in Maildirs and the log says so."""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from conftest import HOSTNAME, Server, require


def _message(subject: str = "hello", to: str = "alice@example.test") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@remote.example"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Body line\n.leading dot line\n")
    return msg


def test_smtplib_message_is_delivered_with_postfix_headers(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.example") as smtp:
        code, text = smtp.ehlo()
        assert code == 250 and b"PIPELINING" in text and b"SIZE 10240000" in text
        refused = smtp.send_message(_message(), to_addrs=["alice@example.test", "bob@example.test"])
        assert refused == {}
    server.wait_log(r"qmgr: [0-9A-F]+: removed")
    server.wait_log(r"smtpd: disconnect from ")  # written after the 221: the client may be first
    (alice,) = server.maildir_files("alice")
    (bob,) = server.maildir_files("bob")
    text = alice.read_text()
    assert text.startswith("Return-Path: <sender@remote.example>\nX-Original-To: "
                           "alice@example.test\nDelivered-To: alice@example.test\nReceived: "
                           "from client.example (localhost [127.0.0.1])\n\tby mx.example.test "
                           "(mailgate) with ESMTP id ")
    assert "\n.leading dot line\n" in text
    assert bob.read_text().count("Delivered-To: bob@example.test") == 1
    log = server.log()
    qid = next(line.split()[1].rstrip(":") for line in log if "client=localhost" in line)
    assert f"smtpd: {qid}: client=localhost[127.0.0.1]" in log
    assert any(line.startswith(f"qmgr: {qid}: from=<sender@remote.example>, size=") and
               line.endswith(", nrcpt=2 (queue active)") for line in log)
    sent = [line for line in log if f"{qid}: to=<" in line]
    assert len(sent) == 2 and all("relay=virtual, delay=" in line and
                                  "dsn=2.0.0, status=sent (delivered to maildir)" in line
                                  for line in sent)
    assert "smtpd: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=2 data=1 quit=1 " \
           "commands=6" in server.log()


def test_aiosmtplib_pipelined_transaction_and_local_delivery(server: Server) -> None:
    async def send() -> tuple[dict[str, object], str]:
        return await aiosmtplib.send(_message("pipelined", "postmaster@localhost"),
                                     hostname="127.0.0.1", port=server.port,
                                     recipients=["postmaster@localhost", "alice@localhost"])

    errors, reply = asyncio.run(send())
    assert errors == {} and reply.startswith("2.0.0 Ok: queued as ")
    server.wait_log(r"removed")
    for user in ("postmaster", "alice"):
        (path,) = (server.mail / user / "Maildir" / "new").iterdir()
        assert "Subject: pipelined" in path.read_text()
    assert any("relay=local" in line and "status=sent" in line for line in server.log())


def test_swaks_sends_to_postmaster(server: Server) -> None:
    swaks = require("swaks")
    out = subprocess.run([swaks, "--to", "postmaster@example.test", "--server",
                          f"127.0.0.1:{server.port}", "--helo", "swaks.example"],
                         capture_output=True, text=True, timeout=60)
    assert "<-  250 2.0.0 Ok: queued as " in out.stdout, out.stdout + out.stderr
    server.wait_log("removed")
    assert len(server.maildir_files("postmaster")) == 1


def test_smtp_source_burst_all_delivered(server: Server) -> None:
    source = require("smtp-source")
    subprocess.run([source, "-s", "5", "-m", "50", "-l", "1024", "-f", "load@remote.example",
                    "-t", "bob@example.test", f"127.0.0.1:{server.port}"],
                   check=True, timeout=120)
    server.wait_log("removed", count=50, timeout=60)
    assert len(server.maildir_files("bob")) == 50


def test_message_ids_and_missing_headers_for_local_clients(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as smtp:
        smtp.sendmail("a@b.example", ["alice@example.test"], b"no headers at all\r\n")
    server.wait_log("removed")
    (path,) = server.maildir_files("alice")
    text = path.read_text()
    assert "\nMessage-Id: <" in text and f"@{HOSTNAME}>\nDate: " in text
    assert "\nFrom: a@b.example\n\nno headers at all\n" in text
    assert any(" message-id=<" in line for line in server.log() if line.startswith("cleanup:"))


def test_unknown_virtual_user_rejected_as_postfix(connect, server: Server) -> None:  # type: ignore[no-untyped-def]
    client = connect()
    client.cmd("EHLO x")
    client.cmd("MAIL FROM:<s@remote.example>")
    reply = client.cmd("RCPT TO:<nosuch@example.test>")
    assert reply == ("550 5.1.1 <nosuch@example.test>: Recipient address rejected: User unknown "
                     "in virtual mailbox table")
    client.cmd("QUIT")
    server.wait_log("disconnect")
    assert ("NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 550 5.1.1 <nosuch@example.test>: "
            "Recipient address rejected: User unknown in virtual mailbox table; "
            "from=<s@remote.example> to=<nosuch@example.test> proto=ESMTP helo=<x>"
            ) in server.smtpd_log()


def test_maildir_path_is_relative_to_base(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory().start()
    with smtplib.SMTP("127.0.0.1", server.port) as smtp:
        smtp.sendmail("a@b.example", ["bob@example.test"], b"Subject: s\r\n\r\nx\r\n")
    server.wait_log("removed")
    assert (server.mail / "example.test" / "bob" / "new").is_dir()
    assert (server.mail / "example.test" / "bob" / "cur").is_dir()
    assert (server.mail / "example.test" / "bob" / "tmp").is_dir()


def _rcpt_reply(port: int, rcpt: str) -> str:
    from conftest import Client

    client = Client(port)
    try:
        client.reply()
        client.cmd("EHLO x")
        client.cmd("MAIL FROM:<s@remote.example>")
        return client.cmd(f"RCPT TO:<{rcpt}>")
    finally:
        client.cmd("QUIT")
        client.close()


def _wait_for_reply(port: int, rcpt: str, prefix: str, timeout: float = 10.0) -> str:
    import time

    deadline = time.monotonic() + timeout
    while True:  # bounded: the table is re-read within a second of the change
        reply = _rcpt_reply(port, rcpt)
        if reply.startswith(prefix) or time.monotonic() > deadline:
            return reply
        time.sleep(0.1)


def test_edited_texthash_table_is_used_without_restart(server: Server) -> None:
    assert _rcpt_reply(server.port, "carol@example.test").startswith("550 5.1.1 ")
    vmailbox = server.root / "etc" / "vmailbox"
    vmailbox.write_text(vmailbox.read_text() + "carol@example.test example.test/carol/\n")
    assert _wait_for_reply(server.port, "carol@example.test", "250") == "250 2.1.5 Ok"


def test_rebuilt_hash_table_is_used_without_restart(server_factory) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    server = server_factory()
    source = server.root / "etc" / "users"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("alice@example.test example.test/alice/\n")
    subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", f"hash:{source}"],
                   check=True, timeout=60)
    server.extra["virtual_mailbox_maps"] = f"hash:{source}"
    server.start()
    assert _rcpt_reply(server.port, "dave@example.test").startswith("550 5.1.1 ")
    source.write_text(source.read_text() + "dave@example.test example.test/dave/\n")
    subprocess.run([sys.executable, "-m", "mailgate.cli", "postmap", f"hash:{source}"],
                   check=True, timeout=60)
    assert _wait_for_reply(server.port, "dave@example.test", "250") == "250 2.1.5 Ok"
    assert _rcpt_reply(server.port, "alice@example.test") == "250 2.1.5 Ok"
