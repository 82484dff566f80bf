"""Policy delegation end to end, real processes on loopback: mailgate's smtpd asking
`mailgate policyd` and the scripted policy server (slow, closing, crashing), and
`mailgate policyd` answering raw protocol requests."""

from __future__ import annotations

import email
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Client, Server, base_main_cf, wait_until
from support.policy import Policyd, Scripted

UNKNOWN = "451 4.3.5 <{}>: Recipient address rejected: Server configuration problem"


def rcpt(server: Server, recipient: str, client: str = "", sender: str = "s@sender.example"
         ) -> str:
    """The RCPT reply of one session (XCLIENT ADDR=client first when given)."""
    c = Client(server.port, timeout=30)
    try:
        c.reply()
        c.cmd("EHLO client.example")
        if client:
            assert c.cmd(f"XCLIENT ADDR={client} NAME=host.example").startswith("220")
            c.cmd("EHLO client.example")
        c.cmd(f"MAIL FROM:<{sender}>")
        reply = c.cmd(f"RCPT TO:<{recipient}>")
        if reply.startswith("250"):
            assert c.cmd("DATA").startswith("354")
            c.send("Subject: policy\r\n\r\nbody\r\n.")
            assert c.reply().startswith("250")
        c.cmd("QUIT")
        return reply
    finally:
        c.close()


@pytest.fixture
def scripted(tmp_path: Path) -> Iterator[Scripted]:
    server = Scripted(tmp_path / "scripted").start()
    yield server
    server.stop()


def smtpd_with(server_factory, service: str, **extra: str) -> Server:  # type: ignore[no-untyped-def]
    return server_factory(  # type: ignore[no-any-return]
        smtpd_recipient_restrictions=f"check_policy_service {service}, permit_mynetworks, "
                                     "reject_unauth_destination",
        smtpd_authorized_xclient_hosts="127.0.0.0/8",
        smtpd_policy_service_timeout="1s", **extra).start()


def warnings(server: Server) -> list[str]:
    return [x for x in server.smtpd_log() if x.startswith("warning: ")]


# --- mailgate smtpd -> mailgate policyd ------------------------------------------------------

def test_smtpd_asks_mailgate_policyd(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    policyd = Policyd(tmp_path / "policyd", base_main_cf(tmp_path / "policyd") + (
        "policyd_listen = 127.0.0.1:0\n"
        "policyd_restrictions = check_client_access inline:{{192.0.2.66=REJECT spam source}}, "
        "check_recipient_access inline:{{bob@example.test=PREPEND X-Policy: tagged}, "
        "{postmaster@example.test=DEFER_IF_PERMIT not now}}\n")).start()
    try:
        server = smtpd_with(server_factory, f"inet:127.0.0.1:{policyd.port}")
        assert rcpt(server, "alice@example.test", client="192.0.2.66") == \
            "554 5.7.1 <alice@example.test>: Recipient address rejected: spam source"
        assert rcpt(server, "postmaster@example.test", client="192.0.2.10") == \
            "450 4.7.1 <postmaster@example.test>: Recipient address rejected: not now"
        assert rcpt(server, "bob@example.test", client="192.0.2.10").startswith("250")
        assert rcpt(server, "alice@example.test", client="192.0.2.10").startswith("250")
        wait_until(lambda: bool(server.maildir_files("bob")) and
                   bool(server.maildir_files("alice")))
        bob = email.message_from_bytes(server.maildir_files("bob")[0].read_bytes())
        alice = email.message_from_bytes(server.maildir_files("alice")[0].read_bytes())
        assert bob["X-Policy"] == "tagged" and alice["X-Policy"] is None
        wait_until(lambda: any("reject: RCPT from host.example[192.0.2.66]" in x
                               for x in policyd.log()))
    finally:
        policyd.stop()


# --- mailgate smtpd -> misbehaving policy servers --------------------------------------------

def test_slow_server_gets_the_default_action(server_factory, scripted: Scripted) -> None:  # type: ignore[no-untyped-def]
    scripted.set_rules([["RCPT", "recipient", "alice@example.test", "@sleep 3"]])
    server = smtpd_with(server_factory, scripted.endpoint)
    assert rcpt(server, "alice@example.test") == UNKNOWN.format("alice@example.test")
    endpoint = f"127.0.0.1:{scripted.port}"
    assert warnings(server)[-2:] == [
        f"warning: problem talking to server {endpoint}: Connection timed out"] * 2
    assert len(scripted.requests()) == 2  # try_limit 2: asked again on a new connection
    assert rcpt(server, "bob@example.test").startswith("250")  # the service is used again


def test_per_service_overrides(server_factory, scripted: Scripted) -> None:  # type: ignore[no-untyped-def]
    scripted.set_rules([["RCPT", "recipient", "alice@example.test", "@sleep 3"]])
    server = smtpd_with(server_factory, f"{{ {scripted.endpoint}, try_limit=1, "
                                         "default_action=DUNNO, policy_context=gateway }")
    assert rcpt(server, "alice@example.test").startswith("250")  # DUNNO, then permit_mynetworks
    requests = scripted.requests()
    assert len(requests) == 1 and requests[0]["attrs"]["policy_context"] == "gateway"


def test_closed_connection_is_retried_quietly(server_factory, scripted: Scripted) -> None:  # type: ignore[no-untyped-def]
    scripted.set_rules([["RCPT", "recipient", "alice@example.test", "@first:@close"]],
                       default="DUNNO")
    server = smtpd_with(server_factory, scripted.endpoint)
    assert rcpt(server, "alice@example.test").startswith("250")
    requests = scripted.requests()
    assert len(requests) == 2 and requests[0]["conn"] != requests[1]["conn"]
    assert not warnings(server)  # an EOF on the first try is not worth a warning (Postfix)


def test_crashing_server_and_reconnection(server_factory, scripted: Scripted) -> None:  # type: ignore[no-untyped-def]
    scripted.set_rules([["RCPT", "recipient", "bob@example.test", "@crash"]])
    server = smtpd_with(server_factory, scripted.endpoint)
    assert rcpt(server, "alice@example.test").startswith("250")
    assert rcpt(server, "bob@example.test") == UNKNOWN.format("bob@example.test")
    assert scripted.wait_exit() == 3
    endpoint = f"127.0.0.1:{scripted.port}"
    assert warnings(server)[-2:] == [
        f"warning: connect to {endpoint}: Connection refused",
        f"warning: problem talking to server {endpoint}: Connection refused"]
    scripted.set_rules([])
    scripted.start()  # the same port: the next request connects again
    assert rcpt(server, "bob@example.test").startswith("250")


def test_request_limit_and_unix_socket(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    unix = Scripted(tmp_path / "unix", unix=tmp_path / "policy.sock").start()
    try:
        server = smtpd_with(server_factory, f"{{ {unix.endpoint}, request_limit=1 }}")
        for user in ("alice", "bob"):
            assert rcpt(server, f"{user}@example.test").startswith("250")
        conns = [x["conn"] for x in unix.requests()]
        assert len(conns) == 2 and conns[0] != conns[1]
    finally:
        unix.stop()


def test_bad_service_stops_start_up(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    base = base_main_cf(tmp_path)
    line = base.count("\n") + 1  # the restriction list's first line
    (etc / "main.cf").write_text(base + (
        "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,\n"
        "    check_policy_service { inet:127.0.0.1:9, bogus=1 }\n"))
    proc = subprocess.run([sys.executable, "-m", "mailgate.cli", "serve", "-c", str(etc)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f'{etc / "main.cf"}, line {line}: unknown option: "bogus = 1"' in proc.stderr


# --- mailgate policyd over the raw protocol ----------------------------------------------

def request(**attrs: str) -> bytes:
    base = {"request": "smtpd_access_policy", "protocol_state": "RCPT",
            "protocol_name": "ESMTP", "client_address": "192.0.2.10",
            "client_name": "host.example", "reverse_client_name": "host.example",
            "helo_name": "host.example", "sender": "someone@mailgate.test",
            "recipient": "alice@example.test"}
    base.update(attrs)
    return "".join(f"{k}={v}\n" for k, v in base.items()).encode() + b"\n"


def answers(sock: socket.socket, count: int) -> list[str]:
    data = b""
    while data.count(b"\n\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [x.decode() for x in data.split(b"\n\n") if x]


@pytest.fixture
def policyd(tmp_path: Path) -> Iterator[Policyd]:
    daemon = Policyd(tmp_path, base_main_cf(tmp_path) + (
        "policyd_listen = 127.0.0.1:0\n"
        "policyd_restrictions = reject_unknown_sender_domain, reject_unlisted_recipient, "
        "check_client_access inline:{192.0.2.66=REJECT}\n"
        "smtpd_soft_error_limit = 2\nsmtpd_hard_error_limit = 3\n"
        "smtpd_error_sleep_time = 0s\n")).start()
    yield daemon
    daemon.stop()


def test_policyd_protocol(policyd: Policyd) -> None:
    """Several requests in one write, unknown attributes, a malformed request, a request
    of another type: each answered in order, the bad ones with the default action."""
    with socket.create_connection(("127.0.0.1", policyd.port), timeout=10) as sock:
        sock.sendall(request() + request(client_address="192.0.2.66", future_attr="x")
                     + b"no equals sign here\n\n" + request(request="other")
                     + request(recipient="nobody@example.test"))
        assert answers(sock, 5) == [
            "action=DUNNO",
            "action=554 5.7.1 Access denied",
            "action=DUNNO", "action=DUNNO",
            "action=550 5.1.1 User unknown in virtual mailbox table"]
    wait_until(lambda: any('unrecognized request type from 127.0.0.1:' in x and '"other"' in x
                           for x in policyd.log()))
    assert any("malformed policy request from 127.0.0.1:" in x for x in policyd.log())


def test_policyd_dictionary_attack(policyd: Policyd) -> None:
    """Recipient rejections are counted per client address across connections: at the
    hard limit every request of that client gets 421 (Postfix then disconnects)."""
    unknown = "action=550 5.1.1 User unknown in virtual mailbox table"
    for i in range(3):
        with socket.create_connection(("127.0.0.1", policyd.port), timeout=10) as sock:
            sock.sendall(request(client_address="192.0.2.99", recipient=f"u{i}@example.test"))
            assert answers(sock, 1) == [unknown]
    with socket.create_connection(("127.0.0.1", policyd.port), timeout=10) as sock:
        sock.sendall(request(client_address="192.0.2.99")
                     + request(client_address="192.0.2.98"))
        assert answers(sock, 2) == ["action=421 4.7.0 Error: too many errors", "action=DUNNO"]


def test_slow_dns_answer_delays_no_other_request(tmp_path: Path) -> None:
    """A request waiting for a DNS answer that never comes holds only its own connection;
    past the deadline it gets the default action."""
    daemon = Policyd(tmp_path, base_main_cf(tmp_path).replace(
        "resolver_timeout = 1s", "resolver_timeout = 5s") + (
        "policyd_listen = 127.0.0.1:0\n"
        "policyd_restrictions = reject_unknown_sender_domain\n"
        "policyd_reply_deadline = 1s\n")).start()
    try:
        slow = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        fast = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        slow.sendall(request(sender="x@timeout.mailgate.test"))
        fast.sendall(request(sender="someone@nxdomain.mailgate.test"))
        assert answers(fast, 1)[0].startswith("action=450 4.1.8 ")
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):
            slow.recv(1)  # still unanswered when the other request was answered
        slow.setblocking(True)
        assert answers(slow, 1) == ["action=DUNNO"]
        wait_until(lambda: any("no answer within 1s" in x for x in daemon.log()))
        slow.close()
        fast.close()
    finally:
        daemon.stop()
