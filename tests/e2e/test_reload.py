"""Reload (SIGHUP) and stop (SIGTERM) of `mailgate serve`, with the systemd notifications:
new sessions get the new configuration while sessions in progress keep theirs; a
configuration that does not load is refused and the running one kept; reloading under load
refuses no connection and fails no transaction; a stop lets a session in DATA finish and
loses no message that got `250` under load."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import Client, Server, require


def rcpt(client: Client) -> str:
    client.send("MAIL FROM:<a@client.example>")
    client.reply()
    client.send("RCPT TO:<alice@example.test>")
    return client.reply()


def session(port: int) -> Client:
    client = Client(port)
    assert client.reply().startswith("220 ")
    client.send("HELO client.example")
    client.reply()
    return client


def reload(server: Server, count: int) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    server.wait_log(r"master: (reload -- |error: reload: )", count=count)


def test_new_sessions_get_the_new_configuration_old_ones_keep_theirs(server: Server) -> None:
    before = session(server.port)
    main_cf = server.root / "etc" / "main.cf"
    main_cf.write_text(main_cf.read_text() + "smtpd_client_restrictions = reject\n")
    reload(server, 1)
    after = session(server.port)
    assert rcpt(after).startswith("554 5.7.1 ")  # the new list
    assert rcpt(before).startswith("250 ")  # the configuration it started with
    for client in (before, after):
        client.send("QUIT")
        client.reply()
        client.close()
    main_cf.write_text(main_cf.read_text() + "smtpd_hard_error_limit = many\n")
    reload(server, 2)
    assert any("error: reload: " in x and "smtpd_hard_error_limit" in x for x in server.log())
    still = session(server.port)  # the running configuration is kept
    assert rcpt(still).startswith("554 5.7.1 ")
    still.close()


def test_reloading_under_load_refuses_nothing(server: Server) -> None:
    source = require("smtp-source")
    assert server.proc is not None
    done: list[subprocess.CompletedProcess[str]] = []
    load = threading.Thread(target=lambda: done.append(subprocess.run(
        [source, "-s", "5", "-m", "300", "-l", "512", "-f", "load@remote.example",
         "-t", "bob@example.test", f"127.0.0.1:{server.port}"],
        capture_output=True, text=True, timeout=300)))
    load.start()
    for n in range(1, 21):
        reload(server, n)
    load.join(300)
    assert done and done[0].returncode == 0, done
    assert done[0].stderr == "", done[0].stderr  # no refused connection, no failed reply
    server.wait_log("removed", count=300, timeout=120)
    assert len(server.maildir_files("bob")) == 300


def test_systemd_notifications_arrive_in_order(server_factory, tmp_path: Path,  # type: ignore[no-untyped-def]
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(20)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    server = server_factory().start()
    got = [listener.recv(4096).decode()]
    server.proc.send_signal(signal.SIGHUP)
    got += [listener.recv(4096).decode(), listener.recv(4096).decode()]
    server.proc.send_signal(signal.SIGTERM)
    got.append(listener.recv(4096).decode())
    listener.close()
    states = [x.split("\n")[0] for x in got]
    assert states == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], got
    assert got[1].split("\n")[1].startswith("MONOTONIC_USEC=")
    assert all("STATUS=" in x for x in got)


def test_a_stop_lets_a_session_in_data_finish(server: Server) -> None:
    client = session(server.port)
    client.send("MAIL FROM:<a@client.example>")
    client.reply()
    client.send("RCPT TO:<alice@example.test>")
    client.reply()
    client.send("DATA")
    assert client.reply().startswith("354 ")
    client.send("Subject: in flight\r\n\r\nstarted before the stop")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    client.send(".")
    assert client.reply().startswith("250 ")  # accepted after the stop began
    client.send("QUIT")
    client.reply()
    client.close()
    assert server.proc.wait(30) == 0
    queued = [p for p in (server.root / "data").rglob("*") if p.is_file()
              and p.parent.name in ("active", "deferred", "incoming", "hold")]
    assert len(server.maildir_files("alice")) + len(queued) == 1


def test_a_stop_under_load_loses_no_acknowledged_message(server_factory) -> None:  # type: ignore[no-untyped-def]
    """Four clients send until the server cuts them (`421` after smtpd_shutdown_timeout);
    every message that got `250` is in a Maildir or in the queue afterwards."""
    server: Server = server_factory(smtpd_shutdown_timeout="2s").start()
    acknowledged: list[str] = []
    started = threading.Barrier(5)

    def client() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
                started.wait(10)
                for n in range(2000):
                    smtp.mail("load@remote.example")
                    smtp.rcpt("bob@example.test")
                    code, text = smtp.data(f"Subject: load {n}\r\n\r\nbody\r\n".encode())
                    if code != 250:
                        return
                    acknowledged.append(text.decode().rsplit(" ", 1)[1])
        except (smtplib.SMTPException, OSError):
            return  # the server went away: what it acknowledged is checked below

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.wait(10)
    server.wait_log(r"status=sent", count=50)  # under way
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    for thread in threads:
        thread.join(60)
    delivered = {p.name.split(".")[1][1:].split("R")[0] for p in server.maildir_files("bob")}
    queued = {p.name for p in (server.root / "data" / "queue").rglob("*")
              if p.is_file() and p.parent.name in ("active", "deferred", "incoming", "hold")}
    assert len(acknowledged) >= 50
    assert set(acknowledged) <= delivered | queued


def test_a_service_removed_from_master_cf_stops_listening(server_factory) -> None:  # type: ignore[no-untyped-def]
    from conftest import free_port, port_accepts

    first, second = free_port(), free_port()
    server: Server = server_factory()
    etc = server.root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "master.cf").write_text(f"127.0.0.1:{first} inet n - n - - smtpd\n"
                                   f"127.0.0.1:{second} inet n - n - - smtpd\n")
    server.start()
    assert port_accepts(second)
    (etc / "master.cf").write_text(f"127.0.0.1:{first} inet n - n - - smtpd\n")
    reload(server, 1)
    assert not port_accepts(second)
    client = session(first)  # the remaining service still greets
    client.close()
