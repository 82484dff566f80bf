"""Bad input gets the right answer and loses nothing: vanishing clients, kill -9, bad config."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Server, wait_until


def _queue_files(server: Server) -> list[Path]:
    queue = server.root / "data" / "queue"
    return [p for d in ("incoming", "active", "deferred") if (queue / d).exists()
            for p in (queue / d).iterdir() if not p.name.endswith(".tmp")]


def test_client_vanishing_mid_data_queues_nothing(connect, server: Server) -> None:  # type: ignore[no-untyped-def]
    client = connect()
    client.cmd("EHLO x")
    client.cmd("MAIL FROM:<a@remote.example>")
    assert client.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Ok"
    assert client.cmd("DATA").startswith("354 ")
    client.send(b"Subject: half\r\n\r\npartial body")
    client.close()
    server.wait_log("disconnect from")
    assert "lost connection after DATA (29 bytes) from localhost[127.0.0.1]" in server.smtpd_log()
    assert any("data=0/1" in line for line in server.smtpd_log())
    assert _queue_files(server) == []
    assert server.maildir_files("alice") == []


def test_lost_connection_is_logged_with_the_last_command(connect, server: Server) -> None:  # type: ignore[no-untyped-def]
    client = connect()
    client.cmd("EHLO x")
    client.cmd("MAIL FROM:<a@remote.example>")
    client.close()
    server.wait_log("disconnect from")
    log = server.smtpd_log()
    assert log[-2:] == ["lost connection after MAIL from localhost[127.0.0.1]",
                        "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 commands=2"]


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\r\n"])
def test_smuggled_end_of_data_stays_in_the_message(connect, server: Server, smuggle: bytes) -> None:  # type: ignore[no-untyped-def]
    client = connect()
    client.cmd("EHLO x")
    client.cmd("MAIL FROM:<a@remote.example>")
    client.cmd("RCPT TO:<alice@example.test>")
    client.cmd("DATA")
    client.send(b"Subject: s\r\n\r\nbefore" + smuggle +
                b"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                b"after\r\n.\r\n")
    reply = client.reply()
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    assert client.cmd("QUIT") == "221 2.0.0 Bye"
    server.wait_log("removed")
    (path,) = server.maildir_files("alice")
    assert "MAIL FROM:<evil@remote.example>" in path.read_bytes().decode()
    assert server.maildir_files("bob") == []


def test_kill9_right_after_250_delivers_after_restart_exactly_once(server_factory) -> None:  # type: ignore[no-untyped-def]
    # First life: the virtual transport is deferred, so the message sits in the queue
    # (in active/, or already in deferred/ with a retry one second later).
    server = server_factory(defer_transports="virtual", minimal_backoff_time="1s",
                            queue_run_delay="1s").start()
    with smtplib.SMTP("127.0.0.1", server.port) as smtp:
        smtp.sendmail("a@remote.example", ["alice@example.test"], b"Subject: durable\r\n\r\nx\r\n")
    server.kill9()
    assert server.maildir_files("alice") == []
    assert len(_queue_files(server)) == 1
    # Second life: recovered from the queue and delivered once.
    server.extra.pop("defer_transports")
    server.start()
    server.wait_log(r"qmgr: [0-9A-F]+: removed")
    (path,) = server.maildir_files("alice")
    assert "Subject: durable" in path.read_text()
    assert _queue_files(server) == []


def test_kill9_at_any_moment_loses_no_acknowledged_message(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory().start()
    for i in range(5):  # every sendmail() returned: each message was acknowledged with 250
        with smtplib.SMTP("127.0.0.1", server.port) as smtp:
            smtp.sendmail("a@remote.example", ["bob@example.test"],
                          f"Subject: n{i}\r\n\r\nx\r\n".encode())
        if i == 2:
            server.kill9()  # possibly in the middle of a delivery
            server.start()
    server.stop()
    server.start()  # one more recovery pass; nothing may be delivered twice
    wait_until(lambda: len(server.maildir_files("bob")) >= 5 and not _queue_files(server))
    subjects = sorted(p.read_text().split("Subject: ")[1].split("\n")[0]
                      for p in server.maildir_files("bob"))
    assert subjects == [f"n{i}" for i in range(5)]


def test_config_error_stops_startup_with_file_line_and_problem(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text("myhostname = mx.example\n\nsmtpd_hard_error_limit = lots\n")
    result = subprocess.run([sys.executable, "-m", "mailgate.cli", "serve", "-c", str(etc)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"mailgate: fatal: {etc / 'main.cf'}, line 3: bad numerical "
                                     "configuration: smtpd_hard_error_limit = lots")


def test_worker_settings_are_checked_before_readiness(tmp_path: Path) -> None:
    """What the workers build (the resolver here) is checked by the master: an error stops
    start-up once, with file:line, instead of workers dying in a loop."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"mailgate_home = {tmp_path / 'data'}\n"
                                 "smtpd_listen = 127.0.0.1:0\n"
                                 "resolver_servers = 127.0.0.1:notaport\n")
    result = subprocess.run([sys.executable, "-m", "mailgate.cli", "serve", "-c", str(etc)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "listening" not in result.stdout
    assert result.stderr.strip() == (f"mailgate: fatal: {etc / 'main.cf'}, line 3: bad DNS "
                                     "server address: '127.0.0.1:notaport' (use host, "
                                     "host:port or [ipv6]:port)")


def test_open_relay_configuration_refuses_to_start(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text("smtpd_relay_restrictions =\n"
                                 "smtpd_recipient_restrictions = permit_mynetworks\n")
    result = subprocess.run([sys.executable, "-m", "mailgate.cli", "serve", "-c", str(etc)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "specify at least one working instance of: reject_unauth_destination" in result.stderr


def test_missing_config_dir_is_reported(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "mailgate.cli", "serve", "-c",
                             str(tmp_path / "nope")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "main.cf: No such file or directory" in result.stderr


def test_timeout_says_421_and_logs(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_timeout="1s").start()
    from conftest import Client

    client = Client(server.port)
    client.reply()
    client.cmd("EHLO x")
    assert client.reply() == "421 4.4.2 mx.example.test Error: timeout exceeded"
    assert client.closed()
    client.close()
    server.wait_log("disconnect from")
    assert "timeout after EHLO from localhost[127.0.0.1]" in server.smtpd_log()


def test_client_connection_rate_limit(server_factory) -> None:  # type: ignore[no-untyped-def]
    """anvil's rate: the third connection in the window gets the 421 instead of the greeting
    (the early greeting only peeks at the rate; each connection is counted once)."""
    server = server_factory(smtpd_client_connection_rate_limit="2",
                            anvil_rate_time_unit="3600s", mynetworks="10.0.0.0/8").start()
    from conftest import Client

    for _ in range(2):
        client = Client(server.port)
        assert client.reply().startswith("220 ")
        assert client.cmd("QUIT").startswith("221 ")
        client.close()
    third = Client(server.port)
    assert third.reply() == "421 4.7.0 mx.example.test Error: too many connections from 127.0.0.1"
    assert third.closed()
    third.close()
    server.wait_log(r"warning: Connection rate limit exceeded: 3 from localhost\[127\.0\.0\.1\] "
                    r"for service ")


def test_client_connection_count_limit(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_client_connection_count_limit="2",
                            mynetworks="10.0.0.0/8").start()
    from conftest import Client

    first, second = Client(server.port), Client(server.port)
    assert first.reply().startswith("220") and second.reply().startswith("220")
    third = Client(server.port)
    assert third.reply() == "421 4.7.0 mx.example.test Error: too many connections from 127.0.0.1"
    assert third.closed()
    server.wait_log("Connection concurrency limit exceeded")
    for c in (first, second, third):
        c.close()


def test_hard_error_limit_disconnects_with_log_line(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_hard_error_limit="2", smtpd_soft_error_limit="10").start()
    from conftest import Client

    client = Client(server.port)
    client.reply()
    assert client.cmd("FOO").startswith("500")
    assert client.cmd("BAR") == "500 5.5.2 Error: command not recognized"
    assert client.reply() == "421 4.7.0 mx.example.test Error: too many errors"
    assert client.closed()
    client.close()
    server.wait_log("disconnect from")
    assert server.smtpd_log()[-2:] == [
        "too many errors after UNKNOWN from localhost[127.0.0.1]",
        "disconnect from localhost[127.0.0.1] unknown=0/2 commands=0/2"]


def test_pipelining_violation_is_logged_once(connect, server: Server) -> None:  # type: ignore[no-untyped-def]
    client = connect()
    client.send(b"HELO h.example\r\nMAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\n")
    assert client.reply() == "250 mx.example.test"
    assert client.reply() == "250 2.1.0 Ok"
    assert client.reply() == "250 2.1.5 Ok"
    client.cmd("QUIT")
    server.wait_log("disconnect from")
    assert ("improper command pipelining after HELO from localhost[127.0.0.1]: "
            "MAIL FROM:<s@remote.example>\\r\\nRCPT TO:<alice@example.test>\\r\\n"
            ) in server.smtpd_log()


def test_greeting_when_environment_has_home(tmp_path: Path) -> None:
    env = dict(os.environ, MAILGATE_HOME=str(tmp_path / "home"))
    result = subprocess.run([sys.executable, "-m", "mailgate.cli", "postconf", "queue_directory"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.stdout.strip() == "queue_directory = $mailgate_home/queue"
    result = subprocess.run([sys.executable, "-m", "mailgate.cli", "postconf", "mailgate_home"],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.stdout.strip() == f"mailgate_home = {tmp_path / 'home'}"


def test_forbid_bare_newline_reject_rejects_and_disconnects(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_forbid_bare_newline="reject", mynetworks="10.0.0.0/8").start()
    from conftest import Client

    client = Client(server.port)
    client.reply()
    assert client.cmd("EHLO x").startswith("250")
    assert client.cmd(b"NOOP\n") == "550 5.5.2 mx.example.test Error: bare <LF> received"
    assert client.closed()
    client.close()


def test_input_before_greeting_is_logged_as_connect_pipelining(server: Server) -> None:
    import socket

    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"EHLO early.example\r\n")  # before reading the greeting
    data = b""
    while data.count(b"\r\n") < 2 or b"250 " not in data:
        data += sock.recv(4096)
    sock.sendall(b"QUIT\r\n")
    sock.recv(4096)
    sock.close()
    server.wait_log("disconnect from")
    log = server.smtpd_log()
    if not any("improper command pipelining after CONNECT" in line for line in log):
        # the greeting raced ahead of the client's bytes: then nothing may be flagged
        assert not any("improper command pipelining" in line for line in log)
    else:
        assert ("improper command pipelining after CONNECT from localhost[127.0.0.1]: "
                "EHLO early.example\\r\\n") in log


def test_global_connection_cap(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_max_connections="2").start()
    from conftest import Client

    first, second = Client(server.port), Client(server.port)
    assert first.reply().startswith("220") and second.reply().startswith("220")
    third = Client(server.port)
    assert third.reply() == "421 4.7.0 mx.example.test Error: too many connections"
    assert third.closed()
    first.close()
    server.wait_log("disconnect from localhost", count=2)
    fourth = Client(server.port)  # a slot is free again
    assert fourth.reply().startswith("220 ")
    for c in (second, third, fourth):
        c.close()


def test_postconf_command_line(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text("myhostname = mx.example\nmydestination = $myhostname,\n"
                                 "  localhost\n")
    def postconf(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "mailgate.cli", "postconf", "-c", str(etc),
                               *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout
    assert postconf("-n") == "mydestination = $myhostname, localhost\nmyhostname = mx.example\n"
    assert postconf("-d", "smtpd_hard_error_limit") == ("smtpd_hard_error_limit = "
                                                        "${stress?{1}:{20}}\n")
    assert postconf("-o", "myhostname=other.example", "-n", "myhostname") == (
        "myhostname = other.example\n")
    assert "smtpd_banner = $myhostname ESMTP $mail_name\n" in postconf()


def test_forbid_bare_newline_spares_the_exclusions(server_factory) -> None:  # type: ignore[no-untyped-def]
    # smtpd_forbid_bare_newline_exclusions defaults to $mynetworks (127.0.0.0/8 here)
    server = server_factory(smtpd_forbid_bare_newline="reject").start()
    from conftest import Client

    client = Client(server.port)
    client.reply()
    assert client.cmd(b"NOOP\n") == "250 2.0.0 Ok"
    assert client.cmd("QUIT") == "221 2.0.0 Bye"
    client.close()


def test_unavailable_table_defers_instead_of_accepting(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(virtual_mailbox_maps=f"texthash:{tmp_path / 'missing'}").start()
    from conftest import Client

    client = Client(server.port)
    client.reply()
    client.cmd("EHLO x")
    client.cmd("MAIL FROM:<s@remote.example>")
    reply = client.cmd("RCPT TO:<alice@example.test>")
    assert reply.startswith("451 4.3.")  # never accepted, never a 5xx, never a crash
    assert client.cmd("QUIT") == "221 2.0.0 Bye"
    client.close()


def test_timeout_inside_data_counts_bytes(server_factory) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(smtpd_timeout="1s", smtpd_peername_lookup="no").start()
    from conftest import Client

    client = Client(server.port)
    client.reply()
    client.cmd("EHLO x")
    client.cmd("MAIL FROM:<s@remote.example>")
    client.cmd("RCPT TO:<alice@example.test>")
    assert client.cmd("DATA").startswith("354")
    client.send(b"Subject: slow\r\n")
    assert client.reply() == "421 4.4.2 mx.example.test Error: timeout exceeded"
    client.close()
    server.wait_log("disconnect from")
    log = server.smtpd_log()
    assert "timeout after DATA (15 bytes) from unknown[127.0.0.1]" in log
    assert any(line.startswith("disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=0/1")
               for line in log)
