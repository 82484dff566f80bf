"""Started as root, mailgate serves clients as mail_owner and writes Maildirs as their owners."""

from __future__ import annotations

import os
import pwd
import smtplib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DOMAIN, Server, base_main_cf, wait_until
from support.policy import Policyd

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it creates users and "
                                "checks that root is given up")

USERS = ("mgtest-owner", "mgtest-box", "mgtest-local")


@pytest.fixture(scope="module")
def users() -> Iterator[dict[str, pwd.struct_passwd]]:
    """Three unprivileged users made for the test (removed after): mail_owner, the owner of
    virtual mailboxes, and a local user."""
    for name in USERS:
        subprocess.run(["userdel", name], capture_output=True, check=False)
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield {name: pwd.getpwnam(name) for name in USERS}
    finally:
        for name in USERS:
            subprocess.run(["userdel", name], capture_output=True, check=False)


def status(pid: int, task: int | None = None) -> dict[str, str]:
    path = f"/proc/{pid}/task/{task}/status" if task else f"/proc/{pid}/status"
    return dict(line.split(":\t", 1) for line in Path(path).read_text().splitlines()
                if ":\t" in line)


def children(pid: int) -> list[int]:
    return [int(c) for task in os.listdir(f"/proc/{pid}/task")
            for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]


def listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on `port` (from /proc/net/tcp, state 0A)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
            out.add(fields[9])
    return out


def sockets_held(pid: int) -> set[str]:
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            held.add(target[8:-1])
    return held


def send(port: int, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.sendmail("sender@remote.example", rcpts,
                      b"Subject: privileges\r\n\r\nWho wrote this file?\r\n")


def test_client_facing_processes_run_as_mail_owner(server_factory, users) -> None:  # type: ignore[no-untyped-def]
    owner, box, local = (users[n] for n in USERS)
    server: Server = server_factory(
        mail_owner=owner.pw_name, metrics_listen="127.0.0.1:0",
        virtual_uid_maps=f"static:{box.pw_uid}", virtual_gid_maps=f"static:{box.pw_gid}",
        local_recipient_maps="").start()
    assert server.proc is not None
    send(server.port, [f"alice@{DOMAIN}", f"{local.pw_name}@localhost",
                       "someone@elsewhere.example"])
    server.wait_log(r"status=sent", count=2)
    server.wait_log(r"status=deferred")

    master = server.proc.pid
    assert status(master)["Uid"].split()[0] == "0"  # the master keeps root to bind and reload
    processes = children(master)  # the workers, the accept process, the metrics process
    assert len(processes) == 4
    wait_until(lambda: all(status(pid)["Uid"].split()[0] != "0" for pid in processes))
    for pid in processes:  # every thread of every process that reads client input
        for task in os.listdir(f"/proc/{pid}/task"):
            st = status(pid, int(task))
            assert st["Uid"].split() == [str(owner.pw_uid)] * 4, (pid, task, st["Uid"])
            assert st["Gid"].split() == [str(owner.pw_gid)] * 4, (pid, task, st["Gid"])
            assert st["Groups"].strip() == "", (pid, st["Groups"])
    listening = listening_inodes(server.port)
    helpers = [h for pid in processes for h in children(pid)]
    assert len(helpers) == 2  # one root delivery helper per smtpd worker
    for pid in helpers:
        assert status(pid)["Uid"].split()[0] == "0"
        assert status(pid)["Groups"].strip() == ""  # root's groups are given up too
        assert not sockets_held(pid) & listening  # it never holds a client-facing socket

    virtual = server.maildir_files("alice")
    assert len(virtual) == 1
    st = virtual[0].stat()
    assert (st.st_uid, st.st_gid) == (box.pw_uid, box.pw_gid)
    assert oct(st.st_mode & 0o777) == "0o600"
    (mine,) = (server.mail / local.pw_name / "Maildir" / "new").iterdir()
    assert (mine.stat().st_uid, mine.stat().st_gid) == (local.pw_uid, local.pw_gid)
    assert mine.parent.stat().st_uid == local.pw_uid  # the Maildir made for the user is theirs

    queue = server.root / "data" / "queue"
    # the status=deferred line is logged before the file moves from active/ to deferred/
    wait_until(lambda: any((queue / "deferred").iterdir()))
    (deferred,) = (queue / "deferred").iterdir()
    assert deferred.stat().st_uid == owner.pw_uid
    for name in ("incoming", "active", "deferred", "hold"):
        assert (queue / name).stat().st_uid == owner.pw_uid
    assert server.log_path.stat().st_uid == owner.pw_uid  # it reopens the file on rotation


def test_uid_below_virtual_minimum_uid_is_deferred(server_factory, users) -> None:  # type: ignore[no-untyped-def]
    owner = users[USERS[0]]
    server: Server = server_factory(mail_owner=owner.pw_name, virtual_uid_maps="static:5",
                                    virtual_gid_maps="static:5").start()
    send(server.port, [f"bob@{DOMAIN}"])
    (line,) = server.wait_log(r"status=deferred")
    assert "dsn=4.3.5" in line and "(mail system configuration error: bad virtual_uid_maps " \
        f"result for recipient bob@{DOMAIN}: uid 5 < virtual_minimum_uid 100)" in line
    assert server.maildir_files("bob") == []


@pytest.mark.parametrize(("value", "error"), [
    ("nosuchuser-mgtest", "parameter mail_owner: unknown user name value: nosuchuser-mgtest"),
    ("root", "parameter mail_owner: user root has privileged user ID"),
])
def test_a_bad_mail_owner_stops_start_up(server_factory, value: str, error: str) -> None:  # type: ignore[no-untyped-def]
    server: Server = server_factory(mail_owner=value)
    server.write_config()
    done = subprocess.run([sys.executable, "-m", "mailgate.cli", "serve", "-c",
                           str(server.root / "etc")], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1
    assert f"mailgate: fatal: {server.root / 'etc' / 'main.cf'}, line " in done.stderr
    assert error in done.stderr


def test_policyd_reads_requests_as_mail_owner(tmp_path: Path, users) -> None:  # type: ignore[no-untyped-def]
    owner = users[USERS[0]]
    daemon = Policyd(tmp_path, base_main_cf(tmp_path) + (
        f"mail_owner = {owner.pw_name}\npolicyd_listen = 127.0.0.1:0\npolicyd_processes = 2\n"
        "policyd_restrictions = check_client_access inline:{192.0.2.66=REJECT}\n")).start()
    try:
        assert daemon.proc is not None
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
            sock.sendall(b"request=smtpd_access_policy\nprotocol_state=RCPT\n"
                         b"client_address=192.0.2.66\nrecipient=alice@example.test\n\n")
            assert sock.recv(4096) == b"action=554 5.7.1 Access denied\n\n"
        assert status(daemon.proc.pid)["Uid"].split()[0] == "0"
        workers = children(daemon.proc.pid)
        assert len(workers) == 2
        # a worker answers once it has loaded its tables and given root up; the other
        # may still be loading: wait for it to leave root
        wait_until(lambda: all(status(pid)["Uid"].split()[0] != "0" for pid in workers))
        for pid in workers:
            assert status(pid)["Uid"].split() == [str(owner.pw_uid)] * 4
            assert status(pid)["Groups"].strip() == ""
    finally:
        daemon.stop()


def test_a_link_planted_in_a_maildir_gains_its_owner_nothing(server_factory, users, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The mailbox owner points new/ at a directory only root may write: the helper writes
    with the owner's rights, so the delivery is deferred and nothing lands there."""
    owner, box = users[USERS[0]], users[USERS[1]]
    server: Server = server_factory(
        mail_owner=owner.pw_name, virtual_uid_maps=f"static:{box.pw_uid}",
        virtual_gid_maps=f"static:{box.pw_gid}")
    maildir = server.mail / DOMAIN / "alice"
    for sub in ("tmp", "cur"):
        (maildir / sub).mkdir(parents=True)
    protected = tmp_path / "root-only"
    protected.mkdir(mode=0o755)
    (maildir / "new").symlink_to(protected)
    for path in (maildir.parent, maildir, maildir / "tmp", maildir / "cur"):
        os.chown(path, box.pw_uid, box.pw_gid)
    os.lchown(maildir / "new", box.pw_uid, box.pw_gid)
    server.start()
    send(server.port, [f"alice@{DOMAIN}"])
    (line,) = server.wait_log(r"status=deferred")
    assert "Permission denied" in line
    assert list(protected.iterdir()) == []
    assert list((maildir / "tmp").iterdir()) == []  # the partial copy went too
