"""Access actions that change the queued message: HOLD, DISCARD, REDIRECT, BCC, PREPEND,
FILTER; and `mailgate check` for administrators."""

from __future__ import annotations

import smtplib
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from conftest import DNS_SERVER, Server

ACTIONS = ("check_sender_access inline:{{held@remote.example=HOLD}, "
           "{gone@remote.example=DISCARD}, {moved@remote.example=REDIRECT bob@example.test}, "
           "{copied@remote.example=BCC postmaster@example.test}, "
           "{tagged@remote.example=PREPEND X-Tagged: yes}, "
           "{filtered@remote.example=FILTER smtp:[127.0.0.1]:10025}}")


def _send(server: Server, sender: str) -> None:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "alice@example.test"
    msg["Subject"] = sender
    msg.set_content("body\n")
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.example") as smtp:
        smtp.send_message(msg, from_addr=sender, to_addrs=["alice@example.test"])


def test_actions_change_the_queued_message(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_sender_restrictions=ACTIONS).start()
    _send(server, "gone@remote.example")  # the whole message is dropped
    server.wait_log(r"smtpd: NOQUEUE: discard: RCPT from .*<gone@remote.example>: Sender "
                    r"address triggers DISCARD action")
    _send(server, "moved@remote.example")  # all recipients become bob
    _send(server, "copied@remote.example")  # postmaster gets a copy
    _send(server, "tagged@remote.example")
    server.wait_log(r"qmgr: [0-9A-F]+: removed", count=3)
    assert [p.read_text().count("Subject: moved@") for p in server.maildir_files("bob")] == [1]
    assert len(server.maildir_files("postmaster")) == 1
    alice = [p.read_text() for p in server.maildir_files("alice")]
    assert len(alice) == 2  # copied + tagged: nothing for the discarded or redirected ones
    tagged = next(t for t in alice if "Subject: tagged@" in t)
    assert tagged.index("X-Tagged: yes\n") < tagged.index("Received: from client.example")
    _send(server, "held@remote.example")
    server.wait_log(r"smtpd: NOQUEUE: hold: RCPT from .*<held@remote.example>: Sender "
                    r"address triggers HOLD action")
    assert len(list((server.root / "data" / "queue" / "hold").iterdir())) == 1
    _send(server, "filtered@remote.example")
    server.wait_log(r"smtpd: NOQUEUE: filter: RCPT from .* triggers FILTER "
                    r"smtp:\[127.0.0.1\]:10025")
    assert not any("Subject: held@" in p.read_text() for p in server.maildir_files("alice"))


def test_check_command_explains_a_decision(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(
        "myhostname = mx.example.test\nmydestination = $myhostname\n"
        "smtpd_client_restrictions = check_client_access inline:{{192.0.2=REJECT listed}}\n"
        f"mailgate_home = {tmp_path / 'data'}\nresolver_servers = {DNS_SERVER[0]}\n")
    out = subprocess.run([sys.executable, "-m", "mailgate.cli", "check", "-c", str(etc),
                          "--client-address", "192.0.2.7", "--client-name", "mail.example.net",
                          "--helo", "mail.example.net", "--sender", "bob@example.net",
                          "--recipient", "postmaster@mx.example.test"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 1, out.stderr
    assert "RCPT: 554 5.7.1 <mail.example.net[192.0.2.7]>: Client host rejected: listed" \
        in out.stdout
    assert "192.0.2 -> REJECT listed" in out.stdout
    assert "log: NOQUEUE: reject: RCPT from mail.example.net[192.0.2.7]" in out.stdout
    ok = subprocess.run([sys.executable, "-m", "mailgate.cli", "check", "-c", str(etc),
                         "--client-address", "198.51.100.1", "--sender", "",
                         "--recipient", "postmaster@mx.example.test"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "RCPT: 250 2.1.5 Ok" in ok.stdout, ok.stdout + ok.stderr
