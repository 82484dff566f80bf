"""Delivered Maildirs are readable by a real IMAP server (Dovecot from Debian) over loopback."""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import smtplib
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DOMAIN, free_port, require
from support.loopback import wait_listening


@pytest.fixture
def dovecot() -> Iterator[tuple[int, Path, int]]:
    binary = require("dovecot")
    nobody = pwd.getpwnam("nobody")
    # The IMAP processes run as nobody: they need a path they may traverse (tmp_path is 0700).
    top = Path(tempfile.mkdtemp(prefix="mailgate-imap-"))
    top.chmod(0o755)
    base = top / "mail"
    base.mkdir(mode=0o755)
    root = top / "dovecot"
    root.mkdir()
    port = free_port()
    conf = root / "dovecot.conf"
    conf.write_text(f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{base}/%d/%n
first_valid_uid = {nobody.pw_uid}
passdb {{
  driver = static
  args = password=secret
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
""")
    subprocess.run([binary, "-c", str(conf)], check=True, timeout=30,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port)  # readiness: the IMAP port accepts connections
    yield port, base, nobody.pw_uid
    pid = int((root / "run" / "master.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    shutil.rmtree(top, ignore_errors=True)


def test_delivered_mail_is_read_back_over_imap(server_factory, dovecot) -> None:  # type: ignore[no-untyped-def]
    port, base, uid = dovecot
    gid = pwd.getpwuid(uid).pw_gid
    server = server_factory(virtual_mailbox_base=str(base), virtual_uid_maps=f"static:{uid}",
                            virtual_gid_maps=f"static:{gid}").start()
    with smtplib.SMTP("127.0.0.1", server.port) as smtp:
        smtp.sendmail("sender@remote.example", [f"alice@{DOMAIN}"],
                      b"Subject: over imap\r\nMessage-ID: <imap-1@remote.example>\r\n\r\n"
                      b"Hello from mailgate.\r\n")
    server.wait_log("removed")
    imap = imaplib.IMAP4("127.0.0.1", port)
    try:
        imap.login(f"alice@{DOMAIN}", "secret")
        status, data = imap.select("INBOX")
        assert status == "OK" and data == [b"1"]
        status, found = imap.search(None, "HEADER", "Message-ID", "imap-1@remote.example")
        assert status == "OK" and found[0] == b"1"
        status, fetched = imap.fetch(b"1", "(RFC822)")
        raw = fetched[0][1]
        assert b"Subject: over imap" in raw and b"Hello from mailgate." in raw
        assert raw.startswith(b"Return-Path: <sender@remote.example>")
    finally:
        imap.logout()
