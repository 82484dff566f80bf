"""Floods in small: slow clients cut by smtpd_timeout and the session deadline, a line far
over line_length_limit, too many recipients, a message over message_size_limit, and 1000
idle connections. (bench/floods runs the full-size scenarios and measures memory.)"""

from __future__ import annotations

import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from conftest import Client, Server

HOST = "mx.example.test"
TIMEOUT_421 = f"421 4.4.2 {HOST} Error: timeout exceeded"


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """smtpd_timeout as a 2 s deadline per request, a 3 s session deadline."""
    server = Server(tmp_path_factory.mktemp("slow"), extra={
        "smtpd_timeout": "2s", "smtpd_per_request_deadline": "yes",
        "smtpd_min_data_rate": "500", "smtpd_session_deadline": "3s"})
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def limits_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("limits"), extra={
        "smtpd_recipient_limit": "5", "smtpd_recipient_overshoot_limit": "3",
        "smtpd_error_sleep_time": "0", "message_size_limit": "10000",
        "smtpd_client_connection_count_limit": "0"})
    yield server.start()
    server.stop()


def _trickle(sock: socket.socket, data: bytes, pace: float, stop: threading.Event) -> None:
    """Send `data` one byte every `pace` seconds until told to stop or the server closes."""
    for byte in data:
        if stop.wait(pace):
            return
        try:
            sock.send(bytes([byte]))
        except OSError:
            return


def _log_after(server: Server, text: str) -> list[str]:
    server.wait_log(text)
    return server.smtpd_log()


def test_trickled_command_is_cut_by_the_request_deadline(slow_server: Server) -> None:
    client = Client(slow_server.port)
    assert client.reply().startswith("220 ")
    stop = threading.Event()
    sender = threading.Thread(target=_trickle, args=(
        client.sock, b"EHLO " + b"a" * 200 + b"\r\n", 0.25, stop))
    sender.start()
    try:
        assert client.reply() == TIMEOUT_421  # each read came well within 2 s
        assert client.closed()
    finally:
        stop.set()
        sender.join()
        client.close()
    log = _log_after(slow_server, r"timeout after CONNECT from localhost\[127\.0\.0\.1\]")
    assert "disconnect from localhost[127.0.0.1] commands=0/0" in log


def test_complete_commands_are_cut_by_the_session_deadline(slow_server: Server) -> None:
    client = Client(slow_server.port)
    assert client.reply().startswith("220 ")
    answered = 0
    try:
        while True:
            time.sleep(0.5)  # the client's pace, well inside the 2 s request deadline
            reply = client.cmd("NOOP")
            if reply != "250 2.0.0 Ok":
                break
            answered += 1
        assert reply == TIMEOUT_421
        assert answered >= 4  # past 2 s: the request deadline was recharged per command
        assert client.closed()
    finally:
        client.close()
    _log_after(slow_server, r"timeout after NOOP from localhost\[127\.0\.0\.1\]")


def test_content_at_the_minimum_data_rate_outlives_the_request_deadline(
        slow_server: Server) -> None:
    client = Client(slow_server.port)
    try:
        assert client.reply().startswith("220 ")
        client.cmd("EHLO x")
        client.cmd("MAIL FROM:<s@remote.example>")
        assert client.cmd("RCPT TO:<alice@example.test>") == "250 2.1.5 Ok"
        assert client.cmd("DATA").startswith("354 ")
        client.send(b"Subject: slow but steady\r\n\r\n")
        started = time.monotonic()
        while time.monotonic() - started < 2.6:  # 8 KB every 0.2 s: far above 500 B/s
            client.send(b"x" * 8190 + b"\r\n")
            time.sleep(0.2)
        assert client.cmd(".").startswith("250 2.0.0 Ok: queued as ")
    finally:
        client.close()


def test_ten_megabyte_line_is_cut_and_the_session_goes_on(limits_server: Server) -> None:
    client = Client(limits_server.port)
    try:
        assert client.reply().startswith("220 ")
        client.send(b"X" * (10 * 1024 * 1024) + b"\r\n")
        assert client.reply() == "500 5.5.2 Error: command not recognized"
        assert client.cmd("NOOP") == "250 2.0.0 Ok"
        assert client.cmd("QUIT") == "221 2.0.0 Bye"
    finally:
        client.close()
    log = _log_after(limits_server, "request longer than 2048")
    assert f"warning: localhost[127.0.0.1]: request longer than 2048: {'X' * 30}..." in log


def test_too_many_recipients_then_too_many_errors(limits_server: Server) -> None:
    """As Postfix 3.7.11: 452 past smtpd_recipient_limit; past the overshoot limit each 452
    is an error, and the hard error limit (20) ends the session."""
    client = Client(limits_server.port)
    try:
        assert client.reply().startswith("220 ")
        client.cmd("EHLO x")
        client.cmd("MAIL FROM:<s@remote.example>")
        replies = [client.cmd("RCPT TO:<alice@example.test>") for _ in range(29)]
    finally:
        client.close()
    assert replies == ["250 2.1.5 Ok"] * 5 + ["452 4.5.3 Error: too many recipients"] * 23 + \
        [f"421 4.7.0 {HOST} Error: too many errors"]
    log = _log_after(limits_server, "too many errors after RCPT")
    assert "too many errors after RCPT from localhost[127.0.0.1]" in log
    assert "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=8/28 commands=10/30" in log


def test_message_over_the_size_limit_is_refused_at_the_end(limits_server: Server) -> None:
    client = Client(limits_server.port)
    try:
        assert client.reply().startswith("220 ")
        client.cmd("EHLO x")
        client.cmd("MAIL FROM:<s@remote.example>")
        client.cmd("RCPT TO:<alice@example.test>")
        assert client.cmd("DATA").startswith("354 ")
        client.send(b"Subject: big\r\n\r\n" + (b"y" * 98 + b"\r\n") * 200)
        assert client.cmd(".") == "552 5.3.4 Error: message file too big"
        assert client.cmd("RSET") == "250 2.0.0 Ok"
        assert client.cmd("QUIT") == "221 2.0.0 Bye"
    finally:
        client.close()
    log = _log_after(limits_server, "queue file size limit exceeded")
    assert any(line.endswith(": queue file size limit exceeded") and line.startswith("warning: ")
               for line in log)
    assert limits_server.maildir_files("alice") == []


def test_thousand_idle_connections_are_all_answered(limits_server: Server) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    before = sum("disconnect from" in line for line in limits_server.smtpd_log())
    socks: list[socket.socket] = []
    try:
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", limits_server.port), timeout=10))
        greetings = _read_all(socks)  # every one greeted while the others idle
        assert sum(g.startswith(b"220 ") for g in greetings) == 1000
        for sock in socks:
            sock.sendall(b"QUIT\r\n")
        assert _read_all(socks, until_eof=True) == [b"221 2.0.0 Bye\r\n"] * 1000
    finally:
        for sock in socks:
            sock.close()
    limits_server.wait_log("disconnect from", count=before + 1000, timeout=30)


def _read_all(socks: list[socket.socket], until_eof: bool = False) -> list[bytes]:
    """What each socket says: one line, or everything until the server closes it."""
    got = {sock.fileno(): bytearray() for sock in socks}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(4096)
                got[sock.fileno()] += data
                if (not data) if until_eof else got[sock.fileno()].endswith(b"\n"):
                    sel.unregister(sock)
    return [bytes(got[sock.fileno()]) for sock in socks]
