"""Full disks and broken storage: queue and Maildir on small tmpfs mounts (issue 17, part 4).

Needs root (mount -t tmpfs); skipped with the reason otherwise. Every mount is undone in a
finally block.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DOMAIN, Client, wait_until
from mailgate.queue.space import FsSpace, insufficient, minfree_warning
from mailgate.queue.store import CorruptQueueFile, Envelope, QueueStore, Recipient, parse
from support.storage import fill, flush, free_bytes, queue_files, remount, tmpfs

NO_SPACE = "452 4.3.1 Insufficient system storage"
WRITE_ERROR = "451 4.3.0 Error: queue file write error"


def send(port: int, rcpt: str, body_bytes: int) -> str:
    """One message; returns its queue id from the 250 reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        line = b"y" * 78 + b"\r\n"
        body = b"Subject: storage\r\n\r\n" + line * (body_bytes // len(line))
        smtp.ehlo("client.test")
        smtp.mail("sender@client.test")
        smtp.rcpt(rcpt)
        code, text = smtp.data(body)
        assert code == 250, (code, text)
        return text.decode().rsplit(" ", 1)[1]


# --- the formula, without a server ------------------------------------------------------
def test_minfree_formula_is_postfix_arithmetic() -> None:
    # smtpd_check_queue(): minfree/bsize >= free || limit/bsize >= free/1.5 (integer division
    # of the parameters, floating point for the free blocks)
    assert insufficient(FsSpace(4096, 0), 0, 0)  # a full file system always fails
    assert not insufficient(FsSpace(4096, 1), 0, 0)
    assert insufficient(FsSpace(4096, 100), 100 * 4096, 0)
    assert not insufficient(FsSpace(4096, 100), 100 * 4096 - 1, 0)  # 99 < 100
    assert insufficient(FsSpace(4096, 150), 0, 100 * 4096)  # 100 >= 150/1.5
    assert not insufficient(FsSpace(4096, 151), 0, 100 * 4096)
    assert minfree_warning(1000, 10240000) == \
        "queue_minfree(1000) should be at least 1.5*message_size_limit(10240000)"
    assert minfree_warning(0, 10240000) is None
    assert minfree_warning(15360000, 10240000) is None


def test_corrupt_queue_files_are_recognized() -> None:
    good = Envelope("ABCDE1", "s@x.test", [Recipient("r@x.test")], 1.0)
    header = good.to_json()
    full = b"MGQ1 %d 5\n%s\nhello" % (len(header), header)
    assert parse(full)[1] == b"hello"
    assert parse(b"MGQ1 %d\n%s\nhello" % (len(header), header))[1] == b"hello"  # old files
    cases = {b"": "missing end record", b"MGQ": "missing end record",
             full[:-2]: "missing end record", full[:30]: "missing end record",
             b"\x00" * 100: "bad queue file magic", b"From x\n": "bad queue file magic",
             b"MGQ1 x\n": "bad queue file header",
             b"MGQ1 2 0\n{}\n": "bad envelope record",
             b"MGQ1 4 0\n[1]\n\n": "bad envelope record"}
    for data, reason in cases.items():
        with pytest.raises(CorruptQueueFile, match=re.escape(reason)):
            parse(data)


# --- queue_minfree at MAIL ---------------------------------------------------------------
def test_full_queue_gets_452_at_mail_then_recovers(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    queue = tmp_path / "queue"
    with tmpfs(queue, "1m"):
        # 1.5 * 400000 = 600000 bytes needed: fine on the empty 1 MiB file system
        server = server_factory(queue_directory=str(queue), message_size_limit="400000",
                                smtpd_hard_error_limit="3").start()
        client = Client(server.port)
        assert client.reply().startswith("220 ")
        client.cmd("EHLO client.test")
        assert client.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Ok"
        assert client.cmd("RSET").startswith("250")
        filler = fill(queue, 500_000)
        free = free_bytes(queue)
        assert client.cmd("MAIL FROM:<a@client.test> SIZE=1000") == NO_SPACE
        # the size limit is checked first, as in Postfix
        assert client.cmd("MAIL FROM:<a@client.test> SIZE=500000").startswith("552 5.3.4")
        filler.unlink()
        assert client.cmd("RSET").startswith("250")  # Postfix keeps a refused SIZE= till RSET
        assert client.cmd("MAIL FROM:<a@client.test>") == "250 2.1.0 Ok"
        client.close()
        lines = server.smtpd_log()
        reject = ("NOQUEUE: reject: MAIL from localhost[127.0.0.1]: 452 4.3.1 Insufficient "
                  "system storage; proto=ESMTP helo=<client.test>")
        warning = (f"warning: not enough free space in mail queue: {free} bytes < "
                   "1.5*message size limit")
        assert lines[lines.index(reject) + 1] == warning
        wait_until(lambda: any("disconnect from" in x for x in server.smtpd_log()))
        assert "mail=2/4" in server.smtpd_log()[-1]

        # every 452 is an error: smtpd_hard_error_limit = 3 ends the session
        fill(queue, 500_000)
        client = Client(server.port)
        client.reply()
        client.cmd("EHLO client.test")
        for _ in range(3):
            assert client.cmd("MAIL FROM:<a@client.test>") == NO_SPACE
        assert client.cmd("NOOP") == "421 4.7.0 mx.example.test Error: too many errors"
        client.close()
        server.stop()


def test_disk_full_during_data_gets_451_and_leaves_nothing(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    queue = tmp_path / "queue"
    with tmpfs(queue, "1m"):
        server = server_factory(queue_directory=str(queue), message_size_limit="400000",
                                smtpd_direct_delivery="no").start()  # a queued message
        client = Client(server.port)
        client.reply()
        client.cmd("EHLO client.test")
        assert client.cmd("MAIL FROM:<a@client.test>").startswith("250")
        assert client.cmd("RCPT TO:<alice@example.test>").startswith("250")
        fill(queue, 50_000)  # someone else takes the space between MAIL and DATA
        assert client.cmd("DATA").startswith("354")
        client.send(b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 2500 + b".\r\n")
        assert client.reply() == WRITE_ERROR
        assert client.cmd("QUIT").startswith("221")
        client.close()
        lines = server.log()
        qid = next(m.group(1) for x in lines if (m := re.match(r"smtpd: (\w+): client=", x)))
        assert f"cleanup: warning: {qid}: write queue file: No space left on device" in lines
        wait_until(lambda: any("disconnect from" in x for x in server.smtpd_log()))
        assert "data=0/1" in server.smtpd_log()[-1]
        for name in ("incoming", "active", "deferred", "hold"):
            assert queue_files(queue, name) == [], name
        server.stop()
        assert server.maildir_files("alice") == []


# --- Maildir failures defer; the message is delivered once space returns -----------------
def test_full_disk_defers_and_delivers_once_after_space_returns(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Queue and Maildir share one full file system: the delivery fails, the deferral cannot
    rewrite the queue file either; the message still goes to deferred/ (it used to stay in
    active/ until a restart) and is delivered once after a flush."""
    disk = tmp_path / "disk"
    with tmpfs(disk, "1m"):
        queue = disk / "queue"
        server = server_factory(queue_directory=str(queue), virtual_mailbox_base=str(disk / "mail"),
                                message_size_limit="300000",
                                smtpd_direct_delivery="no").start()  # the queue's own path
        filler = fill(disk, 500_000)
        qid = send(server.port, "alice@example.test", 270_000)
        hits = server.wait_log(rf"{qid}: to=<alice@example.test>.*status=deferred")
        assert "dsn=4.3.0" in hits[0]
        assert "(maildir delivery failed: error writing message: No space left on device)" \
            in hits[0]
        server.wait_log(rf"qmgr: warning: {qid}: cannot update queue file: No space left")
        wait_until(lambda: queue_files(queue, "deferred") == [qid])
        assert queue_files(queue, "active") == []
        alice = disk / "mail" / DOMAIN / "alice"
        assert os.listdir(alice / "tmp") == [] and os.listdir(alice / "new") == []
        filler.unlink()
        flush(server)
        server.wait_log(rf"{qid}: to=<alice@example.test>.*status=sent")
        server.wait_log(rf"qmgr: {qid}: removed")
        assert len(os.listdir(alice / "new")) == 1
        assert not any("status=bounced" in x or "non-delivery" in x for x in server.log())
        server.stop()


def test_readonly_maildir_defers_then_delivers(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mail = tmp_path / "mail"
    with tmpfs(mail, "1m"):
        server = server_factory(virtual_mailbox_base=str(mail)).start()
        remount(mail, "ro")
        try:
            qid = send(server.port, "bob@example.test", 1000)
            hits = server.wait_log(rf"{qid}: to=<bob@example.test>.*status=deferred")
        finally:
            remount(mail, "rw")
        assert "dsn=4.2.0" in hits[0]
        assert re.search(r"\(maildir delivery failed: create maildir file "
                         rf"{re.escape(str(mail))}/{DOMAIN}/bob/tmp/\S+: Read-only file "
                         r"system\)", hits[0]), hits[0]
        queue = server.root / "data" / "queue"
        wait_until(lambda: queue_files(queue, "deferred") == [qid])
        shown = subprocess.run([sys.executable, "-m", "mailgate.cli", "queue", "list", "--json",
                                "-c", str(server.root / "etc")], capture_output=True,
                               text=True, check=True).stdout
        assert "Read-only file system" in json.loads(shown)["recipients"][0]["delay_reason"]
        flush(server)
        server.wait_log(rf"{qid}: to=<bob@example.test>.*status=sent")
        assert len(os.listdir(mail / DOMAIN / "bob" / "new")) == 1
        server.stop()


# --- corrupt queue files ----------------------------------------------------------------
def test_corrupt_queue_files_are_moved_aside(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(queue_run_delay="1s")
    queue = server.root / "data" / "queue"
    store = QueueStore(queue, fsync=False)
    good = store.submit(Envelope("", "s@client.test", [Recipient("alice@example.test")], time.time()),
                        b"Subject: survivor\n\nhello\n")
    store.release(good)  # made here, delivered there: the server must be able to claim it
    truncated = (queue / "active" / good).read_bytes()[:-3]
    bad = {"AAAAA100001": b"", "AAAAA100002": b"\x00garbage\xff" * 50,
           "AAAAA100003": b"MGQ9 12\n{}\n", "AAAAA100004": truncated}
    for name, data in bad.items():
        (queue / "active" / name).write_bytes(data)
    (queue / "deferred" / "AAAAA100005").write_bytes(b"not a queue file")
    server.start()
    server.wait_log(rf"qmgr: {good}: removed")
    for name, queue_name in [*((n, "active") for n in bad), ("AAAAA100005", "deferred")]:
        lines = server.wait_log(rf'saving corrupt file "{name}" from queue "{queue_name}" '
                                r'to queue "corrupt"')
        assert lines == [f'qmgr: warning: saving corrupt file "{name}" from queue '
                         f'"{queue_name}" to queue "corrupt"']
    log = server.log()
    assert "qmgr: warning: AAAAA100001: message rejected: missing end record" in log
    assert "qmgr: warning: AAAAA100003: message rejected: bad queue file magic" in log
    assert "qmgr: warning: AAAAA100004: message rejected: missing end record" in log
    assert sorted(queue_files(queue, "corrupt")) == sorted([*bad, "AAAAA100005"])
    assert (queue / "corrupt" / "AAAAA100004").read_bytes() == truncated  # kept as found
    # the queue manager lives on: a corrupt file dropped into deferred/ while it runs, and
    # a due deferred message picked up by its next queue run, and new mail
    (queue / "deferred" / "AAAAA100006").write_bytes(b"MGQ1 999\n{")
    due = store.submit(Envelope("", "s@client.test", [Recipient("bob@example.test")], time.time()),
                       b"Subject: retried\n\nhello\n")
    store.move(due, "active", "deferred")
    owner = (queue / "deferred").stat()  # made as the queue's owner (mail_owner) makes it
    os.chown(queue / "deferred" / due, owner.st_uid, owner.st_gid)
    store.release(due)
    server.wait_log(r'saving corrupt file "AAAAA100006" from queue "deferred"')
    server.wait_log(rf"qmgr: {due}: removed")
    qid = send(server.port, "alice@example.test", 100)
    server.wait_log(rf"qmgr: {qid}: removed")
    assert len(server.maildir_files("alice")) == 2 and len(server.maildir_files("bob")) == 1
    server.stop()



def test_minfree_below_one_and_a_half_messages_is_warned_at_start(server_factory) -> None:  # type: ignore[no-untyped-def]
    """Each Postfix smtpd logs this when it starts (checked live); a worker, once."""
    server = server_factory(queue_minfree="1000", smtpd_processes="1").start()
    assert server.wait_log(r"^smtpd: warning: queue_minfree") == [
        "smtpd: warning: queue_minfree(1000) should be at least "
        "1.5*message_size_limit(10240000)"]
