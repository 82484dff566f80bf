"""check_greylist end to end, real processes on loopback: `mailgate serve` greylisting a
first attempt and passing a retry (the state database seeded with a triplet first seen
long ago: no sleeping), and `mailgate policyd` answering as postgrey behind Postfix's
check_policy_service."""

from __future__ import annotations

import asyncio
import re
import smtplib
import socket
import time
from pathlib import Path

from conftest import Server, base_main_cf, wait_until
from mailgate.state import LocalStore
from support.policy import Policyd

GREYLISTED = ("Greylisted, see http://postgrey.schweikert.ch/help/example.test.html")
HEADER = re.compile(r"X-Greylist: delayed (\d+) seconds by mailgate-check_greylist at "
                    r"mx\.example\.test; \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \w+\n")


def seed(database: Path, key: str, age: int) -> None:
    """A triplet first (and last) seen `age` seconds ago, as a worker stored it."""
    store = LocalStore(str(database))
    seen = int(time.time()) - age
    try:
        asyncio.run(store.put("greylist:triplet:" + key, f"{seen},{seen}", 86400))
    finally:
        store.close()


def send(server: Server, sender: str, recipient: str) -> tuple[int, bytes]:
    """One message by smtplib: the RCPT reply (DATA only when RCPT was accepted)."""
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.example",
                      timeout=15) as smtp:
        smtp.ehlo()
        smtp.mail(sender)
        code, text = smtp.rcpt(recipient)
        if code == 250:
            smtp.data(b"Subject: greylisted\r\n\r\nbody\r\n")
        return code, text


def test_smtpd_greylists_then_accepts_with_the_header(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_recipient_restrictions="reject_unauth_destination, "
                                                         "check_greylist").start()
    sender, rcpt = "Someone+batch-77@Sender.Example", "alice@example.test"
    assert send(server, sender, rcpt) == (450, f"4.2.0 <{rcpt}>: Recipient address rejected: "
                                               f"{GREYLISTED}".encode())
    line = server.wait_log(r"NOQUEUE: reject: RCPT")[0]
    assert re.fullmatch(
        r"smtpd: NOQUEUE: reject: RCPT from \S+\[127\.0\.0\.1\]: 450 4\.2\.0 "
        rf"<{rcpt}>: Recipient address rejected: {re.escape(GREYLISTED)}; "
        rf"from=<{re.escape(sender)}> to=<{rcpt}> proto=ESMTP helo=<client\.example>", line)
    database = server.root / "data" / "data" / "state.db"  # $data_directory/state.db
    seed(database, "127.0.0.0/someone@sender.example/alice@example.test", 400)
    assert send(server, sender, rcpt)[0] == 250
    wait_until(lambda: bool(server.maildir_files("alice")))
    text = server.maildir_files("alice")[0].read_text()
    found = HEADER.search(text)  # prepended above smtpd's Received: header
    assert found is not None and 400 <= int(found.group(1)) < 460, text[:300]
    assert text[found.end():].startswith("Received: from client.example")
    assert send(server, sender, rcpt)[0] == 250  # the next message: known, no header
    wait_until(lambda: len(server.maildir_files("alice")) == 2)
    texts = [p.read_text() for p in server.maildir_files("alice")]
    assert sum("X-Greylist:" in t for t in texts) == 1


def request(instance: str) -> bytes:
    attrs = {"request": "smtpd_access_policy", "protocol_state": "RCPT",
             "protocol_name": "ESMTP", "client_address": "192.0.2.10",
             "client_name": "host.example", "reverse_client_name": "host.example",
             "helo_name": "host.example", "sender": "someone@mailgate.test",
             "recipient": "alice@example.test", "instance": instance}
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def answer(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def test_policyd_answers_as_postgrey(tmp_path: Path) -> None:
    daemon = Policyd(tmp_path, base_main_cf(tmp_path) + (
        "policyd_listen = 127.0.0.1:0\npolicyd_processes = 1\n"
        "policyd_restrictions = check_greylist\n")).start()
    try:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
            sock.sendall(request("1a.b.c"))
            assert answer(sock) == f"action=DEFER_IF_PERMIT 4.2.0 {GREYLISTED}"
            seed(tmp_path / "data" / "data" / "state.db",
                 "192.0.2.0/someone@mailgate.test/alice@example.test", 330)
            sock.sendall(request("2a.b.c"))
            action = answer(sock)
            assert action.startswith("action=PREPEND "), action
            assert HEADER.match(action[len("action=PREPEND "):] + "\n"), action
            sock.sendall(request("3a.b.c"))
            assert answer(sock) == "action=DUNNO"
    finally:
        daemon.stop()
    assert not [x for x in daemon.log() if x.startswith("warning:")]


def test_smtpd_asks_policyd_as_it_asked_postgrey(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The Postfix way: smtpd's check_policy_service asks `mailgate policyd`, which
    greylists; the reply and the header are the ones postgrey would have caused."""
    root = tmp_path / "policyd"
    daemon = Policyd(root, base_main_cf(root) + (
        "policyd_listen = 127.0.0.1:0\npolicyd_processes = 1\n"
        "policyd_restrictions = check_greylist\n")).start()
    try:
        server = server_factory(
            smtpd_recipient_restrictions="reject_unauth_destination, "
                                         f"check_policy_service inet:127.0.0.1:{daemon.port}"
        ).start()
        rcpt = "bob@example.test"
        assert send(server, "s@sender.example", rcpt) == (
            450, f"4.2.0 <{rcpt}>: Recipient address rejected: {GREYLISTED}".encode())
        seed(root / "data" / "data" / "state.db",
             "127.0.0.0/s@sender.example/bob@example.test", 301)
        assert send(server, "s@sender.example", rcpt)[0] == 250
        wait_until(lambda: bool(server.maildir_files("bob")))
        assert HEADER.search(server.maildir_files("bob")[0].read_text())
    finally:
        daemon.stop()
