"""Delivery before `250` (smtpd_direct_delivery, decision 0047): a message whose recipients
all go to local Maildirs is in their new/ directories, fsync'd, when the client hears `250`;
a recipient that fails there goes through the queue as before, with one `from=` line."""

from __future__ import annotations

import os
import re
import smtplib

from conftest import DOMAIN, Server, wait_until
from support.storage import fill, flush, queue_files, remount, tmpfs


def sendmail(server: Server, rcpts: list[str]) -> str:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("sender@client.test")
        for rcpt in rcpts:
            smtp.rcpt(rcpt)
        code, text = smtp.data(b"Subject: direct\r\n\r\nbody\r\n")
        assert code == 250, (code, text)
        return text.decode().rsplit(" ", 1)[1]


def lines_of(server: Server, qid: str) -> list[str]:
    return [line for line in server.log() if f" {qid}: " in f" {line}"]


def test_in_the_maildir_at_250(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory().start()
    qid = sendmail(server, ["alice@example.test", "bob@example.test"])
    # No waiting: the files were fsync'd into new/ before the reply.
    assert len(server.maildir_files("alice")) == 1 and len(server.maildir_files("bob")) == 1
    head = (b"Return-Path: <sender@client.test>\nX-Original-To: alice@example.test\n"
            b"Delivered-To: alice@example.test\n")
    data = server.maildir_files("alice")[0].read_bytes()
    assert data.startswith(head + b"Received: ") and f"id {qid}".encode() in data, data[:300]
    queued = data[len(head):]  # what a queue file would have held: Postfix's size counts CRLF
    size = len(queued) + queued.count(b"\n")
    server.wait_log(rf"^qmgr: {qid}: removed")
    queue = server.root / "data" / "queue"
    for name in ("incoming", "active", "deferred", "spare"):  # no queue file was ever made
        assert queue_files(queue, name) == [], name
    seen = [re.sub(r"delay=.*, dsn", "delay=D, dsn", line) for line in lines_of(server, qid)]
    assert seen[-4:] == [
        f"qmgr: {qid}: from=<sender@client.test>, size={size}"
        ", nrcpt=2 (queue active)",
        f"virtual: {qid}: to=<alice@example.test>, relay=virtual, delay=D, dsn=2.0.0, "
        "status=sent (delivered to maildir)",
        f"virtual: {qid}: to=<bob@example.test>, relay=virtual, delay=D, dsn=2.0.0, "
        "status=sent (delivered to maildir)",
        f"qmgr: {qid}: removed"], seen


def test_switched_off_the_queue_delivers(server_factory) -> None:  # type: ignore[no-untyped-def]
    """smtpd_direct_delivery = no: the message goes through a queue file, which the queue
    manager keeps as a spare once the message is delivered (decision 0044)."""
    server = server_factory(smtpd_direct_delivery="no").start()
    qid = sendmail(server, ["alice@example.test"])
    server.wait_log(rf"^qmgr: {qid}: removed")
    assert len(server.maildir_files("alice")) == 1
    assert len([x for x in lines_of(server, qid) if "from=<" in x]) == 1
    assert len(queue_files(server.root / "data" / "queue", "spare")) == 1


def test_a_failing_recipient_goes_through_the_queue(server_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """alice's Maildir takes the message at once, bob's is on a read-only file system: bob
    is deferred from the queue (alice is not delivered twice), then delivered after a flush;
    one `from=` line, as Postfix logs one per attempt."""
    mail = tmp_path / "mail"
    bob = mail / DOMAIN / "bob"
    with tmpfs(bob, "1m"):
        server = server_factory(virtual_mailbox_base=str(mail)).start()
        remount(bob, "ro")
        try:
            qid = sendmail(server, ["alice@example.test", "bob@example.test"])
            assert len(os.listdir(mail / DOMAIN / "alice" / "new")) == 1
            hits = server.wait_log(rf"{qid}: to=<bob@example.test>.*status=deferred")
        finally:
            remount(bob, "rw")
        assert "dsn=4.2.0" in hits[0] and "Read-only file system" in hits[0]
        queue = server.root / "data" / "queue"
        wait_until(lambda: queue_files(queue, "deferred") == [qid])
        flush(server)
        server.wait_log(rf"{qid}: to=<bob@example.test>.*status=sent")
        server.wait_log(rf"qmgr: {qid}: removed")
        assert len(os.listdir(mail / DOMAIN / "alice" / "new")) == 1
        assert len(os.listdir(bob / "new")) == 1
        lines = lines_of(server, qid)
        assert len([x for x in lines if "to=<alice@" in x]) == 1
        froms = [x for x in lines if "from=<" in x]
        assert len(froms) == 2 and all("nrcpt=2 (queue active)" in x for x in froms), froms
        assert os.listdir(bob / "tmp") == []
        server.stop()


def test_full_disk_tries_the_queue_then_451(server_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Maildir and queue on one full file system: the Maildir copy fails (and leaves no
    trace), the queue file too: `451`, nothing delivered, nothing left."""
    disk = tmp_path / "disk"
    with tmpfs(disk, "1m"):
        mail, queue = disk / "mail", disk / "queue"
        server = server_factory(queue_directory=str(queue), virtual_mailbox_base=str(mail),
                                message_size_limit="400000").start()
        sendmail(server, ["alice@example.test"])  # makes the Maildir
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            assert smtp.mail("sender@client.test")[0] == 250
            assert smtp.rcpt("alice@example.test")[0] == 250
            fill(disk, 50_000)  # someone else takes the space between MAIL and DATA
            code, text = smtp.data(b"Subject: big\r\n\r\n" + b"z" * 78 * 2500 + b"\r\n")
        assert (code, text) == (451, b"4.3.0 Error: queue file write error")
        alice = mail / DOMAIN / "alice"
        assert len(os.listdir(alice / "new")) == 1 and os.listdir(alice / "tmp") == []
        assert queue_files(queue, "active") == [] and queue_files(queue, "incoming") == []
        assert any("write queue file: No space left on device" in x for x in server.log())
        server.stop()
